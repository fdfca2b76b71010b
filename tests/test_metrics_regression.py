"""Regression scores against values computed by hand, and a correct model's coverage."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from dropkit.metrics import (
    gaussian_negative_log_likelihood,
    interval_coverage,
    interval_width,
    mixture_negative_log_likelihood,
    regression_calibration_error,
    root_mean_squared_error,
)

MEAN = torch.tensor([0.0, 1.0, -2.0])
VAR = torch.tensor([1.0, 4.0, 0.25])
Y = torch.tensor([0.5, 3.0, -2.0])


def test_gaussian_nll_by_hand() -> None:
    # -log N(y; m, v) = 0.5 log(2 pi v) + (y - m)^2 / (2 v)
    terms = [
        0.5 * math.log(2 * math.pi * 1.0) + 0.25 / 2,
        0.5 * math.log(2 * math.pi * 4.0) + 4.0 / 8,
        0.5 * math.log(2 * math.pi * 0.25) + 0.0,
    ]
    assert gaussian_negative_log_likelihood(MEAN, VAR, Y) == pytest.approx(sum(terms) / 3)
    # One float variance for every target.
    one = [0.5 * math.log(2 * math.pi * 2.0) + d * d / 4 for d in (0.5, 2.0, 0.0)]
    assert gaussian_negative_log_likelihood(MEAN, 2.0, Y) == pytest.approx(sum(one) / 3)


def test_mixture_nll_by_hand_and_one_sample_is_the_gaussian() -> None:
    samples = torch.tensor([[0.0, 1.0], [1.0, 3.0], [3.0, 1.0]])  # S = 3 passes, 2 targets
    y = torch.tensor([1.0, 1.0])
    tau = 2.0  # noise variance 1/2

    def density(y: float, m: float) -> float:
        return math.sqrt(tau / (2 * math.pi)) * math.exp(-0.5 * tau * (y - m) ** 2)

    first = -math.log((density(1, 0) + density(1, 1) + density(1, 3)) / 3)
    second = -math.log((density(1, 1) + density(1, 3) + density(1, 1)) / 3)
    got = mixture_negative_log_likelihood(samples, 1 / tau, y)
    assert got == pytest.approx((first + second) / 2, rel=1e-12)
    one = mixture_negative_log_likelihood(MEAN[None], VAR[None], Y)
    assert one == pytest.approx(gaussian_negative_log_likelihood(MEAN, VAR, Y), rel=1e-12)


def test_weighted_mixture_nll_by_hand_and_equal_weights_are_the_default() -> None:
    # Two components with their own variances, one target: -log(0.9 N(0; 0, 1) + 0.1 N(0; 3, 4)).
    means = torch.tensor([[0.0], [3.0]])
    var = torch.tensor([[1.0], [4.0]])
    w = torch.tensor([0.9, 0.1], dtype=torch.float64)
    by_hand = 0.9 * math.exp(-0.0) / math.sqrt(2 * math.pi)
    by_hand += 0.1 * math.exp(-9 / 8) / math.sqrt(2 * math.pi * 4)
    got = mixture_negative_log_likelihood(means, var, torch.tensor([0.0]), weights=w)
    assert got == pytest.approx(-math.log(by_hand), rel=1e-12)
    samples = torch.tensor([[0.0, 1.0], [1.0, 3.0], [3.0, 1.0]])
    y = torch.tensor([1.0, 2.0])
    third = torch.full((3,), 1 / 3, dtype=torch.float64)
    equal = mixture_negative_log_likelihood(samples, 0.5, y, weights=third)
    assert equal == pytest.approx(mixture_negative_log_likelihood(samples, 0.5, y), rel=1e-12)
    # A weight of 0 removes its component.
    drop = mixture_negative_log_likelihood(samples, 0.5, y, weights=torch.tensor([0.5, 0.5, 0.0]))
    assert drop == pytest.approx(mixture_negative_log_likelihood(samples[:2], 0.5, y), rel=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (torch.tensor([0.5, 0.5]), r"weights of shape \(3,\)"),
        (torch.tensor([0.5, 0.2, 0.2]), "summing to 1"),
        (torch.tensor([1.2, -0.1, -0.1]), "non-negative"),
    ],
)
def test_bad_mixture_weights_name_the_problem(weights: torch.Tensor, message: str) -> None:
    samples = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=message):
        mixture_negative_log_likelihood(samples, 1.0, torch.zeros(2), weights=weights)


def test_mixture_nll_stays_finite_far_from_every_sample() -> None:
    # The densities underflow in float64 (exp(-5e6)); the log-mean-exp does not.
    samples = torch.zeros(4, 1)
    got = mixture_negative_log_likelihood(samples, 1e-3, torch.tensor([100.0]))
    expected = 0.5 * math.log(2 * math.pi * 1e-3) + 100.0**2 / (2 * 1e-3)
    assert got == pytest.approx(expected, rel=1e-12)


def test_rmse_coverage_and_width_by_hand() -> None:
    assert root_mean_squared_error(MEAN, Y) == pytest.approx(math.sqrt((0.25 + 4.0) / 3))
    # z(0.68) = 0.994458; |y - m| / sd = 0.5, 1.0, 0: the second is just outside.
    assert interval_coverage(MEAN, VAR, Y, level=0.68) == pytest.approx(2 / 3)
    assert interval_coverage(MEAN, VAR, Y, level=0.70) == 1.0  # z = 1.036
    z = stats.norm.ppf(0.975)
    assert interval_width(VAR, 0.95) == pytest.approx(2 * z * (1 + 2 + 0.5) / 3, rel=1e-12)


def test_calibration_error_by_hand() -> None:
    # Standardized errors 0.5, 1, 0; levels 1/4, 1/2, 3/4 (z = 0.319, 0.674, 1.150):
    # coverage 1/3, 2/3, 1 -> gaps 1/12, 1/6, 1/4.
    got = regression_calibration_error(MEAN, VAR, Y, levels=3)
    assert got == pytest.approx((1 / 12 + 1 / 6 + 1 / 4) / 3)


def test_correct_gaussian_is_covered_at_the_nominal_level() -> None:
    # Targets drawn from the predicted Gaussians: the number inside each central interval is
    # Binomial(n, level); a two-sided binomial test at 1e-3 per level must not reject.
    generator = torch.Generator().manual_seed(0)
    n = 5000
    mean = torch.randn(n, generator=generator, dtype=torch.float64) * 3
    var = torch.rand(n, generator=generator, dtype=torch.float64) * 4 + 0.1
    y = mean + var.sqrt() * torch.randn(n, generator=generator, dtype=torch.float64)
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        inside = round(interval_coverage(mean, var, y, level) * n)
        assert stats.binomtest(inside, n, level).pvalue > 1e-3, level
    # A model with the variances halved covers too little: the test rejects it.
    inside = round(interval_coverage(mean, var / 2, y, 0.9) * n)
    assert stats.binomtest(inside, n, 0.9).pvalue < 1e-6
    # Its NLL is the Gaussian's entropy on average: 0.5 log(2 pi e v), within 4 std errors.
    nll = gaussian_negative_log_likelihood(mean, var, y)
    entropy = float((0.5 * torch.log(2 * math.pi * math.e * var)).mean())
    assert abs(nll - entropy) < 4 * math.sqrt(0.5 / n)  # Var[(z^2 - 1) / 2] = 1/2
    assert regression_calibration_error(mean, var, y) < 0.02


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gaussian_negative_log_likelihood(MEAN, 0.0, Y), "must be positive"),
        (lambda: gaussian_negative_log_likelihood(MEAN, VAR, Y[:2]), "shape"),
        (lambda: gaussian_negative_log_likelihood(MEAN, torch.ones(2), Y), "broadcastable"),
        (lambda: mixture_negative_log_likelihood(MEAN, 1.0, Y), r"shape \(\)"),
        (lambda: interval_coverage(MEAN, VAR, Y, level=1.0), "level in"),
        (lambda: interval_width(-1.0), "positive"),
        (lambda: root_mean_squared_error(MEAN, Y[:1]), "shape"),
        (lambda: regression_calibration_error(MEAN, VAR, Y, levels=0), "levels"),
    ],
)
def test_bad_input_names_the_problem(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
