"""Per-example acquisition scores on an :class:`~dropkit.mc.MCResult`, each higher = more useful.

Every per-example score is "higher is more worth labelling" and is read from the result's
public fields only: ``samples`` (``[S, N, C]`` logits), through their softmax computed in
float64 (``MCResult.sample_probs`` is float32). Entropies use ``0 log 0 = 0``; a sample's
entropy is taken from its logits (``log p = logit - logsumexp``), so no log of a tiny
probability is ever taken, and a logit of ``-inf`` is a class of probability 0. NaN logits, a
``+inf`` logit, or a sample whose logits are all ``-inf`` raise.

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


def _samples(result: MCResult, who: str) -> torch.Tensor:
    """``result.samples`` (``[S, N, C]`` logits), checked for type and shape."""
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
    if samples.shape[0] == 0 or samples.shape[2] == 0:
        raise ValueError(
            f"{who}: expected at least one sample and one class, got samples of shape "
            f"{tuple(samples.shape)}"
        )
    if samples.shape[2] == 1:
        # one "class" has probability 1 in every sample: every score would be 0, a ranking of
        # ties (a regression model's [S, N, 1] predictions, or a binary classifier's one logit)
        raise ValueError(
            f"{who}: expected a classifier's logits over at least two classes, got samples of "
            f"shape {tuple(samples.shape)}; for a binary classifier's one logit z pass "
            "torch.cat([torch.zeros_like(z), z], -1), for a regression model use "
            "result.regression()"
        )
    return samples


def _check_finite(top: torch.Tensor, who: str) -> None:
    """Raise where a sample's largest logit (``top``) is NaN or infinite: its softmax is NaN.

    The largest logit is NaN where any logit is, ``+inf`` where one is, and ``-inf`` where all
    are; a ``-inf`` beside finite logits is a class of probability 0, which is allowed.
    """
    if not _all_finite(top):
        raise ValueError(f"{who}: the samples hold NaN or infinite logits; check the model")


def _all_finite(t: torch.Tensor) -> bool:
    # a sum is finite when every term is (a sum one pass long; isfinite takes three), unless
    # it overflows: then the terms are checked one by one
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _check_samples(result: MCResult, who: str) -> None:
    """The checks of every score (type, shape, finite softmax), without computing one."""
    _check_finite(_samples(result, who).amax(-1), who)


def _softmax(
    result: MCResult, who: str, *, entropies: bool = False, clamp: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[C, S, N]`` the float64 softmax of each sample's logits, classes first, and with
    ``entropies`` the ``[S, N]`` entropy of each (else None).

    Classes first because the scores reduce over the few classes of each sample: over the
    leading dim that is a sum of contiguous rows, where over the last dim of ``[S, N, C]`` it
    is a short strided reduction, several times slower on CPU. The work is done in place in
    one float64 buffer: a new ``[S, N, C]`` tensor can cost more in page faults than a pass.

    A sample's entropy ``-sum p log p``, with ``log p = z - log(norm)`` (``z`` the logits minus
    their largest, ``norm`` the sum of ``exp(z)``), is ``log(norm) - sum exp(z) z / norm``: one
    log per sample instead of one per class, and no log of a tiny probability.

    ``clamp``: each ``z`` is raised to the lowest finite float before its ``exp`` (the same
    softmax), so that a class of probability 0 adds ``0 * lowest = 0`` to the entropy, not
    ``0 * -inf = NaN``; ``z`` is ``-inf`` at a logit of ``-inf``, and where float64 logits lie
    further apart than the largest float (``[1e308, -1e308]``).
    """
    samples = _samples(result, who)
    s, n, c = samples.shape
    # always a new buffer (worked on in place), even where the samples are float64 already
    probs = torch.empty((c, s, n), dtype=torch.float64, device=samples.device)
    probs.copy_(samples.permute(2, 0, 1))
    top = probs.amax(0)
    _check_finite(top, who)
    probs.sub_(top)  # z: at most 0, exactly 0 at each sample's top class
    dot = None
    if not entropies:
        probs.exp_()
    else:
        dot = torch.zeros_like(top)
        # a few classes at a time, each block's sum of exp(z) z taken before its exp(z)
        # replaces z in place (a second [C, S, N] buffer would cost more than the work)
        for block in torch.split(probs, max(1, (1 << 18) // max(1, top.numel()))):
            if clamp:
                block.clamp_min_(torch.finfo(torch.float64).min)
            weights = block.exp()
            for w, z in zip(weights, block, strict=True):
                dot.addcmul_(w, z)
            block.copy_(weights)
    norm = probs.sum(0)
    probs.div_(norm)
    if dot is None:
        return probs, None
    if not _all_finite(dot):
        # a class of probability 0 (a z of -inf): again, clamped. Not on a clamped copy of the
        # samples: float64 samples' .double() is the caller's tensor, and a clamp in place
        # changed it; nor from the samples again, where z overflows to -inf (only once)
        assert not clamp, "a clamped z is finite, so is its entropy's sum"
        del probs, norm, dot, top  # one [C, S, N] buffer at a time
        return _softmax(result, who, entropies=True, clamp=True)
    return probs, norm.log().sub_(dot.div_(norm))


def _probs(result: MCResult, who: str) -> torch.Tensor:
    """``[S, N, C]`` per-sample probabilities in float64 (the same numbers as the scores')."""
    return _softmax(result, who)[0].permute(1, 2, 0).contiguous()


def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy over ``dim`` of probabilities ``p``, ``-sum p log p`` with ``0 log 0 = 0``.

    The log is taken of ``p`` raised to the smallest normal float: below it, ``p log p`` is
    under ``1e-305`` (float64) either way, and the log of a subnormal float is many times
    slower than that of a normal one on CPU.
    """
    tiny = torch.finfo(p.dtype).tiny
    out: torch.Tensor = -(p * p.clamp_min(tiny).log_()).sum(dim)
    return out


def _mean_probs(result: MCResult, who: str) -> torch.Tensor:
    """``[C, N]`` the mean over samples of the float64 softmax."""
    return _softmax(result, who)[0].mean(1)


def _first_top(probs: torch.Tensor) -> torch.Tensor:
    """``[S, N]`` each sample's top class, the first of its largest ``[C, S, N]`` probabilities."""
    c = probs.shape[0]
    # the largest of c - k over the classes k at the top is c minus the first of them
    # (an argmax over the leading dim is a slow strided reduction on CPU)
    small = torch.uint8 if c < 256 else torch.int16 if c < 1 << 15 else torch.int32
    rank = torch.arange(c, 0, -1, dtype=small, device=probs.device)[:, None, None]
    first: torch.Tensor = c - ((probs == probs.amax(0)) * rank).amax(0).long()
    return first


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
    return _entropy(_mean_probs(result, "entropy"), 0)


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
    probs, entropies = _softmax(result, "bald", entropies=True)
    assert entropies is not None
    return (_entropy(probs.mean(1), 0) - entropies.mean(0)).clamp_min_(0.0)


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
    probs = _softmax(result, "variation_ratio")[0]
    c, s, n = probs.shape
    votes = _first_top(probs)  # [S, N]
    # counts[n, k]: the samples of example n that vote for class k
    cells = (votes + torch.arange(n, device=votes.device) * c).flatten()
    counts = torch.bincount(cells, minlength=n * c).view(n, c)
    return 1.0 - counts.amax(-1).double() / s


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
    probs = _softmax(result, "mean_std")[0]
    # the variance over samples in two passes: the mean, then the mean squared deviation; the
    # mean corrected by its residual, exact where every sample agrees (the std is then 0).
    # The residual a few classes at a time: probs - mean at once was a second [C, S, N] buffer
    mean = probs.mean(1, keepdim=True)
    step = max(1, (1 << 18) // max(1, probs[0].numel()))
    for block, mu in zip(torch.split(probs, step), torch.split(mean, step), strict=True):
        mu += (block - mu).mean(1, keepdim=True)
    deviation = probs.sub_(mean)
    return deviation.square_().mean(1).sqrt_().mean(0)


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
    if _samples(result, "margin").shape[-1] < 2:
        raise ValueError("margin: needs at least two classes")
    top = _mean_probs(result, "margin").topk(2, dim=0).values
    return -(top[0] - top[1])


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
    return 1.0 - _mean_probs(result, "least_confidence").amax(0)


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
