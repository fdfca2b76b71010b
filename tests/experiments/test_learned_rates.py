"""The paper's qualitative result: the rate Concrete dropout learns falls as the data grows."""

from __future__ import annotations

from scipy import stats

from dropkit.experiments.learned_rates import rates_by_size


def test_learned_rate_decreases_with_the_training_set_size() -> None:
    sizes, seeds = (16, 64, 256), range(4)
    runs = rates_by_size(sizes, seeds, steps=100)
    assert len(runs) == 12
    assert all(0 < p < 1 for run in runs for p in run.rates)
    # Rank correlation between N and the mean learned rate over 12 runs, one-sided.
    rho, pvalue = stats.spearmanr([r.size for r in runs], [r.mean_rate for r in runs])
    assert rho < 0
    assert pvalue / 2 < 0.01
    # and for every seed, each larger data set learns a lower rate
    for seed in seeds:
        by_size = [r.mean_rate for n in sizes for r in runs if r.seed == seed and r.size == n]
        assert by_size == sorted(by_size, reverse=True), (seed, by_size)
