"""Dropout speed on this machine: dropkit vs torch vs torch.compile vs a copy, and the MLP epoch.

Run from the repository root; the results land in benchmarks/results/ and are summarized in
docs/benchmarks.md:

    python benchmarks/bench_dropout.py            # full: sizes 2^16..2^25, float32 and bfloat16
    python benchmarks/bench_dropout.py --quick    # 3 sizes, under a minute
    python benchmarks/bench_dropout.py --small 1  # small-model targets only, on 1 thread

The first two are ``dropkit bench`` with the output path filled in. ``--small THREADS`` runs,
in one process with ``torch.set_num_threads(THREADS)``: the MLP 64-256-128-10 epoch with its
two floors, the default ``dropkit compare``'s model at rates 0, 0.2 and 0.5 (epochs
interleaved), and dropout on 2^24 float32 elements against ``torch.nn.functional.dropout``.
"""

import sys
from pathlib import Path

import torch

from dropkit.cli import app
from dropkit.experiments.bench import bench_compare_rates, bench_kernels, bench_mlp


def small(threads: int) -> None:
    torch.set_num_threads(threads)
    print(f"torch threads: {torch.get_num_threads()}")
    for mlp_row in bench_mlp(epochs=15):
        ms, pct = mlp_row.epoch_s * 1e3, mlp_row.overhead_pct
        print(f"MLP epoch  {mlp_row.variant:40s} {ms:7.1f} ms  {pct:+6.1f}%")
    times = bench_compare_rates(epochs=7)
    for rate, seconds in times.items():
        ratio = seconds / times[0.0]
        print(f"compare    rate {rate:<4} {seconds * 1e3:7.1f} ms per epoch  {ratio:5.3f}x rate 0")
    for row in bench_kernels([1 << 24], [torch.float32], rounds=5, compiled=False):
        ours, theirs = row.times_ms["dropkit"], row.times_ms["torch"]
        print(f"2^24 f32   {row.pass_:18s} dropkit {ours:7.1f} ms  torch {theirs:7.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--small":
        small(int(sys.argv[2]))
    else:
        output = Path(__file__).parent / "results" / "cpu.json"
        app(["bench", "--output", str(output), *sys.argv[1:]])
