"""Acquisition functions: which pool examples to label next, from an :class:`~dropkit.mc.MCResult`.

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

Selections:

- :func:`top_k`: the ``query_size`` highest scores; equal scores go in index order (the lowest
  index first), so a selection is reproducible. ``query_size`` larger than the pool returns
  the whole pool, ranked.
- :func:`stochastic_batch`: ``query_size`` examples drawn without replacement with
  probabilities from a score (power, softmax or rank), by Gumbel-top-k, seeded (Kirsch et al.,
  "Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023,
  https://arxiv.org/abs/2106.12059).
- :func:`batch_bald`: greedy BatchBALD (Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and
  Diverse Batch Acquisition for Deep Bayesian Active Learning", NeurIPS 2019,
  https://arxiv.org/abs/1906.08158).
- :func:`acquire`: any strategy by name (:data:`STRATEGIES`, or ``MODE-SCORE`` such as
  ``power-bald``, ``softmax-entropy``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dropkit.mc import MCResult, MomentResult

__all__ = [
    "SCORES",
    "STOCHASTIC_MODES",
    "STRATEGIES",
    "acquire",
    "bald",
    "batch_bald",
    "check_strategy",
    "entropy",
    "joint_mutual_information",
    "least_confidence",
    "margin",
    "mean_std",
    "random_query",
    "score",
    "stochastic_batch",
    "stochastic_weights",
    "top_k",
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

#: How :func:`stochastic_batch` turns a score into sampling probabilities.
STOCHASTIC_MODES: tuple[str, ...] = ("power", "softmax", "rank")

#: Strategy names :func:`acquire` knows; besides these, any ``MODE-SCORE`` with a mode of
#: :data:`STOCHASTIC_MODES` and a score of :data:`SCORES` (``rank-entropy``, ...).
STRATEGIES: tuple[str, ...] = (
    "random",
    *SCORES,
    "batchbald",
    *(f"{mode}-bald" for mode in STOCHASTIC_MODES),
    "power-entropy",
)


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


def _check_query(who: str, query_size: int) -> None:
    if isinstance(query_size, bool) or not isinstance(query_size, int) or query_size < 1:
        raise ValueError(f"{who}: expected query_size to be a positive int, got {query_size!r}")


def top_k(scores: torch.Tensor, query_size: int) -> torch.Tensor:
    """Indices of the ``query_size`` highest ``scores``, highest first.

    Equal scores are taken in index order (lowest first). When ``query_size`` exceeds the
    number of scores, every index is returned, ranked.

    Example:
        >>> import torch
        >>> from dropkit.active import top_k
        >>> top_k(torch.tensor([0.1, 0.7, 0.7, 0.3]), 3)
        tensor([1, 2, 3])
        >>> top_k(torch.tensor([0.1, 0.7]), 5)
        tensor([1, 0])
    """
    _check_query("top_k", query_size)
    if scores.dim() != 1:
        raise ValueError(f"top_k: expected scores of shape [N], got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("top_k: the scores hold NaN; check the model's outputs")
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:query_size]


def random_query(pool_size: int, query_size: int, *, seed: int = 0) -> torch.Tensor:
    """``min(query_size, pool_size)`` distinct indices of ``range(pool_size)``, uniformly, seeded.

    Example:
        >>> from dropkit.active import random_query
        >>> picked = random_query(10, 4, seed=0)
        >>> picked.shape, len(set(picked.tolist()))
        (torch.Size([4]), 4)
    """
    _check_query("random_query", query_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(pool_size, generator=generator)[:query_size]


def stochastic_weights(
    scores: torch.Tensor, mode: str = "power", beta: float = 1.0, *, who: str = "stochastic"
) -> torch.Tensor:
    """``[N]`` the sampling probabilities of stochastic batch acquisition (they sum to 1).

    ``power``: proportional to ``score ** beta`` (scores must be >= 0; a zero score is never
    drawn while positive ones remain); ``softmax``: to ``exp(beta * score)``; ``rank``: to
    ``rank ** -beta`` with rank 1 the highest score (equal scores share the lowest rank of
    their group, as ``scipy.stats.rankdata(method="min")`` of minus the scores). From Kirsch
    et al., "Stochastic Batch Acquisition", https://arxiv.org/abs/2106.12059. Baal's
    ``temperature`` is ``1 / beta``.

    Example:
        >>> import torch
        >>> from dropkit.active import stochastic_weights
        >>> stochastic_weights(torch.tensor([1.0, 3.0]), "power")
        tensor([0.2500, 0.7500], dtype=torch.float64)
    """
    return _log_weights(scores, mode, beta, who).softmax(0)


def _log_weights(scores: torch.Tensor, mode: str, beta: float, who: str) -> torch.Tensor:
    if mode not in STOCHASTIC_MODES:
        raise ValueError(f"{who}: expected mode one of {list(STOCHASTIC_MODES)}, got {mode!r}")
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"{who}: expected beta > 0 (Baal's temperature is 1 / beta), got {beta!r}")
    if scores.dim() != 1 or scores.numel() == 0:
        raise ValueError(f"{who}: expected scores of shape [N], N > 0, got {tuple(scores.shape)}")
    s = scores.double()
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{who}: the scores hold NaN or infinite values; check the model")
    if mode == "softmax":
        return beta * s
    if mode == "rank":
        # rank = 1 + the number of strictly larger scores
        rank = 1 + (s[None, :] > s[:, None]).sum(1) if s.numel() <= 4096 else _rank_min(s)
        return -beta * rank.double().log()
    if bool((s < 0).any()):
        raise ValueError(
            f"{who}: power sampling needs scores >= 0, got a minimum of {float(s.min()):g}; use "
            "mode='softmax' or 'rank' for this score"
        )
    log = beta * s.log()  # -inf for a zero score
    if bool(torch.isinf(log).all()):
        return torch.zeros_like(s)  # every score is zero: uniform
    return log


def _rank_min(s: torch.Tensor) -> torch.Tensor:
    """1 + the number of strictly larger scores, in O(N log N)."""
    ordered = torch.sort(s, descending=True).values
    # searchsorted needs ascending order: count the scores > s among the reversed ones
    ascending = ordered.flip(0)
    larger = s.numel() - torch.searchsorted(ascending, s, right=True)
    return 1 + larger


def stochastic_batch(
    scores: torch.Tensor,
    query_size: int,
    *,
    mode: str = "power",
    beta: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``min(query_size, N)`` indices drawn without replacement with :func:`stochastic_weights`.

    Drawn by Gumbel-top-k (add Gumbel noise to the log-probabilities, take the top), which is
    the same distribution as drawing one at a time and renormalising (Kool et al., "Stochastic
    Beams and Where to Find Them", https://arxiv.org/abs/1903.06059); seeded by ``seed``.
    Zero-probability examples (a zero score under ``power``) come last, in index order.

    Example:
        >>> import torch
        >>> from dropkit.active import stochastic_batch
        >>> picked = stochastic_batch(torch.tensor([0.0, 0.2, 0.5, 0.9]), 3, seed=0)
        >>> sorted(picked.tolist())
        [1, 2, 3]
    """
    _check_query("stochastic_batch", query_size)
    log = _log_weights(scores, mode, beta, "stochastic_batch")
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(log.shape, generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16)))
    keys = log + gumbel
    return top_k(keys, query_size)


# ---------------------------------------------------------------------- BatchBALD


def _sampling_only(result: MCResult, who: str) -> None:
    if isinstance(result, MomentResult):
        raise ValueError(
            f"{who}: needs Monte Carlo samples, where sample s of every example comes from the "
            "same dropout mask; a method='moments' result draws each example independently, "
            "which makes every joint entropy that of independent predictions. Use "
            "mc.predict(..., method='sampling') for BatchBALD"
        )


def joint_mutual_information(result: MCResult, indices: torch.Tensor | list[int]) -> float:
    """The BatchBALD score of a set, exactly: ``I(y_1, ..., y_n; w)``, in nats.

    Enumerates the ``C ** n`` joint label configurations; for checking :func:`batch_bald` on
    small sets (it raises above 2**20 configurations).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import bald, joint_mutual_information
        >>> result = MCResult(torch.randn(8, 5, 3, generator=torch.Generator().manual_seed(0)), "s")
        >>> abs(joint_mutual_information(result, [2]) - float(bald(result)[2])) < 1e-12
        True
    """
    _sampling_only(result, "joint_mutual_information")
    p = _probs(result, "joint_mutual_information")
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    s, _, c = p.shape
    if c ** len(idx) > 1 << 20:
        raise ValueError(
            f"joint_mutual_information: {c}**{len(idx)} configurations are too many to enumerate"
        )
    joint = torch.ones(s, 1, dtype=torch.float64)
    for i in idx.tolist():
        joint = (joint[:, :, None] * p[:, i, None, :]).reshape(s, -1)
    conditional = _entropy(p[:, idx, :]).mean(0).sum()
    return float(_entropy(joint.mean(0)) - conditional)


def batch_bald(
    result: MCResult,
    query_size: int,
    *,
    configurations: int = 1024,
    seed: int = 0,
) -> torch.Tensor:
    """Greedy BatchBALD: ``min(query_size, N)`` indices, in the order they were chosen.

    Each step adds the example that most increases the joint mutual information
    ``I(y_1, ..., y_n; w)`` of the set (Kirsch, van Amersfoort & Gal, NeurIPS 2019,
    https://arxiv.org/abs/1906.08158). The joint entropy is exact while the chosen examples'
    label configurations number at most ``configurations`` (``C ** n``); beyond, it is
    estimated from ``configurations`` configurations drawn from the joint predictive (each
    with one of the S samples, as in the paper), seeded by ``seed``. The first pick is BALD's
    top pick. Equal gains go to the lowest index.

    Args:
        result: Monte Carlo samples of the pool, ``[S, N, C]`` (``method="sampling"``; a
            moments result raises, see the module notes).
        query_size: how many examples to choose.
        configurations: the most joint configurations held (memory ``S * configurations``,
            time per step ``S * configurations * N * C``).
        seed: seeds the drawn configurations (unused while the joint is exact).

    Example:
        >>> import torch
        >>> from dropkit.mc import MCResult
        >>> from dropkit.active import bald, batch_bald
        >>> logits = torch.randn(10, 50, 4, generator=torch.Generator().manual_seed(0))
        >>> result = MCResult(logits, "stored")
        >>> picked = batch_bald(result, 3)
        >>> len(set(picked.tolist())), int(picked[0]) == int(bald(result).argmax())
        (3, True)
    """
    _check_query("batch_bald", query_size)
    _sampling_only(result, "batch_bald")
    bad = isinstance(configurations, bool) or not isinstance(configurations, int)
    if bad or configurations < 1:
        raise ValueError(
            f"batch_bald: expected configurations to be a positive int, got {configurations!r}"
        )
    p = _probs(result, "batch_bald")  # [S, N, C]
    s, n, c = p.shape
    conditional = _entropy(p).mean(0)  # [N]
    flat = p.reshape(s, n * c)
    chosen: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    # The chosen examples' joint: ``joint[s, k]`` is p(configuration k | sample s) (exact), or,
    # once drawn, proportional to it with ``log_scale[k]`` the log of the factor taken out.
    joint = torch.ones(s, 1, dtype=torch.float64)
    log_scale = torch.zeros(1, dtype=torch.float64)
    drawn = False
    generator = torch.Generator().manual_seed(seed)
    model_of: torch.Tensor | None = None  # drawn configurations: the sample each came from
    for _ in range(min(query_size, n)):
        gains = _joint_entropies(joint, flat, n, c, drawn, log_scale) - conditional
        gains = gains - conditional[chosen].sum()
        gains[taken] = -math.inf
        best = int(top_k(gains, 1)[0])
        chosen.append(best)
        taken[best] = True
        if len(chosen) == min(query_size, n):
            break
        if not drawn and joint.shape[1] * c <= configurations:
            joint = (joint[:, :, None] * p[:, best, None, :]).reshape(s, -1)
            log_scale = torch.zeros(joint.shape[1], dtype=torch.float64)
            continue
        if not drawn:  # draw the configurations of everything chosen so far
            drawn = True
            model_of = torch.randint(0, s, (configurations,), generator=generator)
            joint = torch.ones(s, configurations, dtype=torch.float64)
            log_scale = torch.zeros(configurations, dtype=torch.float64)
            picks = chosen
        else:
            picks = [best]
        assert model_of is not None
        for i in picks:
            labels = torch.multinomial(p[model_of, i, :], 1, generator=generator).squeeze(1)
            joint = joint * p[:, i, :][:, labels]  # [S, M]: p(label_m of i | sample s)
            top = joint.max(0).values.clamp_min(1e-300)
            joint = joint / top
            log_scale = log_scale + top.log()
    return torch.tensor(chosen, dtype=torch.long)


def _joint_entropies(
    joint: torch.Tensor,
    flat: torch.Tensor,
    n: int,
    c: int,
    drawn: bool,
    log_scale: torch.Tensor,
) -> torch.Tensor:
    """``[N]`` H(y_chosen, y_n) for every candidate n: exact over the configurations in
    ``joint``, or the importance estimate over drawn configurations."""
    s, k = joint.shape
    out = torch.empty(n, dtype=torch.float64)
    chunk = max(1, (1 << 22) // max(1, k * c))
    if drawn:
        # p(config m) = scale_m * mean_s joint[s, m];  ratio = p(config m, y_n) / p(config m)
        marginal = joint.mean(0)  # [M]
        offset = -(log_scale + marginal.log()).mean()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        # [K, chunk * C]: mean over samples of joint[s, k] * p_s(y_n = c)
        q = (joint.t() @ flat[:, start * c : stop * c]) / s
        q = q.reshape(k, stop - start, c)
        if drawn:
            ratio = q / marginal[:, None, None]
            out[start:stop] = offset - torch.special.xlogy(ratio, ratio).sum(-1).mean(0)
        else:
            out[start:stop] = -torch.special.xlogy(q, q).sum((0, 2))
    return out


# ---------------------------------------------------------------------- by name


def _parse(strategy: str) -> tuple[str, str | None]:
    """(kind, score): kind is random, batchbald, top or a stochastic mode."""
    if strategy == "random":
        return "random", None
    if strategy == "batchbald":
        return "batchbald", "bald"
    if strategy in _SCORES:
        return "top", strategy
    mode, _, rest = strategy.partition("-")
    if mode in STOCHASTIC_MODES and rest in _SCORES:
        return mode, rest
    raise ValueError(
        f"acquire: unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}, or "
        f"MODE-SCORE with MODE in {list(STOCHASTIC_MODES)} and SCORE in {list(SCORES)}"
    )


def check_strategy(strategy: str) -> None:
    """Raise ``ValueError`` naming the known strategies when ``strategy`` is not one."""
    _parse(strategy)


def acquire(
    result: MCResult,
    strategy: str,
    query_size: int,
    *,
    seed: int = 0,
    beta: float = 1.0,
    configurations: int = 1024,
) -> torch.Tensor:
    """The indices of the pool (dim 1 of ``result.samples``) that ``strategy`` picks to label.

    Returns ``min(query_size, N)`` distinct indices. ``random`` draws uniformly;
    a score name (``bald``, ``entropy``, ...) takes :func:`top_k` of it; ``batchbald`` runs
    :func:`batch_bald`; ``MODE-SCORE`` (``power-bald``, ``softmax-entropy``, ``rank-margin``)
    draws with :func:`stochastic_batch`. Everything random is seeded by ``seed``.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> from dropkit.active import acquire
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(20, 4), samples=10, seed=0)
        >>> names = ("random", "bald", "batchbald", "power-bald")
        >>> [len(acquire(result, name, 5)) for name in names]
        [5, 5, 5, 5]
    """
    kind, name = _parse(strategy)
    _check_query("acquire", query_size)
    if kind == "random":
        _probs(result, "acquire")  # the same checks as the others
        return random_query(result.samples.shape[1], query_size, seed=seed)
    if kind == "batchbald":
        return batch_bald(result, query_size, configurations=configurations, seed=seed)
    assert name is not None
    scores = score(result, name)
    if kind == "top":
        return top_k(scores, query_size)
    return stochastic_batch(scores, query_size, mode=kind, beta=beta, seed=seed)
