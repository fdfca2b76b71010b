"""``dropkit mc`` on a regression comparison: deterministic vs MC dropout vs moments.

Each method's predictive distribution is scored on the test set in the targets' units: the
RMSE of its mean, its negative log-likelihood (MC: the mixture of the S passes' Gaussians,
moments: the propagated Gaussian, deterministic: one Gaussian around the prediction), and the
coverage and width of its central 95% intervals. The observation noise, one variance for every
target (homoscedastic), is chosen on the validation split for each method: the deterministic
network's is its validation MSE (the maximum-likelihood value); MC's and the moments' is the
value on a grid (the method's validation RMSE times ``2 ** (k / 4)``, ``k = -16 .. 4``) with the
highest validation log-likelihood of that method, as Gal & Ghahramani choose ``tau``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dropkit.experiments.datasets import Dataset
from dropkit.experiments.regression import COVERAGE_LEVEL, predictions
from dropkit.metrics import (
    gaussian_negative_log_likelihood,
    interval_coverage,
    interval_width,
    regression_calibration_error,
    root_mean_squared_error,
)

if TYPE_CHECKING:
    from dropkit.mc import MCResult

__all__ = ["NOISE_GRID", "best_tau", "regression_scores"]

#: The noise standard deviations tried, as multiples of the method's validation RMSE.
NOISE_GRID = tuple(2.0 ** (k / 4) for k in range(-16, 5))


def best_tau(result: MCResult, targets: torch.Tensor, scale: float, shift: float) -> float:
    """The noise precision on :data:`NOISE_GRID` with the highest log-likelihood of ``targets``
    (in the targets' units) under ``result``'s predictive distribution."""
    base = result.regression(tau=1.0, scale=scale, shift=shift).rmse(targets)
    base = max(base, math.ulp(scale))
    taus = [1.0 / (base * f) ** 2 for f in NOISE_GRID]
    lls = [result.regression(tau=t, scale=scale, shift=shift).log_likelihood(targets) for t in taus]
    return float(taus[max(range(len(taus)), key=lambda i: lls[i])])


def regression_scores(
    model: nn.Module,
    data: Dataset,
    *,
    samples: int,
    batch_size: int | None,
    kinds: tuple[str, ...],
) -> list[tuple[str, float, dict[str, float]]]:
    """``(method, seconds, scores)`` for the deterministic network and each of ``kinds``."""
    from dropkit.mc import predict

    scale, shift = data.target_std, data.target_mean
    val = shift + scale * data.y_val.double()
    test = shift + scale * data.y_test.double()
    start = time.perf_counter()
    mean = shift + scale * predictions(model, data.x_test).double()
    seconds = time.perf_counter() - start
    noise = max(scale * root_mean_squared_error(predictions(model, data.x_val), data.y_val), 1e-12)
    rows = [("deterministic", seconds, _deterministic(mean, noise**2, test))]
    for kind in kinds:
        start = time.perf_counter()
        result = predict(model, data.x_test, samples, batch_size=batch_size, seed=0, method=kind)
        seconds = time.perf_counter() - start
        on_val = predict(model, data.x_val, samples, batch_size=batch_size, seed=1, method=kind)
        tau = best_tau(on_val, val, scale, shift)
        prediction = result.regression(tau=tau, scale=scale, shift=shift)
        scores = {
            "rmse": prediction.rmse(test),
            "nll": prediction.negative_log_likelihood(test),
            "coverage": prediction.coverage(test, COVERAGE_LEVEL),
            "width": prediction.width(COVERAGE_LEVEL),
            "calibration": prediction.calibration_error(test),
            "noise_std": 1.0 / math.sqrt(tau),
        }
        label = f"MC ({samples} samples)" if kind == "sampling" else "moments (one pass)"
        rows.append((label, seconds, scores))
    return rows


def _deterministic(mean: torch.Tensor, noise_var: float, targets: torch.Tensor) -> dict[str, Any]:
    """The scores of one Gaussian per target around the eval-mode prediction."""
    return {
        "rmse": root_mean_squared_error(mean, targets),
        "nll": gaussian_negative_log_likelihood(mean, noise_var, targets),
        "coverage": interval_coverage(mean, noise_var, targets, COVERAGE_LEVEL),
        "width": interval_width(noise_var, COVERAGE_LEVEL),
        "calibration": regression_calibration_error(mean, noise_var, targets),
        "noise_std": math.sqrt(noise_var),
    }
