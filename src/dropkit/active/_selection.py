"""Selections from scores: the top ``query_size``, a uniform draw, stochastic batches."""

from __future__ import annotations

import math

import torch

__all__ = ["STOCHASTIC_MODES", "random_query", "stochastic_batch", "stochastic_weights", "top_k"]

#: How :func:`stochastic_batch` turns a score into sampling probabilities.
STOCHASTIC_MODES: tuple[str, ...] = ("power", "softmax", "rank")


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
