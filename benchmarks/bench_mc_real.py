"""Monte Carlo dropout on real models: dropkit.mc.predict vs the correct naive loop.

    python benchmarks/bench_mc_real.py              # S = 20, 8 inputs, median of 5 rounds
    python benchmarks/bench_mc_real.py --rounds 3

The naive loop is the correct one: the model inside ``dropkit.mc.mc_mode`` (eval mode, the
same stochastic ops switched on) and S forward passes on the N inputs under ``no_grad``.
``predict`` computes the part before the first stochastic op once. Both are timed interleaved
in one process after a warm-up (which also runs predict's one-off search for the modules to
switch on), with one thread. Models are built from small configurations with random weights;
nothing is downloaded. Prints a table; summarized in docs/benchmarks.md.
timm's and torchvision's models run where torchvision imports: in the vision environment
(``pip install -r requirements/vision.txt`` in a venv of its own); elsewhere their rows say
why they were skipped.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dropkit import mc
from dropkit.bench import interleaved
from dropkit.experiments import real_models as rm

SAMPLES = 20
BATCH = 8

_VIT = {"img_size": 64, "drop_rate": 0.1, "proj_drop_rate": 0.1, "attn_drop_rate": 0.1}

MODELS: dict[str, tuple[str, Callable[[], tuple[nn.Module, Any]]]] = {
    "BERT (256 wide, 4 layers, 64 tokens)": (
        "everywhere from the embeddings on",
        functools.partial(rm.bert, batch=BATCH, seq=64),
    ),
    "timm ViT (vit_small, 64x64)": (
        "in every block",
        functools.partial(rm.timm_model, "vit_small_patch16_224", batch=BATCH, size=64, **_VIT),
    ),
    "timm ResNet-18 (drop_rate 0.2)": (
        "in the head",
        functools.partial(rm.timm_model, "resnet18", batch=BATCH, size=64, drop_rate=0.2),
    ),
    "torchvision VGG-11 (64x64)": (
        "in the classifier head",
        functools.partial(rm.torchvision_model, "vgg11", batch=BATCH, size=64),
    ),
}


def bench(make: Callable[[], tuple[nn.Module, Any]], rounds: int) -> tuple[dict[str, float], str]:
    torch.manual_seed(0)
    model, inputs = make()
    model.eval()

    def loop() -> None:
        with torch.no_grad(), mc.mc_mode(model):
            for _ in range(SAMPLES):
                rm.call(model, inputs)

    strategy = mc.predict(model, inputs, SAMPLES, seed=0).strategy
    times = interleaved(
        {"loop": loop, "predict": lambda: mc.predict(model, inputs, SAMPLES)}, rounds
    )
    return times, strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"S = {SAMPLES}, N = {BATCH}, median of {args.rounds} interleaved rounds, 1 thread\n")
    print(
        "| model | where the dropout is | naive loop (ms) | `predict` (ms) | speed-up | strategy |"
    )
    print("|---|---|---|---|---|---|")
    for name, (where, make) in MODELS.items():
        try:
            times, strategy = bench(make, args.rounds)
        except rm.ModelUnavailable as error:
            print(f"| {name} | {where} | skipped: {error} | | | |")
            continue
        loop, predict = times["loop"] * 1e3, times["predict"] * 1e3
        print(
            f"| {name} | {where} | {loop:.1f} | {predict:.1f} | {loop / predict:.2f}x | "
            f"{strategy} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
