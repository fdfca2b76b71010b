"""Dropout speed on this machine: dropkit vs torch vs torch.compile vs a copy, and the MLP epoch.

Run from the repository root; the results land in benchmarks/results/ and are summarized in
docs/benchmarks.md:

    python benchmarks/bench_dropout.py            # full: sizes 2^16..2^25, float32 and bfloat16
    python benchmarks/bench_dropout.py --quick    # 3 sizes, under a minute
    python benchmarks/bench_dropout.py --small 1  # small-model targets only, on 1 thread
    python benchmarks/bench_dropout.py --small 1 300  # the same with 300 paired MLP epochs

The first two are ``dropkit bench`` with the output path filled in. ``--small THREADS [ROUNDS]``
runs, in one process with ``torch.set_num_threads(THREADS)``: the MLP 64-256-128-10 epoch with
its floors (ROUNDS paired rounds, default 100), the default ``dropkit compare``'s model at
rates 0, 0.2 and 0.5 (ROUNDS / 8 paired rounds, at least 7), each with the median overhead and
its 95% interval, and dropout on 2^24 float32 elements against
``torch.nn.functional.dropout``.
"""

import sys
from pathlib import Path

import torch

from dropkit.cli import app
from dropkit.experiments.bench import bench_compare_rates, bench_kernels, bench_mlp


def small(threads: int, rounds: int) -> None:
    torch.set_num_threads(threads)
    compare_rounds = max(7, rounds // 8)
    print(
        f"torch threads: {torch.get_num_threads()}, paired rounds: {rounds} (MLP), "
        f"{compare_rounds} (compare)"
    )
    for m in bench_mlp(epochs=rounds):
        print(
            f"MLP epoch  {m.variant:42s} {m.epoch_s * 1e3:6.1f} ms  {m.overhead_pct:+6.1f}%  "
            f"95% interval {m.low_pct:+5.1f}% to {m.high_pct:+5.1f}%"
        )
    for rate, t in bench_compare_rates(epochs=compare_rounds).items():
        print(
            f"compare    rate {rate:<4} {t.seconds * 1e3:7.1f} ms per epoch  "
            f"{t.ratio:5.3f}x rate 0  95% interval {t.low:5.3f}x to {t.high:5.3f}x"
        )
    for row in bench_kernels([1 << 24], [torch.float32], rounds=5, compiled=False):
        ours, theirs = row.times_ms["dropkit"], row.times_ms["torch"]
        print(f"2^24 f32   {row.pass_:18s} dropkit {ours:7.1f} ms  torch {theirs:7.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--small":
        small(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 100)
    else:
        output = Path(__file__).parent / "results" / "cpu.json"
        app(["bench", "--output", str(output), *sys.argv[1:]])
