"""What a training run leaves: its metrics by epoch and its final scores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["EpochMetrics", "RegressionScores", "RunResult"]


@dataclass(frozen=True)
class RegressionScores:
    """A regression run's test scores, in the targets' units (the data set's, not the
    standardized ones the model was trained on).

    The network is deterministic in eval mode; its predictive distribution is the Gaussian with
    its prediction as the mean and one noise variance for every target, ``noise_std ** 2``:
    the mean squared error on the validation split (the maximum-likelihood choice there).
    ``test_nll`` (in :class:`RunResult`) is that Gaussian's; ``coverage`` and ``width`` are of
    its central 95% intervals on the test set; ``calibration_error`` is
    :func:`dropkit.metrics.regression_calibration_error` over levels 0.05 to 0.95.
    """

    train_rmse: float
    val_rmse: float
    test_rmse: float
    noise_std: float
    coverage: float
    width: float
    calibration_error: float

    @property
    def gap(self) -> float:
        """Test minus train RMSE: how much worse the model does on unseen data."""
        return self.test_rmse - self.train_rmse


@dataclass
class EpochMetrics:
    epoch: int
    rate: float  # the rate in force this epoch (schedules change it)
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    #: A learned-rate run's rate of each concrete dropout layer after the epoch (forward
    #: order); None for a run at a fixed rate, whose ``rate`` says it all.
    layer_rates: list[float] | None = None


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
    #: A learned-rate run (``--rates auto``): each concrete layer's final rate, and ``rate``
    #: their mean; None for a run at a fixed rate.
    layer_rates: list[float] | None = None
    #: A regression run's scores (``--task regression``); its accuracies are then NaN and
    #: ``test_nll`` is the Gaussian's (see :class:`RegressionScores`). None for classification.
    regression: RegressionScores | None = None

    @property
    def gap(self) -> float:
        return self.train_acc - self.test_acc

    @property
    def learned(self) -> bool:
        """A learned-rate run (Concrete dropout), not a run at a fixed rate."""
        return self.layer_rates is not None

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(dataclasses.replace(self, model_state=None))
        del data["model_state"]
        if self.layer_rates is None:  # fixed-rate runs keep the keys they always had
            del data["layer_rates"]
            for epoch in data["history"]:
                del epoch["layer_rates"]
        if self.regression is None:
            del data["regression"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        fields = dict(data)
        history = [EpochMetrics(**e) for e in fields.pop("history", [])]
        if fields.get("regression") is not None:
            fields["regression"] = RegressionScores(**fields["regression"])
        return cls(**fields, history=history)
