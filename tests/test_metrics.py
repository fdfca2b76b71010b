"""Calibration and uncertainty scores against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dropkit.metrics import (
    brier_score,
    expected_calibration_error,
    misclassification_auroc,
    negative_log_likelihood,
    ood_auroc,
)

PROBS = torch.tensor([[0.95, 0.05], [0.70, 0.30], [0.40, 0.60], [0.20, 0.80]])
TARGETS = torch.tensor([0, 1, 1, 1])  # predictions 0, 0, 1, 1: the second is wrong


def test_ece_equal_width_by_hand() -> None:
    # Confidences 0.95, 0.70, 0.60, 0.80 each fall in their own 1/15-wide bin:
    # ECE = mean |confidence - correct| = (0.05 + 0.70 + 0.40 + 0.20) / 4.
    assert expected_calibration_error(PROBS, TARGETS) == pytest.approx(1.35 / 4, abs=1e-6)


def test_ece_adaptive_by_hand() -> None:
    # Two equal-mass bins over sorted confidences [0.60, 0.70 | 0.80, 0.95]:
    # |0.65 - 0.5| * 2 + |0.875 - 1.0| * 2, over 4.
    expected = (0.15 * 2 + 0.125 * 2) / 4
    assert expected_calibration_error(PROBS, TARGETS, bins=2, adaptive=True) == pytest.approx(
        expected, abs=1e-6
    )


def test_nll_and_brier_by_hand() -> None:
    nll = -(math.log(0.95) + math.log(0.30) + math.log(0.60) + math.log(0.80)) / 4
    assert negative_log_likelihood(PROBS, TARGETS) == pytest.approx(nll)
    brier = (2 * 0.05**2 + 2 * 0.70**2 + 2 * 0.40**2 + 2 * 0.20**2) / 4
    assert brier_score(PROBS, TARGETS) == pytest.approx(brier)
    assert negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(
        -math.log(1e-12)
    )


def test_auroc_scores() -> None:
    # The wrong prediction (index 1) gets the highest uncertainty: perfect ranking.
    assert misclassification_auroc(PROBS, TARGETS, torch.tensor([0.1, 0.9, 0.5, 0.3])) == 1.0
    assert misclassification_auroc(PROBS, TARGETS, torch.tensor([0.9, 0.0, 0.5, 0.3])) == 0.0
    assert math.isnan(misclassification_auroc(PROBS, PROBS.argmax(1), torch.rand(4)))
    assert ood_auroc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.4, 0.5])) == 1.0
    assert ood_auroc(torch.tensor([0.1, 0.4]), torch.tensor([0.2, 0.3])) == 0.5


def test_bad_shapes_and_types() -> None:
    with pytest.raises(ValueError, match=r"expected probs of shape \[N, C\]"):
        brier_score(torch.rand(4), TARGETS)
    with pytest.raises(ValueError, match=r"expected targets of shape \[4\]"):
        negative_log_likelihood(PROBS, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer class targets"):
        expected_calibration_error(PROBS, TARGETS.float())


def test_mc_scores_on_a_real_prediction() -> None:
    from dropkit.mc import predict

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 3)
    )
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    result = predict(model, x, samples=16, seed=0)
    for value in (
        expected_calibration_error(result.probs, y),
        negative_log_likelihood(result.probs, y),
        brier_score(result.probs, y),
    ):
        assert math.isfinite(value)
        assert value >= 0
    auroc = misclassification_auroc(result.probs, y, result.mutual_information)
    assert 0.0 <= auroc <= 1.0
