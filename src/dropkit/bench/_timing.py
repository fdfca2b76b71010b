"""Timing on a shared machine: contenders in interleaved rounds, medians, paired ratios."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Paired", "interleaved", "median_interval", "paired"]


@dataclass(frozen=True)
class Paired:
    """One contender against a base timed in the same rounds: its median seconds, and the median
    of its per-round ratio to the base with a 95% confidence interval of that median."""

    seconds: float
    ratio: float
    low: float
    high: float


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order statistics
    ``x_(j)`` and ``x_(n+1-j)`` with the largest ``j`` whose binomial(n, 1/2) coverage is at
    least ``level`` (the whole range where even that falls short, n below 6 at 95%)."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        raise ValueError("median_interval: no values")
    j, tail = 0, 0.0  # tail = P(Binomial(n, 1/2) <= j - 1), the chance the median is below x_(j)
    while j + 1 <= n // 2:
        nxt = tail + math.comb(n, j) / 2**n
        if 1.0 - 2.0 * nxt < level:
            break
        j, tail = j + 1, nxt
    return (ordered[j - 1], ordered[n - j]) if j else (ordered[0], ordered[-1])


def _timed_rounds(
    contenders: Mapping[str, Callable[[], object]], rounds: int, order: random.Random | None
) -> dict[str, list[float]]:
    """Seconds of each call of each contender: one warm-up call each, then ``rounds`` rounds of
    one call each, in the mapping's order or, with ``order``, shuffled by it every round."""
    for run in contenders.values():
        run()
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        if order is not None:
            order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def paired(
    contenders: Mapping[str, Callable[[], object]], rounds: int, base: str
) -> dict[str, Paired]:
    """Each contender timed once per round after a warm-up call, in an order shuffled each
    round (seeded), so that none always follows the same one; its ratio to ``base`` is taken
    within each round, which cancels the machine's slow drifts, and summarized by the median
    and :func:`median_interval`."""
    samples = _timed_rounds(contenders, rounds, random.Random(0))
    out = {}
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, samples[base], strict=True)]
        low, high = median_interval(ratios)
        out[name] = Paired(statistics.median(times), statistics.median(ratios), low, high)
    return out


def interleaved(contenders: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of one call of each contender, timed round-robin after a warm-up call."""
    samples = _timed_rounds(contenders, rounds, None)
    return {name: statistics.median(times) for name, times in samples.items()}


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], object]:
    def run() -> object:
        for _ in range(times):
            fn()
        return None

    return run


def _train_step(
    op: Callable[[torch.Tensor], torch.Tensor], *, leaf: torch.Tensor, grad: torch.Tensor
) -> Callable[[], None]:
    def run() -> None:
        leaf.grad = None
        op(leaf).backward(grad)  # type: ignore[no-untyped-call]

    return run
