"""What the trainer integrations share, free of any trainer: rate schedules, the forgotten-eval
check and the Monte Carlo scores of an evaluation.

The Lightning callbacks (:mod:`dropkit.integrations.lightning`) and the Hugging Face callback
(:mod:`dropkit.integrations.transformers`) only translate their trainer's hooks into calls of
these; the logic is tested once, here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dropkit._registry import dropout_layers, layer_spec

__all__ = [
    "MCScores",
    "RateSchedule",
    "ScheduledRates",
    "check_eval_mode",
    "mc_batch",
]

ScheduleKind = Literal["constant", "early", "late"]
SCHEDULES: tuple[str, ...] = ("constant", "early", "late")
GuardAction = Literal["error", "warn"]


@dataclass(frozen=True)
class RateSchedule:
    """How much of each dropout layer's own rate is in force at each epoch.

    ``"constant"`` keeps the rates all along; ``"early"`` applies them for the first ``epochs``
    epochs only and ``"late"`` only from epoch ``epochs`` on (Liu et al., "Dropout Reduces
    Underfitting", ICML 2023, https://arxiv.org/abs/2303.01500), as ``dropkit compare
    --schedule`` does. A function of the epoch (0-based) gives any other per-epoch schedule: it
    returns the factor (``>= 0``) that multiplies every layer's rate that epoch.

    Args:
        kind: ``"constant"``, ``"early"``, ``"late"``, or a function ``epoch -> factor``.
        epochs: the epochs with (``early``) or without (``late``) dropout.

    Example:
        >>> from dropkit.integrations._common import RateSchedule
        >>> [RateSchedule("early", epochs=2).factor(e) for e in range(4)]
        [1.0, 1.0, 0.0, 0.0]
        >>> [RateSchedule(lambda epoch: min(1.0, epoch / 4)).factor(e) for e in (0, 2, 9)]
        [0.0, 0.5, 1.0]
    """

    kind: ScheduleKind | Callable[[int], float] = "constant"
    epochs: int = 0

    def __post_init__(self) -> None:
        if callable(self.kind):
            if self.epochs:
                raise ValueError(
                    "RateSchedule: epochs applies to 'early' or 'late' only; a function of the "
                    "epoch sets every epoch's factor itself"
                )
            return
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"RateSchedule: unknown kind {self.kind!r}; expected one of {SCHEDULES} or a "
                "function of the epoch"
            )
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"RateSchedule: epochs must be an int >= 0, got {self.epochs!r}")
        if self.kind == "early" and self.epochs == 0:
            raise ValueError(
                "RateSchedule: 'early' with epochs=0 never applies dropout; give the epochs "
                "with dropout, e.g. epochs=10"
            )
        if self.kind == "constant" and self.epochs:
            raise ValueError("RateSchedule: epochs applies to 'early' or 'late' only")

    def factor(self, epoch: int) -> float:
        """The factor on every layer's rate at ``epoch`` (0-based)."""
        if callable(self.kind):
            value = float(self.kind(epoch))
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"RateSchedule: the schedule function returned {value!r} for epoch {epoch}; "
                    "expected a finite factor >= 0"
                )
            return value
        if self.kind == "early":
            return 1.0 if epoch < self.epochs else 0.0
        if self.kind == "late":
            return 1.0 if epoch >= self.epochs else 0.0
        return 1.0


@dataclass
class ScheduledRates:
    """A :class:`RateSchedule` applied to one model: each layer's own rate, read once, times the
    schedule's factor. The rates read at the start are the state a checkpoint must keep: a
    model whose rates the schedule has already set to 0 no longer knows them.

    Example:
        >>> import torch
        >>> from dropkit.integrations._common import RateSchedule, ScheduledRates
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.4))
        >>> rates = ScheduledRates(RateSchedule("late", epochs=1))
        >>> rates.apply(model, 0), model[1].p
        (0.0, 0.0)
        >>> rates.apply(model, 1), model[1].p
        (1.0, 0.4)
        >>> rates.state_dict()
        {'base': {'1': 0.4}, 'epoch': 1, 'factor': 1.0}
    """

    schedule: RateSchedule
    base: dict[str, float] | None = None
    epoch: int | None = None
    factor: float | None = None

    def apply(self, model: nn.Module, epoch: int) -> float:
        """Set every dropout layer of ``model`` to its rate at ``epoch``; returns the factor."""
        layers = {name: module for name, module, _ in dropout_layers(model)}
        if self.base is None:
            self.base = {name: float(p) for name, _, p in dropout_layers(model)}
            if not any(self.base.values()):
                warnings.warn(
                    f"RateSchedule: {type(model).__name__} has no dropout layer with a rate "
                    "above 0, so the schedule changes nothing",
                    stacklevel=3,
                )
        missing = sorted(set(self.base) - set(layers))
        if missing:
            raise ValueError(
                f"RateSchedule: the dropout layers {missing[:3]} of the saved schedule are not in "
                f"{type(model).__name__}; restore the schedule into the model it was saved with"
            )
        factor = self.schedule.factor(epoch)
        for name, p in self.base.items():
            module = layers[name]
            rate = p * factor
            if not 0.0 <= rate < 1.0:
                raise ValueError(
                    f"RateSchedule: factor {factor:g} at epoch {epoch} sets {name} "
                    f"({type(module).__name__}, p={p:g}) to {rate:g}; rates must stay in [0, 1)"
                )
            setattr(module, layer_spec(module).rate_attr, rate)  # type: ignore[union-attr]
        self.epoch, self.factor = epoch, factor
        return factor

    def state_dict(self) -> dict[str, Any]:
        return {"base": dict(self.base or {}), "epoch": self.epoch, "factor": self.factor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        base = state.get("base")
        self.base = {str(k): float(v) for k, v in base.items()} if base else None
        self.epoch, self.factor = state.get("epoch"), state.get("factor")


def check_eval_mode(model: nn.Module, where: str, action: GuardAction) -> list[str]:
    """DK001 for an evaluation step: the dropout layers (``p > 0``) of ``model`` still in
    training mode. Raises ``RuntimeError`` (``action="error"``) or warns
    :class:`dropkit.doctor.DropoutWarning` (``"warn"``) when there are any; Monte Carlo mode
    (:func:`dropkit.mc.mc_mode`) is not a mistake. Returns their names.

    Example:
        >>> import torch
        >>> from dropkit.integrations._common import check_eval_mode
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
        >>> check_eval_mode(model.eval(), "in a validation step", "error")
        []
        >>> check_eval_mode(model.train(), "in a validation step", "error")
        Traceback (most recent call last):
        ...
        RuntimeError: DK001: Sequential ran in a validation step with dropout in training mode ...
    """
    from dropkit.doctor import DropoutWarning, Guard

    mistakes = Guard.of(model).mistakes(where)
    dk001 = [m for m in mistakes if m.code == "DK001"]
    for mistake in mistakes:
        if action == "error" and mistake.code == "DK001":
            raise RuntimeError(mistake.message)
        warnings.warn(mistake.message, DropoutWarning, stacklevel=3)
    return [name for m in dk001 for name in m.modules]


@dataclass
class MCScores:
    """The Monte Carlo scores of one evaluation, accumulated batch by batch: NLL, ECE (15
    equal-width bins), mean mutual information and accuracy of the MC predictive (the mean of
    the per-sample softmax).

    Example:
        >>> import torch
        >>> from dropkit.integrations._common import MCScores
        >>> scores = MCScores()
        >>> scores.add(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0.0, 0.1]),
        ...            torch.tensor([0, 0]))
        >>> {k: round(v, 4) for k, v in scores.compute().items()}
        {'nll': 0.8574, 'ece': 0.45, 'mutual_information': 0.05, 'accuracy': 0.5}
    """

    probs: list[torch.Tensor] = field(default_factory=list)
    mutual_information: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)

    def add(
        self, probs: torch.Tensor, mutual_information: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """One batch: ``[N, C]`` predictive probabilities, ``[N]`` mutual information and
        ``[N]`` integer targets."""
        if probs.dim() != 2:
            raise ValueError(
                f"MC evaluation: expected [N, C] class probabilities, got {tuple(probs.shape)}; "
                "it scores classifiers (give output= to pick the logits)"
            )
        if targets.shape != probs.shape[:1]:
            raise ValueError(
                f"MC evaluation: {tuple(targets.shape)} targets for {probs.shape[0]} predictions; "
                "expected one integer class per input"
            )
        self.probs.append(probs.detach().double().cpu())
        self.mutual_information.append(mutual_information.detach().double().cpu())
        self.targets.append(targets.detach().long().cpu())

    def __len__(self) -> int:
        return sum(len(t) for t in self.targets)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All batches so far: probabilities, mutual information and targets."""
        if not self.targets:
            raise ValueError("MC evaluation: no batch was scored")
        return torch.cat(self.probs), torch.cat(self.mutual_information), torch.cat(self.targets)

    def compute(self) -> dict[str, float]:
        return scores(*self.tensors())


def scores(
    probs: torch.Tensor, mutual_information: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """NLL, ECE, mean mutual information and accuracy of pooled predictions."""
    from dropkit.metrics import expected_calibration_error, negative_log_likelihood

    targets = targets.long()
    return {
        "nll": negative_log_likelihood(probs, targets),
        "ece": expected_calibration_error(probs, targets),
        "mutual_information": float(mutual_information.double().mean()),
        "accuracy": float((probs.argmax(1) == targets).double().mean()),
    }


def mc_batch(
    model: nn.Module,
    inputs: Any,
    *,
    samples: int,
    method: str,
    seed: int | None,
    output: Any = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``[N, C]`` probabilities and ``[N]`` mutual information of one batch by
    :func:`dropkit.mc.predict` (``method`` ``"sampling"`` or ``"moments"``); None when every
    dropout layer of ``model`` is at ``p = 0`` (a schedule's epochs without dropout), where
    there is nothing to sample."""
    from dropkit import mc

    rates = [p for _, _, p in dropout_layers(model)]
    try:
        result = mc.predict(
            model,
            inputs,
            samples=samples,
            method=method,
            seed=seed,
            output=output,
        )
    except ValueError:
        if rates and not any(rates):
            return None
        raise
    return result.probs, result.mutual_information


def gathered(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors of every process, concatenated in rank order, under ``torch.distributed``
    (any sizes: each process may hold a different number of predictions); as given otherwise.

    Example:
        >>> import torch
        >>> from dropkit.integrations._common import gathered
        >>> gathered(torch.ones(2))  # a single process
        (tensor([1., 1.]),)
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tuple(t.cpu() for t in tensors))
    return tuple(torch.cat([part[i] for part in parts]) for i in range(len(tensors)))


def all_rates_zero_warning(name: str, model: nn.Module) -> None:
    warnings.warn(
        f"{name}: every dropout layer of {type(model).__name__} has p = 0 now (a schedule's "
        "epochs without dropout?), so there is no Monte Carlo predictive to score; this "
        "evaluation logs no Monte Carlo scores",
        stacklevel=3,
    )


def check_method(name: str, method: str, samples: int) -> None:
    if method not in ("sampling", "moments"):
        raise ValueError(f"{name}: method must be 'sampling' or 'moments', got {method!r}")
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"{name}: samples must be an int >= 2, got {samples!r}")


def require(module: str, library: str, extra: str, importer: str) -> None:
    """Raise an ``ImportError`` with the one line that installs ``library`` unless ``module``
    can be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"{importer} needs {library}, which is not installed: pip install 'dropkit[{extra}]'"
        )
