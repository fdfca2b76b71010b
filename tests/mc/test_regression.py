"""``MCResult.regression`` (sampling and moments): the predictive distribution with noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dropkit import mc
from dropkit.mc import MCResult, MomentResult


def _density(y: float, m: float, var: float) -> float:
    return math.exp(-0.5 * (y - m) ** 2 / var) / math.sqrt(2 * math.pi * var)


def test_sampling_is_the_mixture_of_the_passes_by_hand() -> None:
    samples = torch.tensor([[[0.0], [1.0]], [[2.0], [1.0]], [[1.0], [4.0]]])  # S=3, N=2, 1 out
    result = MCResult(samples, "test")
    y = torch.tensor([1.0, 2.0])
    pred = result.regression(tau=2.0, scale=3.0, shift=10.0)  # units: 10 + 3 * output
    means = 10 + 3 * samples[..., 0].double()  # [[10, 13], [16, 13], [13, 22]]
    assert torch.allclose(pred.mean[:, 0], means.mean(0))
    assert torch.allclose(pred.model_variance[:, 0], means.var(0, unbiased=False))
    assert torch.allclose(pred.variance[:, 0], means.var(0, unbiased=False) + 0.5)
    targets = 10 + 3 * y.double()
    expected = 0.0
    for n in range(2):
        mix = sum(_density(float(targets[n]), float(means[s, n]), 0.5) for s in range(3)) / 3
        expected += math.log(mix) / 2
    assert pred.log_likelihood(targets) == pytest.approx(expected, rel=1e-12)
    rmse = math.sqrt(float(((means.mean(0) - targets) ** 2).mean()))
    assert pred.rmse(targets) == pytest.approx(rmse, rel=1e-12)
    low, high = pred.interval(0.5)
    half = 0.6744897501960817 * pred.variance.sqrt()
    assert torch.allclose(high - low, 2 * half)
    assert pred.width(0.5) == pytest.approx(float(2 * half.mean()), rel=1e-12)


def test_moments_are_the_gaussian_and_exact_for_dropout_then_linear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.3), nn.Linear(40, 1))
    x = torch.randn(6, 40)
    y = torch.randn(6)
    moments = mc.predict(model, x, 1, method="moments", seed=0)
    assert isinstance(moments, MomentResult)
    pred = moments.regression(tau=5.0)
    # Dropout then linear: Var[y] = sum_i w_i^2 x_i^2 p / (1 - p), exactly.
    w = model[1].weight.detach()[0]
    exact = (w**2 * x**2).sum(1) * 0.3 / 0.7
    assert torch.allclose(pred.model_variance[:, 0], exact.double(), rtol=1e-5)
    var = pred.variance[:, 0]
    nll = (0.5 * torch.log(2 * math.pi * var) + (y - pred.mean[:, 0]) ** 2 / (2 * var)).mean()
    assert pred.log_likelihood(y) == pytest.approx(-float(nll), rel=1e-9)
    # MC with many passes agrees with it, within its own sampling error.
    sampled = mc.predict(model, x, 20_000, seed=0).regression(tau=5.0)
    se = (exact.double() * math.sqrt(2 / 20_000)) * 4 + 1e-6
    assert ((sampled.model_variance[:, 0] - exact.double()).abs() <= se).all()


def test_heteroscedastic_heads_noise_per_pass_and_log_normal_for_moments() -> None:
    torch.manual_seed(1)
    # Output 0 has dropout upstream; output 1 (the log-variance) is a fixed linear map.
    head = nn.Linear(8, 2)
    with torch.no_grad():
        head.weight[1].zero_()
        head.bias[1] = math.log(0.25)
    model = nn.Sequential(nn.Dropout(0.5), head)
    x = torch.randn(5, 8)
    sampled = mc.predict(model, x, 50, seed=0).regression(heteroscedastic=True, scale=2.0)
    assert sampled.mean.shape == (5,)
    assert torch.allclose(sampled.noise_variance, torch.full((5,), 4 * 0.25, dtype=torch.float64))
    moments = mc.predict(model, x, 1, method="moments").regression(heteroscedastic=True)
    assert torch.allclose(moments.noise_variance, torch.full((5,), 0.25, dtype=torch.float64))
    # The log-normal mean where the log-variance is uncertain: exp(m + v / 2).
    result = MomentResult(
        torch.zeros(1, 1, 2), "moments", torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.5]])
    )
    noise = result.regression(heteroscedastic=True).noise_variance
    assert float(noise[0]) == pytest.approx(math.exp(1.25))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"tau": 1.0, "heteroscedastic": True}, "exactly one"),
        ({"tau": 0.0}, "positive finite"),
        ({"tau": math.inf}, "positive finite"),
        ({"heteroscedastic": True}, "size 2"),
        ({"tau": 1.0, "scale": -1.0}, "scale"),
    ],
)
def test_bad_noise_options_name_the_fix(kwargs, message) -> None:
    result = MCResult(torch.zeros(4, 3, 1), "test")
    with pytest.raises(ValueError, match=message):
        result.regression(**kwargs)


def test_targets_of_another_shape_are_refused() -> None:
    pred = MCResult(torch.randn(4, 3, 2), "test").regression(tau=1.0)
    with pytest.raises(ValueError, match=r"expected targets of shape \(3, 2\)"):
        pred.rmse(torch.zeros(3))
