"""Acquisition by name: which pool examples to label next, from an :class:`~dropkit.mc.MCResult`.

The per-example scores are in :mod:`._scores`, the selections in :mod:`._selection` and
:mod:`._batch_bald`; :func:`acquire` runs any of them by strategy name.

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

import torch

from dropkit.active._batch_bald import batch_bald
from dropkit.active._scores import _SCORES, SCORES, _check_samples, score
from dropkit.active._selection import (
    STOCHASTIC_MODES,
    _check_query,
    random_query,
    stochastic_batch,
    top_k,
)
from dropkit.mc import MCResult

__all__ = ["STRATEGIES", "acquire", "check_strategy"]

#: Strategy names :func:`acquire` knows; besides these, any ``MODE-SCORE`` with a mode of
#: :data:`STOCHASTIC_MODES` and a score of :data:`SCORES` (``rank-entropy``, ...).
STRATEGIES: tuple[str, ...] = (
    "random",
    *SCORES,
    "batchbald",
    *(f"{mode}-bald" for mode in STOCHASTIC_MODES),
    "power-entropy",
)


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
        _check_samples(result, "acquire")  # the same checks as the others, no softmax
        return random_query(result.samples.shape[1], query_size, seed=seed)
    if kind == "batchbald":
        return batch_bald(result, query_size, configurations=configurations, seed=seed)
    assert name is not None
    scores = score(result, name)
    if kind == "top":
        return top_k(scores, query_size)
    return stochastic_batch(scores, query_size, mode=kind, beta=beta, seed=seed)
