"""Your own model and data in dropkit compare: a small network on two noisy spirals.

From the command line, in the repository's root (results in
dropkit-runs/own_model.spirals-own_model.make_model/default/):

    dropkit compare --model examples/own_model.py:make_model --dataset examples/own_model.py:spirals

or from Python: ``python examples/own_model.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import TensorDataset


def make_model(p: float) -> nn.Module:
    """The model at dropout rate ``p``: dropkit calls it once per run with the rate compared."""
    return nn.Sequential(
        nn.Linear(2, 128),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(128, 2),
    )


def spirals(n: int = 600, noise: float = 0.08) -> tuple[TensorDataset, TensorDataset]:
    """(train, test): two interleaved spirals with noisy points; dropkit splits off validation."""
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(n, generator=generator) * 3 * math.pi
    label = torch.arange(n) % 2
    angle = t + math.pi * label
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1) / (3 * math.pi)
    x = x + noise * torch.randn(n, 2, generator=generator)
    train = n // 3  # few training points: easy to overfit
    return TensorDataset(x[:train], label[:train]), TensorDataset(x[train:], label[train:])


if __name__ == "__main__":
    from dropkit.experiments import compare, summarize

    results = compare(make_model, spirals, rates=(0.0, 0.3), seeds=3, epochs=40)
    for summary in summarize(results):
        print(summary.row())
