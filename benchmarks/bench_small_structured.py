"""DropPath and DropBlock2d on small inputs: dropkit against torchvision's and timm's layers.

Run from the repository root, in an environment with torchvision and timm:

    PYTHONPATH=$PWD/src python benchmarks/bench_small_structured.py [ROUNDS]

For each input, every library's layer is called in turn, round after round (ROUNDS rounds,
default 15, of a batch of calls each), in training mode, forward only and forward+backward; the
table gives the fastest round's microseconds per call (the least disturbed by other load on
a shared machine) and each peer's time over dropkit's. The layers
compared have the same settings: DropPath(p) (torchvision's ``StochasticDepth(p, "row")``),
DropBlock2d(p, block_size) with dropkit's exact rate and with torchvision's semantics
(``gamma="paper", block_clip="square", rescale="batch"``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from dropkit import nn as dk_nn


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def _row(
    label: str,
    layers: dict[str, torch.nn.Module],
    shape: tuple[int, ...],
    rounds: int,
    backward: bool,
) -> str:
    x = torch.randn(shape, requires_grad=backward)

    def call(layer: torch.nn.Module) -> Callable[[], object]:
        if backward:
            return lambda: layer(x).sum().backward()
        return lambda: layer(x)

    calls = {name: call(layer) for name, layer in layers.items()}
    for fn in calls.values():  # warm-up: kernels compiled, caches filled
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    batch = 20 if backward else 50
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(_per_call_us(fn, batch))
    best = {name: min(t) for name, t in times.items()}
    ours = best["dropkit"]
    cells = [f"{best[name]:7.1f} us ({best[name] / ours:4.2f}x)" for name in calls]
    pass_ = "fwd+bwd" if backward else "forward"
    return f"| {label} | {tuple(shape)} | {pass_} | " + " | ".join(cells) + " |"


def main(rounds: int) -> None:
    import timm.layers
    import torchvision.ops

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {rounds}")
    print("| layer | input | pass | dropkit | torchvision | timm |")
    print("|---|---|---|---|---|---|")
    path = {
        "dropkit": dk_nn.DropPath(0.1),
        "torchvision": torchvision.ops.StochasticDepth(0.1, "row"),
        "timm": timm.layers.DropPath(0.1),
    }
    for shape in [(8, 16), (8, 197, 64), (32, 64, 8, 8)]:
        for backward in (False, True):
            print(_row("DropPath(0.1)", path, shape, rounds, backward))
    block = {
        "dropkit": dk_nn.DropBlock2d(0.1, 3),
        "torchvision": torchvision.ops.DropBlock2d(0.1, 3),
        "timm": timm.layers.DropBlock2d(0.1, 3),
    }
    block_tv = {
        "dropkit": dk_nn.DropBlock2d(0.1, 3, gamma="paper", block_clip="square", rescale="batch"),
        "torchvision": block["torchvision"],
        "timm": block["timm"],
    }
    for shape in [(8, 16, 7, 7), (8, 64, 14, 14)]:
        for backward in (False, True):
            print(_row("DropBlock2d(0.1, 3)", block, shape, rounds, backward))
            label = "DropBlock2d(0.1, 3), torchvision's semantics"
            print(_row(label, block_tv, shape, rounds, backward))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
