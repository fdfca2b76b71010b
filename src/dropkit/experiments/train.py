"""One training run: a model at one dropout rate and seed, on in-memory data.

Batches are drawn by indexing tensors held in memory (no per-sample DataLoader), which is
where the time of small models goes. Everything random is seeded from the run's seed, so a
run is reproducible.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit.doctor import guard
from dropkit.experiments.datasets import Dataset
from dropkit.experiments.models import build_model, set_rate
from dropkit.experiments.options import OPTIMIZERS, SCHEDULES, ConfigError, check_options

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfigError",
    "EpochMetrics",
    "RunResult",
    "TrainConfig",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run except the data, the dropout rate and the seed.

    ``schedule``: ``constant`` keeps the rate all along; ``early`` applies it for the first
    ``schedule_epochs`` epochs only and ``late`` only after them (Liu et al. 2023, "Dropout
    Reduces Underfitting", https://arxiv.org/abs/2303.01500). ``early_stopping`` is the patience
    in epochs on validation loss (0: off); the best epoch's weights are kept.
    """

    model: str = "mlp"
    variant: str = "channel"  # the cnn's conv-block dropout: channel, element or block
    hidden: tuple[int, ...] = (256, 128)
    layer_scale: tuple[float, ...] | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 60
    batch_size: int = 64
    early_stopping: int = 0
    schedule: str = "constant"
    schedule_epochs: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (see :func:`check_options`)."""
        check_options(**dataclasses.asdict(self))


@dataclass
class EpochMetrics:
    epoch: int
    rate: float  # the rate in force this epoch (schedules change it)
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class RunResult:
    rate: float
    seed: int
    train_acc: float  # on the whole training set, in eval mode
    test_acc: float
    test_nll: float
    test_ece: float
    val_acc: float
    epochs_run: int
    seconds: float
    history: list[EpochMetrics] = field(default_factory=list)
    #: The trained weights, for the checkpoint; not part of the stored results.
    model_state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def gap(self) -> float:
        return self.train_acc - self.test_acc

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(dataclasses.replace(self, model_state=None))
        del data["model_state"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        fields = dict(data)
        history = [EpochMetrics(**e) for e in fields.pop("history", [])]
        return cls(**fields, history=history)


def _rate_at(config: TrainConfig, rate: float, epoch: int) -> float:
    if config.schedule == "early":
        return rate if epoch < config.schedule_epochs else 0.0
    if config.schedule == "late":
        return rate if epoch >= config.schedule_epochs else 0.0
    return rate


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


@torch.no_grad()
def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and the logits, in eval mode."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    loss = torch_F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc, logits


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE of the softmax of ``logits``, 15 equal-width bins (see :mod:`dropkit.metrics`)."""
    from dropkit.metrics import expected_calibration_error as ece

    return ece(torch.softmax(logits.double(), dim=1), y, bins=bins)


def train(
    config: TrainConfig,
    data: Dataset,
    rate: float,
    seed: int,
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> RunResult:
    """Train ``config.model`` on ``data`` with dropout ``rate`` and ``seed``; return the metrics.

    Example:
        >>> from dropkit.experiments.datasets import load_dataset
        >>> from dropkit.experiments.train import TrainConfig, train
        >>> data = load_dataset("synthetic")
        >>> result = train(TrainConfig(epochs=2, hidden=(32,)), data, rate=0.2, seed=0)
        >>> result.epochs_run, 0.0 <= result.test_acc <= 1.0
        (2, True)
    """
    config.check()
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(
        config.model,
        data.input_shape,
        data.num_classes,
        hidden=config.hidden,
        rate=rate,
        layer_scale=config.layer_scale,
        variant=config.variant,
    )
    optimizer = _optimizer(config, model)
    with guard(model):  # DK001/DK015: warns if evaluation ever runs with dropout still on
        return _fit(config, data, model, optimizer, rate, seed, start, on_epoch)


def _fit(
    config: TrainConfig,
    data: Dataset,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rate: float,
    seed: int,
    start: float,
    on_epoch: Callable[[EpochMetrics], None] | None,
) -> RunResult:
    order_generator = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    n = len(y)
    history: list[EpochMetrics] = []
    best_loss, best_state, stale = math.inf, None, 0
    for epoch in range(config.epochs):
        epoch_start = time.perf_counter()
        epoch_rate = _rate_at(config, rate, epoch)
        set_rate(model, epoch_rate, config.layer_scale)
        model.train()
        order = torch.randperm(n, generator=order_generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        for i in range(0, n, config.batch_size):
            index = order[i : i + config.batch_size]
            xb, yb = x[index], y[index]
            logits = model(xb)
            loss = torch_F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
        val_loss, val_acc, _ = _evaluate(model, data.x_val, data.y_val)
        metrics = EpochMetrics(
            epoch=epoch + 1,
            rate=epoch_rate,
            train_loss=loss_sum.item() / n,
            train_acc=correct.item() / n,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - epoch_start,
        )
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if config.early_stopping:
            if val_loss < best_loss:
                best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= config.early_stopping:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    _, train_acc, _ = _evaluate(model, x, y)
    _, val_acc, _ = _evaluate(model, data.x_val, data.y_val)
    test_nll, test_acc, test_logits = _evaluate(model, data.x_test, data.y_test)
    return RunResult(
        rate=rate,
        seed=seed,
        train_acc=train_acc,
        test_acc=test_acc,
        test_nll=test_nll,
        test_ece=expected_calibration_error(test_logits, data.y_test),
        val_acc=val_acc,
        epochs_run=len(history),
        seconds=time.perf_counter() - start,
        history=history,
        model_state=model.state_dict(),
    )
