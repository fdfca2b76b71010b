"""Dropout speed on this machine: dropkit vs torch vs torch.compile vs a copy, and the MLP epoch.

Run from the repository root; the results land in benchmarks/results/ and are summarized in
docs/benchmarks.md:

    python benchmarks/bench_dropout.py            # full: sizes 2^16..2^25, float32 and bfloat16
    python benchmarks/bench_dropout.py --quick    # 3 sizes, under a minute
    python benchmarks/bench_dropout.py --small 1  # small-model targets only, on 1 thread
    python benchmarks/bench_dropout.py --small 1 300  # the same with 300 paired MLP epochs
    python benchmarks/bench_dropout.py --layouts 15   # memory layouts, 15 interleaved rounds

The first two are ``dropkit bench`` with the output path filled in. ``--small THREADS [ROUNDS]``
runs, in one process with ``torch.set_num_threads(THREADS)``: the MLP 64-256-128-10 epoch with
its floors (ROUNDS paired rounds, default 100), the default ``dropkit compare``'s model at
rates 0, 0.2 and 0.5 (ROUNDS / 8 paired rounds, at least 7), each with the median overhead and
its 95% interval, and dropout on 2^24 float32 elements against
``torch.nn.functional.dropout``.

``--layouts [ROUNDS]`` times dropkit against torch on one (32, 64, 32, 32) float32 input held
contiguous, in ``channels_last`` and transposed (its last two dims swapped), for the ops whose
output keeps the input's layout: the median of ROUNDS interleaved rounds (default 15) and the
output's layout. Each tree (before and after a change) runs it in its own process.
"""

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as torch_F

import dropkit.functional as F
from dropkit.bench import bench_compare_rates, bench_kernels, bench_mlp
from dropkit.cli import app


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


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    if t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strides " + str(t.stride())


def layouts(rounds: int) -> None:
    base = torch.randn(32, 64, 32, 32, generator=torch.Generator().manual_seed(0))
    inputs = {
        "contiguous": base,
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
    }
    ops: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
        "dropout": (F.dropout, torch_F.dropout),
        "dropout2d": (F.dropout2d, torch_F.dropout2d),
        "alpha_dropout": (F.alpha_dropout, lambda x, p: torch_F.alpha_dropout(x, p, True)),
    }
    grad = torch.randn(base.shape)
    print(f"torch threads: {torch.get_num_threads()}, rounds: {rounds}, input {tuple(base.shape)}")
    for layout, x in inputs.items():
        for op, pair in ops.items():
            for backward in (False, True):
                if backward and op != "dropout":
                    continue
                leaf = x.detach().requires_grad_(backward)
                g = grad  # the next op's gradient comes in the output's layout
                if layout == "channels_last":
                    g = grad.to(memory_format=torch.channels_last)
                elif layout == "transposed":
                    g = grad.transpose(2, 3)
                times: dict[str, list[float]] = {"dropkit": [], "torch": []}
                outs: dict[str, torch.Tensor] = {}
                for _ in range(rounds):
                    for name, fn in zip(times, pair, strict=True):
                        start = time.perf_counter()
                        y = fn(leaf, 0.3)
                        if backward:
                            (gx,) = torch.autograd.grad(y, leaf, g)
                        times[name].append(time.perf_counter() - start)
                        outs[name] = gx if backward else y
                ours = statistics.median(times["dropkit"]) * 1e3
                theirs = statistics.median(times["torch"]) * 1e3
                pass_ = "forward+backward" if backward else "forward"
                print(
                    f"{layout:13s} {op:13s} {pass_:16s} dropkit {ours:6.2f} ms  torch "
                    f"{theirs:6.2f} ms  torch/dropkit {theirs / ours:5.2f}x  "
                    f"layout {_layout(outs['dropkit'])} (torch: {_layout(outs['torch'])})"
                )


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--small":
        small(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 100)
    elif len(sys.argv) in (2, 3) and sys.argv[1] == "--layouts":
        layouts(int(sys.argv[2]) if len(sys.argv) == 3 else 15)
    else:
        output = Path(__file__).parent / "results" / "cpu.json"
        app(["bench", "--output", str(output), *sys.argv[1:]])
