"""Monte Carlo prediction: :func:`dropkit.mc.predict` on a small CNN, by method."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from dropkit.bench._timing import interleaved

__all__ = ["bench_mc", "mc_cnn"]


def mc_cnn() -> nn.Module:
    """The CNN of the Monte Carlo benchmark (the common small-image shape)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout2d(0.25),
        nn.Flatten(),
        nn.Linear(8192, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
    )


def bench_mc(
    *, samples: int = 20, batch: int = 64, rounds: int = 5, model: nn.Module | None = None
) -> dict[str, float]:
    """Median seconds for S Monte Carlo passes over ``batch`` 3x32x32 inputs, three ways.

    ``train() + loop``: the common recipe (``model.train()``, then S forward passes under
    ``no_grad``); ``replicate``: ``dropkit.mc.predict`` with the input replicated S times;
    ``predict (shared prefix)``: ``dropkit.mc.predict`` computing the part before the first
    dropout once.
    """
    from dropkit.mc import predict

    torch.manual_seed(0)
    net = model if model is not None else mc_cnn()
    x = torch.randn(batch, 3, 32, 32)

    def loop() -> None:
        net.train()
        with torch.no_grad():
            torch.stack([net(x) for _ in range(samples)])
        net.eval()

    contenders: dict[str, Callable[[], object]] = {
        "train() + loop": loop,
        "replicate": functools.partial(predict, net, x, samples, share_prefix=False),
        "predict (shared prefix)": functools.partial(predict, net, x, samples),
    }
    return interleaved(contenders, rounds)
