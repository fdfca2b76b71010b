"""Several MLP runs trained at once, as one model with stacked weights.

Small models spend their time in per-call overhead, not arithmetic, so S runs that differ only
by seed cost barely more than one when their layers are stacked: every linear layer becomes a
batched matrix product over the S runs. Each run keeps what makes it that run: its initial
weights are those of ``build_model`` after ``torch.manual_seed(seed)`` (as in a single run), its
batch order and dropout masks come from its own generator, and Adam, AdamW and SGD act on each
element separately, so stacking changes no update. A run's numbers do not depend on which other
runs share its batch. They differ from a single run with the same seed only because the dropout
seeds come from the run's own generator rather than torch's global one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit.doctor import guard
from dropkit.experiments.datasets import Dataset
from dropkit.experiments.models import SlicedDropout, build_model, set_rate
from dropkit.experiments.state import load_state, save_state
from dropkit.experiments.train import (
    EpochMetrics,
    RunResult,
    TrainConfig,
    _optimizer,
    _rate_at,
    expected_calibration_error,
    state_identity,
)

__all__ = ["StackedMLP", "can_batch", "train_batched"]


def can_batch(config: TrainConfig) -> bool:
    """Runs of this configuration can be trained together (MLP, no early stopping)."""
    return config.model == "mlp" and config.early_stopping == 0


class StackedMLP(nn.Module):
    """S copies of the runner's MLP with stacked weights: input ``(S, B, ...)`` -> ``(S, B, C)``."""

    def __init__(self, mlps: Sequence[nn.Module], generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        linears = [[m for m in mlp.modules() if isinstance(m, nn.Linear)] for mlp in mlps]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].weight.detach() for run in linears]))
            for i in range(len(linears[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].bias.detach() for run in linears]))
            for i in range(len(linears[0]))
        )
        self.dropouts = nn.ModuleList(SlicedDropout(generators) for _ in linears[0][:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if i < last:
                h = self.dropouts[i](torch.relu(h))
        return h


@torch.no_grad()
def _evaluate(
    model: StackedMLP, x: torch.Tensor, y: torch.Tensor
) -> list[tuple[float, float, torch.Tensor]]:
    """Per run: mean cross-entropy, accuracy and logits, in eval mode."""
    model.eval()
    runs = model.weights[0].shape[0]
    chunks = [x[i : i + 2048] for i in range(0, len(x), 2048)]
    logits = torch.cat([model(c.expand(runs, *c.shape)) for c in chunks], dim=1)
    return [
        (
            torch_F.cross_entropy(run_logits, y).item(),
            (run_logits.argmax(1) == y).float().mean().item(),
            run_logits,
        )
        for run_logits in logits
    ]


def train_batched(
    config: TrainConfig,
    data: Dataset,
    rate: float,
    seeds: Sequence[int],
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    state_path: Path | None = None,
) -> list[RunResult]:
    """Train the runs ``(rate, seed)`` for every seed together; one result per seed, in order.

    ``on_epoch`` receives the first run's metrics after each epoch (for a progress display).
    ``state_path``: as for :func:`~dropkit.experiments.train.train`, for the runs together.
    """
    config.check()
    if not can_batch(config):
        raise ValueError("train_batched: only the mlp model without early stopping batches")
    start = time.perf_counter()
    mlps = []
    for seed in seeds:
        torch.manual_seed(seed)
        mlps.append(
            build_model("mlp", data.input_shape, data.num_classes, hidden=config.hidden, rate=rate)
        )
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    model = StackedMLP(mlps, generators)
    optimizer = _optimizer(config, model)
    with guard(model):  # DK001/DK015: warns if evaluation ever runs with dropout still on
        return _fit_stacked(
            config,
            data,
            model,
            optimizer,
            mlps,
            generators,
            rate,
            seeds,
            start,
            on_epoch,
            state_path,
        )


def _fit_stacked(
    config: TrainConfig,
    data: Dataset,
    model: StackedMLP,
    optimizer: torch.optim.Optimizer,
    mlps: list[nn.Module],
    generators: list[torch.Generator],
    rate: float,
    seeds: Sequence[int],
    start: float,
    on_epoch: Callable[[EpochMetrics], None] | None,
    state_path: Path | None,
) -> list[RunResult]:
    x, y = data.x_train, data.y_train
    n, runs = len(y), len(seeds)
    histories: list[list[EpochMetrics]] = [[] for _ in seeds]
    identity = state_identity(config, rate, list(seeds))
    saved = load_state(state_path, identity)
    first_epoch, earlier_seconds = 0, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for generator, state in zip(generators, saved["rngs"], strict=True):
            generator.set_state(state)
        torch.set_rng_state(saved["torch_rng"])
        histories = [[EpochMetrics(**e) for e in h] for h in saved["histories"]]
        first_epoch, earlier_seconds = len(histories[0]), saved["seconds"]
    for epoch in range(first_epoch, config.epochs):
        epoch_start = time.perf_counter()
        epoch_rate = _rate_at(config, rate, epoch)
        set_rate(model, epoch_rate, config.layer_scale)
        model.train()
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        loss_sum = torch.zeros(runs)
        correct = torch.zeros(runs, dtype=torch.long)
        for i in range(0, n, config.batch_size):
            index = orders[:, i : i + config.batch_size]
            logits = model(x[index])
            targets = y[index]
            per_run = torch_F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(
                1
            )
            optimizer.zero_grad(set_to_none=True)
            # The sum of the runs' mean losses: each run's gradient is that of its own loss.
            per_run.sum().backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += per_run.detach() * index.shape[1]
            correct += (logits.detach().argmax(2) == targets).sum(1)
        seconds = (time.perf_counter() - epoch_start) / runs
        for r, (val_loss, val_acc, _) in enumerate(_evaluate(model, data.x_val, data.y_val)):
            histories[r].append(
                EpochMetrics(
                    epoch=epoch + 1,
                    rate=epoch_rate,
                    train_loss=loss_sum[r].item() / n,
                    train_acc=correct[r].item() / n,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    seconds=seconds,
                )
            )
        save_state(
            state_path,
            identity,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rngs": [g.get_state() for g in generators],
                "torch_rng": torch.get_rng_state(),
                "histories": [[dataclasses.asdict(e) for e in h] for h in histories],
                "seconds": earlier_seconds + time.perf_counter() - start,
            },
        )
        if on_epoch is not None:
            on_epoch(histories[0][-1])
    with torch.no_grad():  # the trained weights back into each run's own MLP, for checkpoints
        for r, mlp in enumerate(mlps):
            linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
            for linear, weight, bias in zip(linears, model.weights, model.biases, strict=True):
                linear.weight.copy_(weight[r])
                linear.bias.copy_(bias[r])
    train_eval = _evaluate(model, x, y)
    val_eval = _evaluate(model, data.x_val, data.y_val)
    test_eval = _evaluate(model, data.x_test, data.y_test)
    elapsed = (earlier_seconds + time.perf_counter() - start) / runs
    return [
        RunResult(
            rate=rate,
            seed=seed,
            train_acc=train_eval[r][1],
            test_acc=test_eval[r][1],
            test_nll=test_eval[r][0],
            test_ece=expected_calibration_error(test_eval[r][2], data.y_test),
            val_acc=val_eval[r][1],
            epochs_run=config.epochs,
            seconds=elapsed,
            history=histories[r],
            model_state=mlps[r].state_dict(),
        )
        for r, seed in enumerate(seeds)
    ]
