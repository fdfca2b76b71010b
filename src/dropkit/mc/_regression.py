"""Regression outputs of MC dropout: the predictive Gaussian with an observation-noise term.

A regression network under MC dropout predicts a distribution over each target: the spread
of its outputs over dropout masks (the model's, epistemic variance) plus the observation noise
(aleatoric), either one precision ``tau`` for every target (homoscedastic, as in Gal &
Ghahramani's UCI experiments) or a second output of the network, its log-variance
(heteroscedastic, as in Kendall & Gal, "What Uncertainties Do We Need in Bayesian Deep Learning
for Computer Vision?", https://arxiv.org/abs/1703.04977).

From Monte Carlo samples the predictive density is the mixture of the S passes' Gaussians: its
log-likelihood is a log-mean-exp over samples (Gal & Ghahramani's code). From moment
propagation it is the one Gaussian whose mean and variance were propagated. Central intervals
are those of the Gaussian with the predictive mean and variance in both cases (for samples:
the mixture's first two moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dropkit import metrics

__all__ = ["RegressionPrediction", "from_moments", "from_samples"]


@dataclass(frozen=True)
class RegressionPrediction:
    """The predictive distribution of a regression model under MC dropout, per target.

    Everything is in the units of the targets it is scored against (see ``scale`` and
    ``shift`` of :meth:`dropkit.mc.MCResult.regression`).

    ``mean``, ``model_variance`` (epistemic) and ``noise_variance`` (aleatoric) are ``[N, ...]``;
    :attr:`variance` is their sum. ``sample_means`` and ``sample_noise`` (``[S, N, ...]``) are
    the Monte Carlo passes' predictions and noise variances, from which the log-likelihood is
    the mixture's; for moment propagation they are None and it is the Gaussian's.
    """

    mean: torch.Tensor
    model_variance: torch.Tensor
    noise_variance: torch.Tensor
    method: str
    sample_means: torch.Tensor | None = None
    sample_noise: torch.Tensor | None = None

    @property
    def variance(self) -> torch.Tensor:
        """``[N, ...]`` the predictive variance: the model's plus the observation noise."""
        return self.model_variance + self.noise_variance

    def log_likelihood(self, targets: torch.Tensor) -> float:
        """Mean over targets of the predictive log-density of ``targets``, in nats (higher is
        better): the mixture's for samples (log-mean-exp), the Gaussian's for moments."""
        return -self.negative_log_likelihood(targets)

    def negative_log_likelihood(self, targets: torch.Tensor) -> float:
        """Minus :meth:`log_likelihood`."""
        targets = self._targets(targets)
        if self.sample_means is not None and self.sample_noise is not None:
            return metrics.mixture_negative_log_likelihood(
                self.sample_means, self.sample_noise, targets
            )
        return metrics.gaussian_negative_log_likelihood(self.mean, self.variance, targets)

    def rmse(self, targets: torch.Tensor) -> float:
        """The root mean squared error of the predictive mean."""
        return metrics.root_mean_squared_error(self.mean, self._targets(targets))

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, each ``[N, ...]``: the central ``level`` interval of each target."""
        half = metrics._z(level, "interval") * self.variance.double().sqrt()
        return self.mean.double() - half, self.mean.double() + half

    def coverage(self, targets: torch.Tensor, level: float = 0.95) -> float:
        """The fraction of ``targets`` inside their central ``level`` interval."""
        return metrics.interval_coverage(self.mean, self.variance, self._targets(targets), level)

    def width(self, level: float = 0.95) -> float:
        """The mean width of the central ``level`` intervals."""
        return metrics.interval_width(self.variance, level)

    def calibration_error(self, targets: torch.Tensor) -> float:
        """:func:`dropkit.metrics.regression_calibration_error` of the predictive Gaussians."""
        return metrics.regression_calibration_error(
            self.mean, self.variance, self._targets(targets)
        )

    def _targets(self, targets: torch.Tensor) -> torch.Tensor:
        one_output = self.mean.shape[-1:] == (1,) or targets.shape[-1:] == (1,)
        if targets.numel() == self.mean.numel() and one_output:
            # [N] targets of a model with one output, [N, 1]: the same numbers.
            return targets.reshape(self.mean.shape)
        if targets.shape != self.mean.shape:
            raise ValueError(
                f"regression: expected targets of shape {tuple(self.mean.shape)} (the "
                f"predictions'), got {tuple(targets.shape)}"
            )
        return targets


def _noise(
    name: str, tau: float | None, heteroscedastic: bool, outputs: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor | None]:
    """Check the noise options: ``(1 / tau, outputs, None)``, or for a heteroscedastic head
    ``(nan, mean, log-variance)`` (its last dim's ``[..., 0]`` and ``[..., 1]``)."""
    if heteroscedastic == (tau is not None):
        raise ValueError(
            f"{name}: give the observation noise either as tau= (one precision for every "
            "target) or as heteroscedastic=True (the model's last dim is [mean, log-variance]), "
            "exactly one of the two"
        )
    if tau is not None:
        if isinstance(tau, bool) or not (isinstance(tau, (int, float)) and 0 < tau < math.inf):
            raise ValueError(f"{name}: expected tau to be a positive finite number, got {tau!r}")
        return 1.0 / float(tau), outputs, None
    if outputs.shape[-1] != 2:
        raise ValueError(
            f"{name}: heteroscedastic=True expects the model's last dim to hold [mean, "
            f"log-variance] (size 2), got size {outputs.shape[-1]}"
        )
    return math.nan, outputs[..., 0], outputs[..., 1]


def _check_units(name: str, scale: float, shift: float) -> None:
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(shift)):
        raise ValueError(
            f"{name}: expected a positive finite scale and a finite shift, got scale={scale!r}, "
            f"shift={shift!r}"
        )


def from_samples(
    samples: torch.Tensor,
    tau: float | None = None,
    *,
    heteroscedastic: bool = False,
    scale: float = 1.0,
    shift: float = 0.0,
) -> RegressionPrediction:
    """The predictive distribution from ``[S, N, ...]`` Monte Carlo outputs (see
    :meth:`dropkit.mc.MCResult.regression`)."""
    name = "MCResult.regression"
    _check_units(name, scale, shift)
    noise_var, means, log_var = _noise(name, tau, heteroscedastic, samples.double())
    means = shift + scale * means
    noise = torch.full_like(means, noise_var) if log_var is None else scale**2 * log_var.exp()
    return RegressionPrediction(
        mean=means.mean(0),
        model_variance=means.var(0, unbiased=False),
        noise_variance=noise.mean(0),
        method="sampling",
        sample_means=means,
        sample_noise=noise,
    )


def from_moments(
    mean: torch.Tensor,
    variance: torch.Tensor,
    tau: float | None = None,
    *,
    heteroscedastic: bool = False,
    scale: float = 1.0,
    shift: float = 0.0,
) -> RegressionPrediction:
    """The predictive Gaussian from propagated ``[N, ...]`` output moments.

    A heteroscedastic head's noise variance is ``E[exp(s)]`` for its log-variance output ``s``
    with the propagated mean ``m`` and variance ``v``: ``exp(m + v / 2)``, the log-normal mean.
    """
    name = "MomentResult.regression"
    _check_units(name, scale, shift)
    noise_var, m, log_mean = _noise(name, tau, heteroscedastic, mean.double())
    _, v, log_var = _noise(name, tau, heteroscedastic, variance.double())
    if log_mean is None or log_var is None:
        noise = torch.full_like(m, noise_var)
    else:
        noise = scale**2 * (log_mean + log_var / 2).exp()
    return RegressionPrediction(
        mean=shift + scale * m,
        model_variance=scale**2 * v,
        noise_variance=noise,
        method="moments",
    )
