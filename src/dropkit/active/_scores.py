"""Per-example acquisition scores on an :class:`~dropkit.mc.MCResult`, each higher = more useful.

Every per-example score is "higher is more worth labelling" and is read from the result's
public fields only: ``samples`` (``[S, N, C]`` logits) through ``sample_probs``.

Scores and what they use:

- ``entropy``: entropy of the mean probabilities (Shannon 1948), in nats.
- ``bald``: mutual information between the prediction and the weights, predictive minus
  expected entropy (Houlsby et al., "Bayesian Active Learning for Classification and Preference
  Learning", https://arxiv.org/abs/1112.5745; Gal, Islam & Ghahramani, "Deep Bayesian Active
  Learning with Image Data", https://arxiv.org/abs/1703.02910).
- ``variation-ratio``: the fraction of samples whose top class is not the modal one (Freeman
  1965); the top class of a sample is the first of its largest probabilities.
- ``mean-std``: the mean over classes of the standard deviation over samples of the
  probabilities, normalised by S (Kampffmeyer et al. 2016).
- ``margin``: minus the gap between the two largest mean probabilities (a small gap ranks high).
- ``least-confidence``: one minus the largest mean probability.

Results of ``method="moments"`` (:class:`~dropkit.mc.MomentResult`) carry no Monte Carlo
samples: their ``samples`` are draws from the propagated Gaussian over the logits,
independent per logit and per example, seeded by ``predict``'s ``seed``. Every per-example
score above is computed from those draws, exactly as from Monte Carlo samples (entropy, margin
and least confidence through the mean of the draws' softmax). ``batch_bald`` refuses them: its
joint entropy needs the same dropout mask across the examples of one sample, and independent
draws would make every pair of examples look independent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dropkit.mc import MCResult

__all__ = [
    "SCORES",
    "bald",
    "entropy",
    "least_confidence",
    "margin",
    "mean_std",
    "score",
    "variation_ratio",
]

ScoreFn = Callable[[MCResult], torch.Tensor]


@dataclass(frozen=True)
class _Score:
    name: str
    fn: ScoreFn
    nonnegative: bool  # power sampling raises a score to a power: it must not be negative


_SCORES: dict[str, _Score] = {}


def _register(name: str, *, nonnegative: bool = True) -> Callable[[ScoreFn], ScoreFn]:
    def add(fn: ScoreFn) -> ScoreFn:
        _SCORES[name] = _Score(name, fn, nonnegative)
        return fn

    return add


def _probs(result: MCResult, who: str) -> torch.Tensor:
    """``[S, N, C]`` per-sample probabilities in float64."""
    if not isinstance(result, MCResult):
        raise TypeError(
            f"{who}: expected an MCResult from dropkit.mc.predict, got {type(result).__name__}"
        )
    samples = result.samples
    if samples.dim() != 3:
        raise ValueError(
            f"{who}: expected samples of shape [S, N, C] (a classifier's logits), got "
            f"{tuple(samples.shape)}; flatten other output dims into N first"
        )
    if samples.shape[1] == 0:
        raise ValueError(f"{who}: the pool is empty (N = 0)")
    probs = result.sample_probs.double()
    if not bool(torch.isfinite(probs).all()):
        raise ValueError(f"{who}: the samples hold NaN or infinite logits; check the model")
    return probs


def _entropy(p: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = -torch.special.xlogy(p, p).sum(-1)
    return out


@_register("entropy")
def entropy(result: MCResult) -> torch.Tensor:
    """``[N]`` entropy of the mean probabilities, in nats (max entropy acquisition).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import entropy
        >>> logits = torch.tensor([[[0.0, 0.0], [9.0, 0.0]]])  # one sample, two examples
        >>> entropy(MCResult(logits, "stored")).round(decimals=4)
        tensor([0.6931, 0.0012], dtype=torch.float64)
    """
    return _entropy(_probs(result, "entropy").mean(0))


@_register("bald")
def bald(result: MCResult) -> torch.Tensor:
    """``[N]`` BALD: mutual information between an example's label and the weights, in nats.

    Predictive entropy minus the mean entropy of the samples; zero when every sample agrees.

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import bald
        >>> agree = torch.tensor([[[2.0, 0.0]], [[2.0, 0.0]]])  # two samples, one example
        >>> disagree = torch.tensor([[[9.0, 0.0]], [[0.0, 9.0]]])
        >>> float(bald(MCResult(agree, "stored"))[0])
        0.0
        >>> round(float(bald(MCResult(disagree, "stored"))[0]), 3)
        0.692
    """
    p = _probs(result, "bald")
    return (_entropy(p.mean(0)) - _entropy(p).mean(0)).clamp_min(0.0)


@_register("variation-ratio")
def variation_ratio(result: MCResult) -> torch.Tensor:
    """``[N]`` one minus the share of samples that vote for the modal class.

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import variation_ratio
        >>> votes = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
        >>> variation_ratio(MCResult(votes, "stored"))
        tensor([0.2500], dtype=torch.float64)
    """
    p = _probs(result, "variation_ratio")
    counts = torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).sum(0)  # [N, C]
    return 1.0 - counts.max(-1).values.double() / p.shape[0]


@_register("mean-std")
def mean_std(result: MCResult) -> torch.Tensor:
    """``[N]`` mean over classes of the standard deviation of the probabilities over samples.

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import mean_std
        >>> logits = torch.tensor([[[9.0, 0.0]], [[0.0, 9.0]]])
        >>> mean_std(MCResult(logits, "stored")).round(decimals=3)
        tensor([0.5000], dtype=torch.float64)
    """
    p = _probs(result, "mean_std")
    return p.var(0, unbiased=False).sqrt().mean(-1)


@_register("margin", nonnegative=False)
def margin(result: MCResult) -> torch.Tensor:
    """``[N]`` minus the gap between the two largest mean probabilities (in [-1, 0]).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import margin
        >>> probs = torch.tensor([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]])
        >>> margin(MCResult(probs.log(), "stored")).round(decimals=4)
        tensor([-0.2000, -0.8500], dtype=torch.float64)
    """
    p = _probs(result, "margin").mean(0)
    if p.shape[-1] < 2:
        raise ValueError("margin: needs at least two classes")
    top = p.topk(2, dim=-1).values
    return -(top[:, 0] - top[:, 1])


@_register("least-confidence")
def least_confidence(result: MCResult) -> torch.Tensor:
    """``[N]`` one minus the largest mean probability.

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import least_confidence
        >>> probs = torch.tensor([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]])
        >>> least_confidence(MCResult(probs.log(), "stored")).round(decimals=4)
        tensor([0.5000, 0.1000], dtype=torch.float64)
    """
    return 1.0 - _probs(result, "least_confidence").mean(0).max(-1).values


#: The per-example scores by name (each higher = more worth labelling).
SCORES: tuple[str, ...] = tuple(_SCORES)


def score(result: MCResult, name: str) -> torch.Tensor:
    """``[N]`` the per-example score ``name`` (one of :data:`SCORES`) of ``result``.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> from dropkit.active import score
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(6, 4), samples=10, seed=0)
        >>> score(result, "bald").shape
        torch.Size([6])
    """
    spec = _SCORES.get(name)
    if spec is None:
        raise ValueError(f"score: unknown score {name!r}; expected one of {list(SCORES)}")
    return spec.fn(result)
