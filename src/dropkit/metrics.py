"""Uncertainty and calibration scores, for :class:`dropkit.mc.MCResult` and any predictions.

Classification (``[N, C]`` probabilities): equal-width expected calibration error and AUROC
come from torchmetrics; what it lacks (adaptive, equal-mass ECE; multiclass Brier score) is
written here.

Regression (a predictive mean and variance per target): the Gaussian negative log-likelihood,
the negative log-likelihood of a mixture of Gaussians (Monte Carlo samples, as in Gal &
Ghahramani's code), RMSE (torchmetrics), and the coverage and width of central intervals and
the calibration error over their levels (calibration for regression). torchmetrics has no
Gaussian likelihood or interval score; torch's ``gaussian_nll_loss`` clamps small variances
without saying so, so the likelihoods are computed here, in float64, and refuse a variance that
is not positive.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "brier_score",
    "check_torchmetrics",
    "expected_calibration_error",
    "gaussian_negative_log_likelihood",
    "interval_coverage",
    "interval_width",
    "misclassification_auroc",
    "mixture_negative_log_likelihood",
    "negative_log_likelihood",
    "ood_auroc",
    "regression_calibration_error",
    "root_mean_squared_error",
]


def _check(name: str, probs: torch.Tensor, targets: torch.Tensor) -> None:
    if probs.dim() != 2:
        raise ValueError(f"{name}: expected probs of shape [N, C], got {tuple(probs.shape)}")
    if targets.shape != probs.shape[:1]:
        raise ValueError(
            f"{name}: expected targets of shape [{probs.shape[0]}], got {tuple(targets.shape)}"
        )
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name}: expected integer class targets, got {targets.dtype}")


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, *, bins: int = 15, adaptive: bool = False
) -> float:
    """Expected calibration error of the top-class confidence (Guo et al. 2017,
    https://arxiv.org/abs/1706.04599).

    Args:
        probs: ``[N, C]`` predicted probabilities.
        targets: ``[N]`` true classes.
        bins: number of confidence bins (15 by convention).
        adaptive: equal-mass bins (each holds ~N/bins predictions; Nguyen & O'Connor 2015)
            instead of equal-width ones.

    Example:
        >>> import torch
        >>> from dropkit.metrics import expected_calibration_error
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1])), 4)
        0.35
    """
    _check("expected_calibration_error", probs, targets)
    if not adaptive:
        ece = _classification().multiclass_calibration_error(
            probs.float(), targets.long(), num_classes=probs.shape[1], n_bins=bins, norm="l1"
        )
        return float(ece)
    confidence, predicted = probs.float().max(1)
    correct = (predicted == targets).float()
    order = confidence.argsort()
    total = 0.0
    for chunk in torch.tensor_split(order, bins):
        if chunk.numel():
            gap = (confidence[chunk].mean() - correct[chunk].mean()).abs().item()
            total += gap * chunk.numel()
    return total / len(targets)


def negative_log_likelihood(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean ``-log p(true class)``; probabilities are clamped at 1e-12.

    Example:
        >>> import torch
        >>> from dropkit.metrics import negative_log_likelihood
        >>> round(negative_log_likelihood(torch.tensor([[0.5, 0.5]]), torch.tensor([0])), 4)
        0.6931
    """
    _check("negative_log_likelihood", probs, targets)
    picked = probs.double().gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return float(-torch.log(picked.clamp_min(1e-12)).mean())


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over inputs of ``sum_c (p_c - [c == target])^2`` (Brier 1950), in [0, 2].

    Example:
        >>> import torch
        >>> from dropkit.metrics import brier_score
        >>> brier_score(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 0]))
        0.25
    """
    _check("brier_score", probs, targets)
    onehot = torch.nn.functional.one_hot(targets.long(), probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(1).mean())


def check_torchmetrics() -> None:
    """Raise the error of :func:`_classification` now, before hours of training need it."""
    _classification()


def _classification() -> Any:
    """``torchmetrics.functional.classification``, or an error that says why it cannot load."""
    return _torchmetrics("classification")


def _torchmetrics(part: str) -> Any:
    """``torchmetrics.functional.<part>``, or an error that says why it cannot load.

    torchmetrics imports torchvision whenever it is installed; a torchvision built for another
    torch (PyPI's CUDA wheel beside the CPU build of torch) fails on import with ``operator
    torchvision::nms does not exist``, which would otherwise surface as that bare traceback.
    """
    import importlib

    try:
        module = importlib.import_module(f"torchmetrics.functional.{part}")
    except RuntimeError as error:
        if "torchvision" not in str(error):
            raise
        import importlib.metadata

        version = importlib.metadata.version("torchvision")
        raise RuntimeError(
            f"dropkit.metrics: torchmetrics cannot be imported because the installed "
            f"torchvision {version} does not load with torch {torch.__version__} ({error}). "
            "It was built for another torch build: install the torchvision that matches this "
            "torch (from the same index), or uninstall torchvision."
        ) from error
    return module


def _binary_auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    binary_auroc = _classification().binary_auroc
    if positives.all() or not positives.any():
        return float("nan")  # undefined with a single class
    return float(binary_auroc(scores.double(), positives.long()))


def misclassification_auroc(
    probs: torch.Tensor, targets: torch.Tensor, uncertainty: torch.Tensor
) -> float:
    """How well ``uncertainty`` ranks wrong predictions above right ones: AUROC with the
    misclassified inputs as positives (NaN when all are right or all wrong).

    Example:
        >>> import torch
        >>> from dropkit.metrics import misclassification_auroc
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> misclassification_auroc(probs, torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.9, 0.5]))
        1.0
    """
    _check("misclassification_auroc", probs, targets)
    wrong = probs.argmax(1) != targets
    return _binary_auroc(uncertainty.flatten(), wrong)


def ood_auroc(uncertainty_in: torch.Tensor, uncertainty_out: torch.Tensor) -> float:
    """How well an uncertainty score separates out-of-distribution inputs (positives) from
    in-distribution ones: AUROC.

    Example:
        >>> import torch
        >>> from dropkit.metrics import ood_auroc
        >>> ood_auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.15]))
        0.75
    """
    scores = torch.cat([uncertainty_in.flatten(), uncertainty_out.flatten()])
    labels = torch.cat([torch.zeros(uncertainty_in.numel()), torch.ones(uncertainty_out.numel())])
    return _binary_auroc(scores, labels.bool())


# ------------------------------------------------------------------ regression


def _check_gaussian(
    name: str, mean: torch.Tensor, variance: torch.Tensor | float, targets: torch.Tensor
) -> torch.Tensor:
    """``variance`` as a float64 tensor of ``mean``'s shape, after checking all three."""
    if mean.shape != targets.shape:
        raise ValueError(
            f"{name}: expected targets of the predictions' shape {tuple(mean.shape)}, got "
            f"{tuple(targets.shape)}"
        )
    if mean.numel() == 0:
        raise ValueError(f"{name}: expected at least one prediction, got none")
    var = torch.as_tensor(variance, dtype=torch.float64, device=mean.device)
    try:
        var = var.expand(mean.shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: expected a variance broadcastable to the predictions' shape "
            f"{tuple(mean.shape)}, got {tuple(var.shape)}"
        ) from None
    if not bool((var > 0).all()):
        raise ValueError(
            f"{name}: every variance must be positive, got a minimum of {float(var.min()):g}; "
            "add the observation noise (1 / tau) to the model's variance"
        )
    return var


def _gaussian_log_density(
    mean: torch.Tensor, variance: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    d = targets.double() - mean.double()
    return -0.5 * (math.log(2 * math.pi) + variance.log() + d * d / variance)


def gaussian_negative_log_likelihood(
    mean: torch.Tensor, variance: torch.Tensor | float, targets: torch.Tensor
) -> float:
    """Mean over targets of ``-log N(target; mean, variance)``, in nats.

    Args:
        mean: the predictive means, any shape.
        variance: the predictive variances (the model's plus the observation noise), of
            ``mean``'s shape or broadcastable to it (a float: one variance for all).
        targets: the true values, of ``mean``'s shape.

    Example:
        >>> import torch
        >>> from dropkit.metrics import gaussian_negative_log_likelihood
        >>> round(gaussian_negative_log_likelihood(torch.zeros(2), 1.0, torch.tensor([0., 2.])), 4)
        1.9189
    """
    var = _check_gaussian("gaussian_negative_log_likelihood", mean, variance, targets)
    return float(-_gaussian_log_density(mean, var, targets).mean())


def mixture_negative_log_likelihood(
    sample_means: torch.Tensor,
    variance: torch.Tensor | float,
    targets: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
) -> float:
    """Mean over targets of ``-log (1/S) sum_s N(target; sample_means[s], variance[s])``.

    The predictive likelihood of Monte Carlo dropout: each of the S stochastic passes is one
    Gaussian with the observation noise as its variance, and the predictive density is their
    average (a log-mean-exp over samples, as in the code of Gal & Ghahramani, "Dropout as a
    Bayesian Approximation", https://arxiv.org/abs/1506.02142). With ``weights`` the
    components are weighted instead of equal: ``-log sum_s weights[s] N(...)``, for mixtures
    whose components are not draws but enumerated cases with known probabilities (e.g. every
    dropout mask of a few inputs, each with its Gaussian from moment propagation).

    Args:
        sample_means: ``[S, ...]`` the S passes' predictions.
        variance: the observation noise variance, ``[S, ...]`` (a heteroscedastic head's, per
            pass) or broadcastable to it (a float: ``1 / tau``); for enumerated components,
            each one's whole predictive variance.
        targets: ``[...]`` the true values.
        weights: ``[S]`` the components' probabilities, non-negative and summing to 1.
            Default: ``1 / S`` each.

    Example:
        >>> import torch
        >>> from dropkit.metrics import mixture_negative_log_likelihood
        >>> samples = torch.tensor([[0.0], [2.0]])  # two passes, one target
        >>> round(mixture_negative_log_likelihood(samples, 1.0, torch.tensor([1.0])), 4)
        1.4189
        >>> weights = torch.tensor([0.75, 0.25], dtype=torch.float64)  # enumerated cases
        >>> round(mixture_negative_log_likelihood(samples, 1.0, torch.zeros(1), weights=weights), 4)
        1.1625
    """
    name = "mixture_negative_log_likelihood"
    if sample_means.dim() < 1 or sample_means.shape[0] == 0:
        raise ValueError(f"{name}: expected sample_means of shape [S, ...] with S >= 1")
    if sample_means.shape[1:] != targets.shape:
        raise ValueError(
            f"{name}: expected targets of shape {tuple(sample_means.shape[1:])} (sample_means "
            f"without its first, samples dim), got {tuple(targets.shape)}"
        )
    var = _check_gaussian(name, sample_means, variance, targets.expand(sample_means.shape))
    log_density = _gaussian_log_density(sample_means, var, targets)
    s = sample_means.shape[0]
    if weights is None:
        return float(-(torch.logsumexp(log_density, 0) - math.log(s)).mean())
    w = weights.detach().to(dtype=torch.float64, device=sample_means.device)
    if w.shape != (s,):
        raise ValueError(
            f"{name}: expected weights of shape ({s},) (one per component of sample_means), "
            f"got {tuple(w.shape)}"
        )
    total = float(w.sum())
    # A float32 sum of many small weights is off by a few float32 ulps times S.
    if not (bool((w >= 0).all()) and abs(total - 1.0) <= 1e-6 + s * 1e-7):
        raise ValueError(
            f"{name}: expected non-negative weights summing to 1, got a minimum of "
            f"{float(w.min()):g} and a sum of {total:.9g}; divide them by their sum"
        )
    log_w = w.log().reshape((s,) + (1,) * (log_density.dim() - 1))
    return float(-torch.logsumexp(log_density + log_w, 0).mean())


def root_mean_squared_error(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """``sqrt(mean((predictions - targets)^2))`` over all targets (torchmetrics' RMSE).

    Example:
        >>> import torch
        >>> from dropkit.metrics import root_mean_squared_error
        >>> root_mean_squared_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        1.4142135623730951
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"root_mean_squared_error: expected targets of the predictions' shape "
            f"{tuple(predictions.shape)}, got {tuple(targets.shape)}"
        )
    mse = _torchmetrics("regression").mean_squared_error(
        predictions.double().flatten(), targets.double().flatten()
    )
    return math.sqrt(float(mse))


def _z(level: float, name: str) -> float:
    """The standard normal quantile that bounds a central interval of probability ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name}: expected level in (0, 1), got {level!r}")
    return float(torch.special.ndtri(torch.tensor(0.5 + level / 2, dtype=torch.float64)))


def interval_coverage(
    mean: torch.Tensor, variance: torch.Tensor | float, targets: torch.Tensor, level: float = 0.95
) -> float:
    """The fraction of targets inside the central ``level`` interval of ``N(mean, variance)``.

    A calibrated model covers ``level`` of the targets (within the binomial error of their
    number); above it, its intervals are too wide, below it, too narrow.

    Example:
        >>> import torch
        >>> from dropkit.metrics import interval_coverage
        >>> interval_coverage(torch.zeros(4), 1.0, torch.tensor([0.5, -1.0, 1.5, 3.0]))
        0.75
    """
    var = _check_gaussian("interval_coverage", mean, variance, targets)
    half = _z(level, "interval_coverage") * var.sqrt()
    inside = (targets.double() - mean.double()).abs() <= half
    return float(inside.double().mean())


def interval_width(variance: torch.Tensor | float, level: float = 0.95) -> float:
    """The mean width of the central ``level`` intervals of Gaussians with these variances.

    Example:
        >>> from dropkit.metrics import interval_width
        >>> round(interval_width(1.0, 0.95), 4)
        3.9199
    """
    var = torch.as_tensor(variance, dtype=torch.float64)
    if var.numel() == 0 or not bool((var > 0).all()):
        raise ValueError("interval_width: expected positive variances")
    return float((2 * _z(level, "interval_width") * var.sqrt()).mean())


def regression_calibration_error(
    mean: torch.Tensor,
    variance: torch.Tensor | float,
    targets: torch.Tensor,
    levels: int = 19,
) -> float:
    """Mean over levels ``1/(levels+1), ..., levels/(levels+1)`` of ``|coverage - level|``.

    The regression counterpart of the ECE: how far the central intervals' coverage is from
    their nominal level, averaged over levels 0.05 to 0.95 by default (after Kuleshov, Fenner &
    Ermon, "Accurate Uncertainties for Deep Learning Using Calibrated Regression",
    https://arxiv.org/abs/1807.00263, with central intervals).

    Example:
        >>> import torch
        >>> from dropkit.metrics import regression_calibration_error
        >>> y = torch.tensor([0.0, 0.0, 0.0, 0.0])  # always at the mean: every interval covers
        >>> round(regression_calibration_error(torch.zeros(4), 1.0, y, levels=3), 4)
        0.5
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"regression_calibration_error: expected levels >= 1, got {levels!r}")
    var = _check_gaussian("regression_calibration_error", mean, variance, targets)
    z = (targets.double() - mean.double()).abs() / var.sqrt()
    gaps = []
    for i in range(1, levels + 1):
        level = i / (levels + 1)
        covered = float((z <= _z(level, "regression_calibration_error")).double().mean())
        gaps.append(abs(covered - level))
    return math.fsum(gaps) / levels
