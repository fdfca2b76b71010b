"""Uncertainty and calibration scores for classifiers (for :class:`dropkit.mc.MCResult` and any
``[N, C]`` probabilities).

Equal-width expected calibration error and AUROC come from torchmetrics; what it lacks
(adaptive, equal-mass ECE; multiclass Brier score) is written here.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "brier_score",
    "check_torchmetrics",
    "expected_calibration_error",
    "misclassification_auroc",
    "negative_log_likelihood",
    "ood_auroc",
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
    """``torchmetrics.functional.classification``, or an error that says why it cannot load.

    torchmetrics imports torchvision whenever it is installed; a torchvision built for another
    torch (PyPI's CUDA wheel beside the CPU build of torch) fails on import with ``operator
    torchvision::nms does not exist``, which would otherwise surface as that bare traceback.
    """
    try:
        import torchmetrics.functional.classification as classification
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
    return classification


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
