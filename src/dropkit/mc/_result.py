"""``MCResult``: Monte Carlo samples and the uncertainty scores computed from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dropkit.mc._regression import RegressionPrediction

__all__ = ["MCResult"]


@dataclass(frozen=True)
class MCResult:
    """Monte Carlo samples and the summaries computed from them.

    ``samples`` is ``[S, N, ...]``: samples first, then the batch, then the model's output dims.
    For classification the last dim holds logits; for regression, predictions.
    """

    samples: torch.Tensor
    strategy: str

    # -------------------------------------------------------------- classification

    @property
    def sample_probs(self) -> torch.Tensor:
        """``[S, N, C]`` softmax of each sample's logits."""
        # Written out: torch.softmax over a short last dim (a few classes) is about 6x slower on
        # CPU than these four passes, and it weighed as much as the one-pass method itself.
        logits = self.samples.float()
        exp = (logits - logits.amax(-1, keepdim=True)).exp_()
        return exp.div_(exp.sum(-1, keepdim=True))

    @property
    def probs(self) -> torch.Tensor:
        """``[N, C]`` mean of the per-sample softmax (not the softmax of mean logits)."""
        return self.sample_probs.mean(0)

    @property
    def predictive_entropy(self) -> torch.Tensor:
        """``[N]`` entropy of :attr:`probs` (total uncertainty), in nats."""
        return _entropy(self.probs)

    @property
    def expected_entropy(self) -> torch.Tensor:
        """``[N]`` mean over samples of each sample's entropy (aleatoric part)."""
        return _entropy(self.sample_probs).mean(0)

    @property
    def mutual_information(self) -> torch.Tensor:
        """``[N]`` predictive minus expected entropy: BALD (Houlsby et al. 2011), epistemic part."""
        probs = self.sample_probs  # once for both terms
        return (_entropy(probs.mean(0)) - _entropy(probs).mean(0)).clamp_min(0.0)

    @property
    def variation_ratio(self) -> torch.Tensor:
        """``[N]`` fraction of samples whose predicted class is not the most frequent one."""
        votes = self.samples.argmax(-1)  # [S, N]
        counts = torch.nn.functional.one_hot(votes, self.samples.shape[-1]).sum(0)  # [N, C]
        return 1.0 - counts.max(-1).values.float() / self.samples.shape[0]

    @property
    def std(self) -> torch.Tensor:
        """``[N, C]`` standard deviation over samples of the per-sample probabilities."""
        return self.sample_probs.std(0, unbiased=False)

    # -------------------------------------------------------------- regression

    @property
    def mean(self) -> torch.Tensor:
        """``[N, ...]`` mean over samples (regression)."""
        return self.samples.mean(0)

    @property
    def variance(self) -> torch.Tensor:
        """``[N, ...]`` variance over samples (regression), normalized by S."""
        return self.samples.var(0, unbiased=False)

    def regression(
        self,
        tau: float | None = None,
        *,
        heteroscedastic: bool = False,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> RegressionPrediction:
        """The predictive distribution of a regression model, observation noise included.

        Its mean and variance (the samples' variance plus the noise), log-likelihood (the
        log-mean-exp over the S passes' Gaussians, as in Gal & Ghahramani's code, "Dropout as
        a Bayesian Approximation", https://arxiv.org/abs/1506.02142), RMSE, and the coverage
        and width of central intervals: see :class:`~dropkit.mc.RegressionPrediction`.

        Args:
            tau: the observation noise precision (``1 / variance``, homoscedastic), in the
                units of ``shift + scale * output``.
            heteroscedastic: the model's last dim is ``[mean, log-variance]`` instead (Kendall
                & Gal, https://arxiv.org/abs/1703.04977): each pass's noise is its own. Give
                either ``tau`` or this.
            scale, shift: the outputs in the targets' units are ``shift + scale * output``
                (a model trained on standardized targets: their std and mean); a
                heteroscedastic variance is scaled by ``scale ** 2``.

        Raises:
            ValueError: neither or both noise options, a bad ``tau`` or ``scale``.

        Example:
            >>> import torch
            >>> from dropkit import mc
            >>> model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(3, 1))
            >>> x, y = torch.randn(50, 3), torch.randn(50)
            >>> pred = mc.predict(model, x, samples=100, seed=0).regression(tau=4.0)
            >>> pred.mean.shape, bool((pred.variance > 0.25).all())
            (torch.Size([50, 1]), True)
            >>> 0.0 <= pred.coverage(y, 0.9) <= 1.0, pred.log_likelihood(y) < 0
            (True, True)
        """
        from dropkit.mc._regression import from_samples

        return from_samples(
            self.samples, tau, heteroscedastic=heteroscedastic, scale=scale, shift=shift
        )


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
