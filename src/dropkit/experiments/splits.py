"""The in-memory data set of a comparison, and the splitting and label noise it is made with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dropkit.experiments.threads import fixed_threads

__all__ = ["Dataset", "DatasetError", "noisy_labels", "split_off", "standardize"]


class DatasetError(RuntimeError):
    """A data set cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test tensors; inputs keep their natural shape (C, ...) per sample.

    ``task`` is ``classification`` (integer labels, ``num_classes`` of them) or ``regression``
    (float targets, standardized: ``target_mean + target_std * y`` is in the data's units;
    ``num_classes`` is then the model's number of outputs, 1).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    task: str = "classification"
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# ---------------------------------------------------------------- splitting and noise


def split_off(
    x: torch.Tensor, y: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a random ``fraction`` off (x, y): returns (rest_x, rest_y, part_x, part_y)."""
    order = torch.randperm(len(y), generator=generator)
    n_part = round(len(y) * fraction)
    part, rest = order[:n_part], order[n_part:]
    return x[rest], y[rest], x[part], y[part]


def noisy_labels(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Replace a random ``fraction`` of the labels by uniformly random classes."""
    y = y.clone()
    n_noisy = round(len(y) * fraction)
    which = torch.randperm(len(y), generator=generator)[:n_noisy]
    y[which] = torch.randint(0, num_classes, (n_noisy,), generator=generator)
    return y


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every split by the training inputs' per-channel mean and std."""
    dims = [0, *range(2, train.dim())]
    # One thread: a reduction this large is split among threads, each summing its own share,
    # so the statistics (and every run on the data) would change with the thread count.
    with fixed_threads(1):
        mean = train.mean(dim=dims, keepdim=True)
        std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]
