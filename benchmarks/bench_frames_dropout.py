"""Python functions one dropout call enters, counted with ``sys.setprofile``: dropkit's and all.

Run from the repository root, once per tree (before and after a change):

    PYTHONPATH=$PWD/src python benchmarks/bench_frames_dropout.py

A count is exact and the same on every machine, where a per-call time on a loaded machine is
not: inside a training step each Python frame costs about a microsecond (docs/design.md, "The
small path"), so a change in these counts is a change in speed that timings cannot resolve.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType

import torch

import dropkit.functional as F
from dropkit import nn as dk_nn


def cases() -> dict[str, Callable[[], object]]:
    """The calls counted: the small path (function and layer), eval, seeded, no grad, large."""
    x = torch.randn(64, 256, requires_grad=True)
    large = torch.randn(1 << 17, requires_grad=True)
    plain = torch.randn(64, 256)
    layer, layer_eval = dk_nn.Dropout(0.5), dk_nn.Dropout(0.5).eval()
    return {
        "F.dropout, 64x256, grad": lambda: F.dropout(x, 0.5),
        "nn.Dropout, 64x256, grad": lambda: layer(x),
        "nn.Dropout, eval": lambda: layer_eval(x),
        "F.dropout, training=False": lambda: F.dropout(x, 0.5, training=False),
        "F.dropout, seed=1": lambda: F.dropout(x, 0.5, seed=1),
        "F.dropout, 64x256, no grad": lambda: F.dropout(plain, 0.5),
        "F.dropout, 2^17, grad": lambda: F.dropout(large, 0.5),
    }


def count(call: Callable[[], object]) -> tuple[int, int]:
    """(dropkit's, all) Python functions entered by one ``call()``, after two warm-up calls."""
    call()
    call()
    counts = [0, 0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            counts[1] += 1
            counts[0] += "dropkit" in frame.f_code.co_filename

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return counts[0], counts[1]


def main() -> None:
    torch.set_num_threads(1)
    print("| call | dropkit functions | all Python functions |")
    print("| --- | ---: | ---: |")
    for name, call in cases().items():
        mine, every = count(call)
        print(f"| {name} | {mine} | {every} |")


if __name__ == "__main__":
    main()
