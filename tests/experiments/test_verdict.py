"""The verdict: the rate chosen on validation, its test effect as a paired t-interval."""

from __future__ import annotations

import math
import statistics

import pytest

from dropkit.experiments import verdict
from dropkit.experiments.report import paired_effect, paired_interval
from dropkit.experiments.train import RunResult

# Student's t quantiles at 0.975 from printed tables (2 and 4 degrees of freedom).
T_975 = {2: 4.302653, 4: 2.776445}


def _run(rate: float, seed: int, test_acc: float, val_acc: float) -> RunResult:
    return RunResult(
        rate=rate,
        seed=seed,
        train_acc=1.0,
        test_acc=test_acc,
        test_nll=1.0,
        test_ece=0.1,
        val_acc=val_acc,
        epochs_run=3,
        seconds=1.0,
    )


def _results(test: dict[float, list[float]], val: dict[float, float]) -> list[RunResult]:
    return [
        _run(rate, seed, acc, val[rate])
        for rate, accs in test.items()
        for seed, acc in enumerate(accs)
    ]


BASE = [0.60, 0.61, 0.62]


def test_the_rate_is_chosen_on_validation_not_on_test() -> None:
    # Rate 0.5 is best on test (by luck: validation ranks it below 0.2), so choosing on test
    # and judging on test calls it a clear win; chosen on validation, 0.2 is the candidate
    # and its paired test differences (+1, -1, +1.5 points) are no clear effect.
    results = _results(
        {
            0.0: BASE,
            0.2: [0.61, 0.60, 0.635],
            0.5: [0.63, 0.641, 0.652],
        },
        {0.0: 0.60, 0.2: 0.66, 0.5: 0.62},
    )
    effect = paired_effect(results)
    assert effect.rate == 0.2
    assert effect.val_acc == pytest.approx(0.66)
    assert effect.call == "no clear effect"
    line = verdict(results)
    assert line.startswith("No clear effect of dropout: rate 0.2 ")
    assert "rate 0.5" not in line


def test_three_seeds_need_the_t_quantile_not_two_standard_errors() -> None:
    # Differences +1, +2, +4.5 points: the mean is 2.4 standard errors above 0 (a "win" by the
    # 2-SE rule), but with 2 degrees of freedom the 95% interval is mean ± 4.30 SE.
    diffs = [0.01, 0.02, 0.045]
    results = _results(
        {0.0: BASE, 0.2: [b + d for b, d in zip(BASE, diffs, strict=True)]}, {0.0: 0.6, 0.2: 0.65}
    )
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(3)
    assert mean > 2 * se
    effect = paired_effect(results)
    assert effect.mean == pytest.approx(mean)
    assert effect.low == pytest.approx(mean - T_975[2] * se, rel=1e-5)
    assert effect.high == pytest.approx(mean + T_975[2] * se, rel=1e-5)
    assert effect.low < 0 < effect.high
    assert effect.call == "no clear effect"
    assert verdict(results).startswith("No clear effect of dropout")


def test_helped_and_hurt_when_the_interval_excludes_zero() -> None:
    helped = _results({0.0: BASE, 0.5: [0.63, 0.645, 0.65]}, {0.0: 0.6, 0.5: 0.7})
    assert paired_effect(helped).low > 0
    assert verdict(helped).startswith("Dropout helped: rate 0.5 ")
    hurt = _results({0.0: BASE, 0.5: [0.55, 0.565, 0.57]}, {0.0: 0.6, 0.5: 0.5})
    assert paired_effect(hurt).high < 0
    assert verdict(hurt).startswith("Dropout hurt: rate 0.5 ")


def test_the_sentence_names_the_rule_the_level_and_the_interval() -> None:
    results = _results({0.0: BASE, 0.2: [0.63, 0.645, 0.65]}, {0.0: 0.6, 0.2: 0.7})
    effect = paired_effect(results)
    line = verdict(results)
    for needle in (
        "highest mean validation accuracy",
        "95% paired t-interval over 3 seeds",
        "t with 2 degrees of freedom",
        f"{100 * effect.mean:+.1f} points",
        f"{100 * effect.low:+.1f} to {100 * effect.high:+.1f}",
    ):
        assert needle in line, needle
    assert "±" not in line  # an interval, written as its ends, is never mistaken for a spread


def test_a_tie_on_validation_chooses_the_lower_rate() -> None:
    results = _results(
        {0.0: BASE, 0.2: [0.61, 0.62, 0.63], 0.5: [0.7, 0.71, 0.72]},
        {0.0: 0.6, 0.2: 0.65, 0.5: 0.65},
    )
    assert paired_effect(results).rate == 0.2


def test_the_interval_at_another_level() -> None:
    diffs = [0.01, 0.03, 0.02, 0.05, 0.0]
    mean, low, high = paired_interval(diffs, 0.95)
    se = statistics.stdev(diffs) / math.sqrt(5)
    assert (high - low) / 2 == pytest.approx(T_975[4] * se, rel=1e-5)
    narrower = paired_interval(diffs, 0.8)
    assert low < narrower[1] < mean < narrower[2] < high


@pytest.mark.parametrize(
    ("test", "needle"),
    [
        ({0.2: BASE, 0.5: BASE}, "no rate 0"),
        ({0.0: BASE}, "no dropout rate above 0"),
        ({0.0: BASE[:1], 0.2: BASE[:1]}, "fewer than 2 paired seeds"),
    ],
)
def test_no_verdict_says_what_is_missing(test, needle) -> None:
    line = verdict(_results(test, {rate: 0.6 for rate in test}))
    assert line.startswith("No verdict: ")
    assert needle in line


def test_bad_interval_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        paired_interval([0.1])
    with pytest.raises(ValueError, match="level"):
        paired_interval([0.1, 0.2], 1.5)
