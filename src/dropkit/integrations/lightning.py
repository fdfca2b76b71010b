"""Lightning callbacks: rate schedules, the forgotten-eval guard, Monte Carlo validation and
``convert`` at setup.

Needs Lightning (``pip install 'dropkit[lightning]'``)::

    import lightning as L
    from dropkit.integrations.lightning import (
        ConvertDropout, DropoutSchedule, EvalGuard, MCValidation,
    )

    trainer = L.Trainer(
        max_epochs=30,
        callbacks=[
            ConvertDropout(),                   # torch's dropout layers become dropkit's
            DropoutSchedule("early", epochs=10),  # dropout for the first 10 epochs only
            EvalGuard(),                        # a validation step with dropout on fails
            MCValidation(samples=20),           # mc_nll, mc_ece, mc_mutual_information, mc_accuracy
        ],
    )

Every callback acts on the ``LightningModule`` itself unless given ``model=``, a function of
the ``LightningModule`` that returns the network (``lambda module: module.net``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dropkit.integrations._common import require

require("lightning", "Lightning", "lightning", "dropkit.integrations.lightning")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dropkit.integrations._common import (  # noqa: E402
    GuardAction,
    MCScores,
    RateSchedule,
    ScheduledRates,
    ScheduleKind,
    all_rates_zero_warning,
    check_eval_mode,
    check_method,
    mc_batch,
    scores,
)

__all__ = ["ConvertDropout", "DropoutSchedule", "EvalGuard", "MCValidation", "split_batch"]

ModelFn = Callable[[pl.LightningModule], nn.Module]
BatchFn = Callable[[Any], tuple[Any, torch.Tensor]]


def _target(pl_module: pl.LightningModule, model: ModelFn | None) -> nn.Module:
    return pl_module if model is None else model(pl_module)


class DropoutSchedule(pl.Callback):
    """Set the dropout rates at the start of each training epoch by a schedule.

    Each dropout layer keeps its own rate, times the schedule's factor of the epoch:
    ``"early"`` applies the rates for the first ``epochs`` epochs only, ``"late"`` from epoch
    ``epochs`` on (Liu et al., "Dropout Reduces Underfitting", https://arxiv.org/abs/2303.01500),
    a function ``epoch -> factor`` any other schedule. The rates read at the first epoch are
    saved in the checkpoint, so a resumed run (even on a model whose rates the schedule has
    set to 0) goes on with the right ones. The factor is logged as ``dropout_factor``.

    Args:
        kind: ``"constant"``, ``"early"``, ``"late"`` or a function of the (0-based) epoch.
        epochs: the epochs with (``early``) or without (``late``) dropout.
        model: the network inside the ``LightningModule`` (default: the module itself).

    Example:
        >>> from dropkit.integrations.lightning import DropoutSchedule
        >>> DropoutSchedule("early", epochs=10)
        DropoutSchedule(kind='early', epochs=10)
    """

    def __init__(
        self,
        kind: ScheduleKind | Callable[[int], float] = "constant",
        epochs: int = 0,
        *,
        model: ModelFn | None = None,
    ) -> None:
        self.schedule = RateSchedule(kind, epochs)
        self.rates = ScheduledRates(self.schedule)
        self.model = model

    def __repr__(self) -> str:
        kind = self.schedule.kind
        shown = kind if isinstance(kind, str) else getattr(kind, "__name__", "function")
        return f"DropoutSchedule(kind={shown!r}, epochs={self.schedule.epochs})"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        factor = self.rates.apply(_target(pl_module, self.model), trainer.current_epoch)
        # The same on every process: syncing averages equal numbers (and quiets Lightning's hint).
        sync = trainer.world_size > 1
        pl_module.log("dropout_factor", factor, on_step=False, on_epoch=True, sync_dist=sync)

    def state_dict(self) -> dict[str, Any]:
        return self.rates.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rates.load_state_dict(state_dict)


_STAGES = ("validate", "test", "predict")


class EvalGuard(pl.Callback):
    """Fail (or warn) when a validation, test or predict step runs with dropout in training
    mode: the forgotten ``eval()`` (the doctor's DK001; see docs/rules/DK001.md).

    Lightning puts the model in eval mode before these loops; a hook or a step that switches
    the network back (``self.net.train()`` to get Monte Carlo samples, a submodule whose
    ``train`` is overridden) makes every score random. Monte Carlo mode
    (:func:`dropkit.mc.mc_mode`, :class:`MCValidation`) is not a mistake. BatchNorm in training
    mode there (DK015) is warned about either way.

    Args:
        action: ``"error"`` raises ``RuntimeError`` at the first such step; ``"warn"`` warns
            :class:`dropkit.doctor.DropoutWarning` once per loop.
        stages: the loops to check, among ``"validate"``, ``"test"`` and ``"predict"``.
        model: the network inside the ``LightningModule`` (default: the module itself).

    Example:
        >>> from dropkit.integrations.lightning import EvalGuard
        >>> EvalGuard(action="warn").stages
        ('validate', 'test', 'predict')
    """

    def __init__(
        self,
        action: GuardAction = "error",
        stages: Sequence[str] = _STAGES,
        *,
        model: ModelFn | None = None,
    ) -> None:
        if action not in ("error", "warn"):
            raise ValueError(f"EvalGuard: action must be 'error' or 'warn', got {action!r}")
        unknown = sorted(set(stages) - set(_STAGES))
        if unknown:
            raise ValueError(f"EvalGuard: unknown stages {unknown}; expected some of {_STAGES}")
        self.action: GuardAction = action
        self.stages = tuple(stages)
        self.model = model
        self._warned: set[str] = set()

    def _check(self, pl_module: pl.LightningModule, stage: str, step: str) -> None:
        if stage not in self.stages or stage in self._warned:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_eval_mode(_target(pl_module, self.model), f"in a {step} step", self.action)
        if caught:
            self._warned.add(stage)
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _reset(self, stage: str) -> None:
        self._warned.discard(stage)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("validate")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("predict")

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._check(pl_module, "validate", "validation")

    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._check(pl_module, "test", "test")

    def on_predict_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._check(pl_module, "predict", "predict")


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """``(inputs, targets)`` of a batch: ``(x, y, ...)`` gives ``x`` and ``y``; a mapping gives
    its ``labels`` and the other entries as keyword inputs (a Hugging Face batch)."""
    if isinstance(batch, Mapping) and "labels" in batch:
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"MCValidation: cannot split a batch of type {type(batch).__name__} into inputs and "
        "targets; pass batch=lambda batch: (inputs, targets)"
    )


class MCValidation(pl.Callback):
    """Score the Monte Carlo predictive on the validation data at each validation epoch.

    After each validation batch the network runs :func:`dropkit.mc.predict` on the batch's
    inputs (``method="sampling"``: ``samples`` stochastic passes; ``"moments"``: one pass of
    moment propagation); at the end of the epoch the pooled predictions are scored and logged:
    ``mc_nll``, ``mc_ece`` (15 equal-width bins), ``mc_mutual_information`` (the mean) and
    ``mc_accuracy``. Under data-parallel training the predictions of all processes are
    gathered first, so every process logs the scores of the whole validation set (Lightning's
    distributed sampler pads it to a multiple of the processes with repeated inputs). The
    sanity check is skipped. :attr:`history` keeps every epoch's scores.

    Args:
        samples: passes per input (``"sampling"``) or draws from the Gaussian (``"moments"``).
        method: ``"sampling"`` or ``"moments"``.
        seed: base seed; batch ``i`` of an epoch uses ``seed + i``, so every epoch draws the
            same masks for the same batch (``None``: fresh draws).
        batch: splits a batch into ``(inputs, targets)``; default :func:`split_batch`.
        model: the network inside the ``LightningModule`` (default: the module itself, which
            then needs a ``forward``).
        output: which output to score (see :func:`dropkit.mc.predict`).
        prefix: prefix of the logged names.

    Example:
        >>> from dropkit.integrations.lightning import MCValidation
        >>> MCValidation(samples=10, method="moments").method
        'moments'
    """

    def __init__(
        self,
        samples: int = 20,
        method: str = "sampling",
        *,
        seed: int | None = 0,
        batch: BatchFn | None = None,
        model: ModelFn | None = None,
        output: Any = None,
        prefix: str = "mc_",
    ) -> None:
        check_method("MCValidation", method, samples)
        self.samples, self.method, self.seed = samples, method, seed
        self.split = batch or split_batch
        self.model, self.output, self.prefix = model, output, prefix
        self.history: list[dict[str, float]] = []
        self._scores, self._skipped = MCScores(), False

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scores, self._skipped = MCScores(), False

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        if self._skipped:
            return
        inputs, targets = self.split(batch)
        seed = None if self.seed is None else self.seed + batch_idx
        network = _target(pl_module, self.model)
        scored = mc_batch(
            network, inputs, samples=self.samples, method=self.method, seed=seed, output=self.output
        )
        if scored is None:
            self._skipped = True
            all_rates_zero_warning("MCValidation", network)
            return
        self._scores.add(*scored, targets)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._skipped:
            return
        probs, information, targets = self._scores.tensors()
        if trainer.world_size > 1:
            device = pl_module.device
            gathered = pl_module.all_gather(
                (probs.to(device), information.to(device), targets.to(device))
            )
            probs, information, targets = (t.flatten(0, 1).cpu() for t in gathered)
        result = scores(probs, information, targets)
        self.history.append(result)
        sync = trainer.world_size > 1  # gathered: equal on every process
        for name, value in result.items():
            pl_module.log(
                f"{self.prefix}{name}", value, on_step=False, on_epoch=True, sync_dist=sync
            )


class ConvertDropout(pl.Callback):
    """:func:`dropkit.convert` the network in place at setup (once per network): torch's
    dropout layers become dropkit's, with the same rates; ``functional=True`` also routes
    functional dropout through dropkit's. The conversion report is :attr:`report`.

    Example:
        >>> from dropkit.integrations.lightning import ConvertDropout
        >>> ConvertDropout(functional=True).functional
        True
    """

    def __init__(self, functional: bool = False, *, model: ModelFn | None = None) -> None:
        self.functional = functional
        self.model = model
        self.report: Any = None
        self._converted: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from dropkit import convert

        network = _target(pl_module, self.model)
        if id(network) in self._converted:
            return
        _, self.report = convert(
            network, inplace=True, functional=self.functional, return_report=True
        )
        self._converted.add(id(network))
