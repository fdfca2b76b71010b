"""Monte Carlo dropout on real models: dropkit.mc.predict vs the correct naive loop.

    python benchmarks/bench_mc_real.py              # S = 20, 8 inputs, median of 5 rounds
    python benchmarks/bench_mc_real.py --rounds 3

The naive loop is the correct one: the model inside ``dropkit.mc.mc_mode`` (eval mode, the
same stochastic ops switched on) and S forward passes on the N inputs under ``no_grad``.
``predict`` computes the part before the first stochastic op once. Both are timed interleaved
in one process after a warm-up (which also runs predict's one-off search for the modules to
switch on), with one thread. Models are built from small configurations with random weights;
nothing is downloaded. Prints a table; summarized in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dropkit import mc

SAMPLES = 20
BATCH = 8

_placeholders: list[torch.library.Library] = []


def _import_torchvision() -> Any:
    """``import torchvision``; with a CPU build of torch its operator registrations can fail
    (``operator torchvision::nms does not exist``): define placeholder schemas and retry (the
    classification models here never call those operators)."""
    schemas = {
        "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    }
    for _ in range(len(schemas) + 1):
        try:
            import torchvision

            return torchvision
        except RuntimeError as error:
            match = re.search(r"torchvision::(\w+) does not exist", str(error))
            if match is None or match.group(1) not in schemas:
                raise
            for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
                del sys.modules[name]
            if not _placeholders:
                _placeholders.append(torch.library.Library("torchvision", "FRAGMENT"))
            _placeholders[0].define(schemas[match.group(1)])
    raise RuntimeError("torchvision does not import")


def _bert() -> tuple[nn.Module, Any]:
    _import_torchvision()
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, num_labels=3,
    )  # fmt: skip
    ids = torch.randint(0, 1000, (BATCH, 64))
    return BertForSequenceClassification(config), {"input_ids": ids}


def _timm(name: str, size: int, **kwargs: Any) -> Callable[[], tuple[nn.Module, Any]]:
    def make() -> tuple[nn.Module, Any]:
        _import_torchvision()
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
        return model, torch.randn(BATCH, 3, size, size)

    return make


def _vgg() -> tuple[nn.Module, Any]:
    torchvision = _import_torchvision()
    return torchvision.models.vgg11(num_classes=10), torch.randn(BATCH, 3, 64, 64)


MODELS: dict[str, tuple[str, Callable[[], tuple[nn.Module, Any]]]] = {
    "BERT (256 wide, 4 layers, 64 tokens)": ("everywhere from the embeddings on", _bert),
    "timm ViT (vit_small, 64x64)": (
        "in every block",
        _timm("vit_small_patch16_224", 64, img_size=64, drop_rate=0.1, proj_drop_rate=0.1,
              attn_drop_rate=0.1),
    ),
    "timm ResNet-18 (drop_rate 0.2)": ("in the head", _timm("resnet18", 64, drop_rate=0.2)),
    "torchvision VGG-11 (64x64)": ("in the classifier head", _vgg),
}  # fmt: skip


def _interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def bench(make: Callable[[], tuple[nn.Module, Any]], rounds: int) -> tuple[dict[str, float], str]:
    torch.manual_seed(0)
    model, inputs = make()
    model.eval()

    def loop() -> None:
        with torch.no_grad(), mc.mc_mode(model):
            for _ in range(SAMPLES):
                _call(model, inputs)

    strategy = mc.predict(model, inputs, SAMPLES, seed=0).strategy
    times = _interleaved(
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
        except (ImportError, RuntimeError) as error:
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
