"""The regression task of a comparison (``--task regression``): its loss and its scores.

The model has one output per input and learns standardized targets by squared error; every
score is reported in the targets' own units (the data set's ``target_mean + target_std * y``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit.experiments.datasets import Dataset
from dropkit.experiments.results import RegressionScores

__all__ = ["COVERAGE_LEVEL", "predictions", "regression_scores", "squared_error"]

#: The level of the central intervals whose coverage and width the report shows.
COVERAGE_LEVEL = 0.95


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a one-output model's ``[N, 1]`` (or ``[N]``) outputs."""
    if outputs.dim() == 2 and outputs.shape[1] != 1:
        raise ValueError(
            f"--task regression: the model returns {outputs.shape[1]} outputs per input; a "
            "regression model returns one (its last layer nn.Linear(..., 1))"
        )
    return torch_F.mse_loss(outputs.reshape(targets.shape), targets)


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """``[N]`` the model's eval-mode predictions on ``x`` (standardized units)."""
    model.eval()
    return torch.cat([model(x[i : i + batch]).reshape(-1) for i in range(0, len(x), batch)])


def regression_scores(model: nn.Module, data: Dataset) -> tuple[float, RegressionScores]:
    """``(test NLL, scores)`` of a trained model, in the targets' units (see
    :class:`~dropkit.experiments.results.RegressionScores`)."""
    from dropkit import metrics

    std = data.target_std

    def rmse(x: torch.Tensor, y: torch.Tensor) -> float:
        return std * metrics.root_mean_squared_error(predictions(model, x).double(), y.double())

    val_rmse = rmse(data.x_val, data.y_val)
    mean = data.target_mean + std * predictions(model, data.x_test).double()
    target = data.target_mean + std * data.y_test.double()
    noise = max(val_rmse, math.ulp(std)) ** 2  # a positive variance even for a perfect fit
    scores = RegressionScores(
        train_rmse=rmse(data.x_train, data.y_train),
        val_rmse=val_rmse,
        test_rmse=metrics.root_mean_squared_error(mean, target),
        noise_std=math.sqrt(noise),
        coverage=metrics.interval_coverage(mean, noise, target, COVERAGE_LEVEL),
        width=metrics.interval_width(noise, COVERAGE_LEVEL),
        calibration_error=metrics.regression_calibration_error(mean, noise, target),
    )
    return metrics.gaussian_negative_log_likelihood(mean, noise, target), scores
