"""Python functions of dropkit entered by one ``mc.predict`` call, by method.

    python benchmarks/bench_frames.py [--top 15]

The model is an MLP 40-256-128-10 (``nn.Sequential`` of Linear 40-256, ReLU, Dropout(0.5),
Linear 256-128, ReLU, Dropout(0.5), Linear 128-10), with ``torch.nn.Dropout`` and with
``dropkit.nn.Dropout`` (whose own forward is dropkit's Python too), on N = 64 inputs, S = 8
samples. ``sys.setprofile`` counts the "call" events whose code lies in the dropkit package
(a generator counts each time it resumes): deterministic, so the counts compare across
machines and loads (no timing here). Each method is called once first (the discovery of what
to switch on is then cached per model, as in any loop over batches), then counted on a
second call. The last column leaves out the dropout op's own calls (``dropkit.functional``,
``kernels``, ``nn``: the op that runs the mask, where torch's op was C++), so it counts the
Monte Carlo machinery alone. ``--top`` prints the most entered functions of each. Summarized
in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import dropkit
from dropkit import mc
from dropkit import nn as dk_nn

PACKAGE = str(Path(dropkit.__file__).resolve().parent)
METHODS = ("sampling", "moments")
LAYERS: dict[str, Callable[[float], nn.Module]] = {
    "torch.nn.Dropout": nn.Dropout,
    "dropkit.nn.Dropout": dk_nn.Dropout,
}
BATCH, FEATURES, CLASSES, SAMPLES = 64, 40, 10, 8


def dropkit_calls(fn: Callable[[], object]) -> Counter[str]:
    """The dropkit functions ``fn()`` enters, as ``file:function`` with their counts."""
    calls: Counter[str] = Counter()

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            path = str(Path(frame.f_code.co_filename).resolve())
            if path.startswith(PACKAGE):
                calls[f"{path[len(PACKAGE) + 1 :]}:{frame.f_code.co_name}"] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def mlp(dropout: Callable[[float], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), dropout(0.5),
        nn.Linear(256, 128), nn.ReLU(), dropout(0.5), nn.Linear(128, CLASSES),
    ).eval()  # fmt: skip


def count(method: str, layer: str) -> Counter[str]:
    """The dropkit functions entered by a warm ``mc.predict`` call on the MLP."""
    model = mlp(LAYERS[layer])
    x = torch.randn(BATCH, FEATURES)

    def call() -> object:
        return mc.predict(model, x, SAMPLES, seed=0, method=method)

    call()  # discovery, cached per model
    return dropkit_calls(call)


#: Where dropkit's dropout ops live: their calls are the op's own work (where torch's C++ op
#: ran before the sampler handed torch's dropout to dropkit's kernel), not the machinery's.
OP_PACKAGES = ("functional/", "kernels/", "nn/")


def machinery(calls: Counter[str]) -> int:
    """The calls outside the dropout ops themselves: mc, the registry, the interception base."""
    return sum(n for name, n in calls.items() if not name.startswith(OP_PACKAGES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=0, help="also print the N most entered")
    options = parser.parse_args()
    counts = {(m, layer): count(m, layer) for layer in LAYERS for m in METHODS}
    print(f"MLP {FEATURES}-256-128-{CLASSES}, N = {BATCH}, S = {SAMPLES}: dropkit functions")
    print("entered by one mc.predict call (sys.setprofile 'call' events)\n")
    print("| method | dropout layer | calls | outside the dropout op |")
    print("|---|---|---:|---:|")
    for (method, layer), calls in counts.items():
        print(f"| {method} | `{layer}` | {sum(calls.values())} | {machinery(calls)} |")
    for (method, layer), calls in counts.items() if options.top else ():
        print(f"\n{method}, {layer}:")
        for name, n in calls.most_common(options.top):
            print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
