"""Speed of the one-pass method: ``predict(method="moments")`` against the deterministic forward
and against ``predict`` with S = 30, and the Python functions of dropkit one call enters.

    python benchmarks/bench_moments.py [--n 1000 ...] [--rounds 30] [--frames]

Models: the benchmark models of ``dropkit compare`` at rate 0.3, as built by
``dropkit.experiments.models.build_model`` (untrained: the cost does not depend on the weights),
on ``--n`` random inputs (one or more sizes) of each one's data shape: the mnist1d MLP
(40-256-128-10), the digits MLP (64-256-128-10) and the digits CNN (1x8x8, two conv blocks
with channel dropout).
Timing: the five calls (``moments S=1`` is the pass with one draw, without the
``S x N x C`` Gaussian draws of the default S = 30; ``moments, reference`` the pass inside
``dropkit.backend("reference")``, on the rules' plain-PyTorch formulas, not their numba
kernels) interleaved ``--rounds`` times in one
process on one thread, the garbage collector off, each timed call after an untimed one of the
same method; CPU time of the thread, minimum over rounds. Read the ratios: the machine may
be shared.

Frames: the ``"call"`` events of ``sys.setprofile`` whose code lies in the dropkit package,
for one ``predict`` call on the mnist1d MLP with N = 64 and S = 8 (the figure of the issue
"One place for each fact"), by method; ``--frames`` lists them by function. Deterministic,
so comparable across machines. Results and the command are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import dropkit
from dropkit.experiments.models import build_model
from dropkit.mc import predict

SAMPLES = 30
MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "mnist1d mlp": ("mlp", (40,)),
    "digits mlp": ("mlp", (64,)),
    "digits cnn": ("cnn", (1, 8, 8)),
}
# "moments S=1": the pass with one draw from its Gaussian, so without the S x N x C draws that
# ``samples`` (and the scores) of the default S = 30 cost.
# "moments, reference": the same call inside ``dropkit.backend("reference")``, so that the moment
# rules run their plain-PyTorch formulas instead of the numba kernels (the tree before them).
METHODS = ("deterministic", "moments", "moments S=1", "moments, reference", f"MC S={SAMPLES}")


def _call(method: str, model: nn.Module, x: torch.Tensor, samples: int = SAMPLES) -> object:
    if method == "deterministic":
        with torch.no_grad():
            return model(x)
    if method == "moments S=1":
        return predict(model, x, 1, seed=0, method="moments")
    if method == "moments, reference":
        with dropkit.backend("reference"):
            return predict(model, x, samples, seed=0, method="moments")
    kind = "moments" if method == "moments" else "sampling"
    return predict(model, x, samples, seed=0, method=kind)


def timings(model: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """CPU seconds (minimum over interleaved rounds) of each method's call on ``x``."""
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    gc.disable()
    try:
        for r in range(rounds):
            turn = r % len(METHODS)
            order = METHODS[turn:] + METHODS[:turn]
            for method in order:
                _call(method, model, x)  # untimed: the allocator's state after the others
                start = time.thread_time()
                _call(method, model, x)
                times[method].append(time.thread_time() - start)
    finally:
        gc.enable()
    return {m: min(t) for m, t in times.items()}


def frames(fn: Callable[[], object]) -> collections.Counter[str]:
    """The dropkit functions ``fn()`` enters, ``file:function`` -> calls."""
    root = os.path.dirname(dropkit.__file__)
    names: collections.Counter[str] = collections.Counter()

    def profile(frame: Any, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(root):
            names[f"{os.path.relpath(code.co_filename, root)}:{code.co_name}"] += 1

    fn()  # warm: first-call caches are not the per-call cost
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1000], help="inputs per call (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--frames", action="store_true", help="list the functions entered")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report: dict[str, Any] = {"frames": {}, "times": {}}

    torch.manual_seed(0)
    mlp = build_model("mlp", (40,), 10, rate=0.3).eval()
    small = torch.randn(64, 40)
    print_("dropkit functions entered by one predict call (mnist1d MLP, N = 64, S = 8):")
    for method in ("sampling", "moments"):
        counted = frames(lambda m=method: predict(mlp, small, 8, seed=0, method=m))  # type: ignore[misc]
        report["frames"][method] = sum(counted.values())
        print_(f"  {method}: {sum(counted.values())}")
        if args.frames:
            for name, calls in counted.most_common():
                print_(f"    {calls:4d}  {name}")

    print_(f"\nCPU time per call, one thread, min of {args.rounds} rounds:")
    print_(
        "| model | N | deterministic | moments | moments S=1 | moments, reference | MC S=30 "
        "| moments / det. | moments S=1 / det. | reference / moments | MC / moments |"
    )
    print_("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (kind, shape) in MODELS.items():
        torch.manual_seed(0)
        model = build_model(kind, shape, 10, rate=0.3).eval()
        for n in args.n:
            x = torch.randn(n, *shape)
            t = timings(model, x, args.rounds)
            report["times"][f"{name} N={n}"] = t
            det, mom, mc = t["deterministic"], t["moments"], t[f"MC S={SAMPLES}"]
            one, ref = t["moments S=1"], t["moments, reference"]
            print_(
                f"| {name} | {n} | {1e3 * det:.2f} ms | {1e3 * mom:.2f} ms | {1e3 * one:.2f} ms "
                f"| {1e3 * ref:.2f} ms | {1e3 * mc:.1f} ms | {mom / det:.2f}x | {one / det:.2f}x "
                f"| {ref / mom:.2f}x | {mc / mom:.1f}x |"
            )
    return report


if __name__ == "__main__":
    main()
