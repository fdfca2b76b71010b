"""The benchmarks' median interval: the order statistics of the binomial tables, and the
coverage it promises, checked by simulation."""

from __future__ import annotations

import math

import pytest
import torch

from dropkit.bench import median_interval


def _coverage(n: int, j: int) -> float:
    """P(x_(j) <= median < x_(n+1-j)) for n continuous draws: 1 - 2 P(Binomial(n, 1/2) < j)."""
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j)) / 2**n


@pytest.mark.parametrize(("n", "j"), [(6, 1), (12, 3), (30, 10), (100, 40), (300, 133)])
def test_the_interval_is_the_order_statistics_of_the_binomial_tables(n, j) -> None:
    values = [float(v) for v in range(1, n + 1)]
    assert median_interval(values[::-1]) == (j, n + 1 - j)  # sorted inside
    # j is the largest rank whose coverage still reaches 95%
    assert _coverage(n, j) >= 0.95 > _coverage(n, j + 1)


def test_too_few_values_give_the_whole_range() -> None:
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert median_interval([5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def test_the_interval_covers_the_median_as_often_as_it_promises() -> None:
    # 2000 seeded samples of 30 exponential draws (median ln 2): the count of intervals that
    # contain it is binomial with the exact coverage of j = 10; allow 4 standard deviations.
    generator = torch.Generator().manual_seed(0)
    draws = torch.empty(2000, 30).exponential_(generator=generator).tolist()
    hits = sum(low <= math.log(2) <= high for low, high in map(median_interval, draws))
    p = _coverage(30, 10)
    assert abs(hits - 2000 * p) <= 4 * math.sqrt(2000 * p * (1 - p))
