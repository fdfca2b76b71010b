"""The learned-rate runs (``--rates auto``) in the summaries: their own row, never in the grid's
verdict, and their paired effects against rate 0 and the rate chosen on validation."""

from __future__ import annotations

import math
import statistics

import pytest

from dropkit.experiments.report import (
    learned_effects,
    learned_lines,
    paired_effect,
    summarize,
)
from dropkit.experiments.train import EpochMetrics, RunResult

T_975_2DF = 4.302653  # Student's t at 0.975, 2 degrees of freedom (printed tables)


def _run(rate: float, seed: int, acc: float, nll: float, ece: float, val: float) -> RunResult:
    return RunResult(
        rate=rate,
        seed=seed,
        train_acc=1.0,
        test_acc=acc,
        test_nll=nll,
        test_ece=ece,
        val_acc=val,
        epochs_run=1,
        seconds=1.0,
    )


def _learned(seed: int, acc: float, nll: float, ece: float, rates: list[float]) -> RunResult:
    run = _run(sum(rates) / len(rates), seed, acc, nll, ece, val=0.99)
    run.layer_rates = rates
    run.history = [EpochMetrics(1, run.rate, 1.0, 0.5, 1.0, 0.5, 0.1, layer_rates=rates)]
    return run


GRID = [
    *(_run(0.0, s, a, 1.0, 0.10, 0.70) for s, a in enumerate([0.60, 0.61, 0.62])),
    *(_run(0.2, s, a, 0.9, 0.08, 0.80) for s, a in enumerate([0.64, 0.66, 0.65])),
    *(_run(0.5, s, a, 0.8, 0.05, 0.75) for s, a in enumerate([0.70, 0.71, 0.69])),
]
LEARNED = [
    _learned(0, 0.67, 0.85, 0.07, [0.12, 0.30]),
    _learned(1, 0.69, 0.86, 0.06, [0.14, 0.32]),
    _learned(2, 0.66, 0.84, 0.08, [0.10, 0.28]),
]


def test_the_learned_runs_never_enter_the_grids_verdict() -> None:
    # The learned runs' validation accuracy (0.99) beats every grid rate: were they a rate of
    # the grid, the verdict would choose them.
    alone, beside = paired_effect(GRID), paired_effect(GRID + LEARNED)
    assert alone == beside
    assert beside.rate == 0.2


def test_the_learned_runs_are_one_row_labelled_auto_with_the_mean_layer_rates() -> None:
    rows = summarize(GRID + LEARNED)
    assert [r.rate for r in rows[:3]] == [0.0, 0.2, 0.5]
    auto = rows[3]
    assert auto.label == "auto (0.12/0.3)"
    assert auto.row()["rate"] == "auto (0.12/0.3)"
    assert auto.seeds == 3
    assert math.isclose(auto.test_acc.mean, statistics.fmean([0.67, 0.69, 0.66]))
    assert [r.label for r in summarize(GRID)] == ["", "", ""]


def test_learned_effects_are_paired_t_intervals_against_rate_0_and_the_chosen_rate() -> None:
    effects = learned_effects(GRID + LEARNED)
    assert {(e.rate, e.against) for e in effects} == {
        (0.0, "rate 0"),
        (0.2, "rate 0.2 (chosen on validation)"),
    }
    assert {e.metric for e in effects} == {"test_acc", "test_nll", "test_ece"}
    by = {(e.rate, e.metric): e for e in effects}
    acc = by[(0.2, "test_acc")]
    diffs = [0.67 - 0.64, 0.69 - 0.66, 0.66 - 0.65]
    half = T_975_2DF * statistics.stdev(diffs) / math.sqrt(3)
    assert math.isclose(acc.mean, statistics.fmean(diffs))
    assert math.isclose(acc.low, acc.mean - half, rel_tol=1e-5)
    assert math.isclose(acc.high, acc.mean + half, rel_tol=1e-5)
    ece = by[(0.0, "test_ece")]
    assert math.isclose(ece.mean, statistics.fmean([0.07 - 0.10, 0.06 - 0.10, 0.08 - 0.10]))
    assert ece.seeds == 3


def test_learned_lines_name_the_baselines_and_missing_ones_are_said() -> None:
    lines = learned_lines(GRID + LEARNED)
    assert len(lines) == 2
    assert lines[0].startswith("Learned rates (auto) vs rate 0,")
    assert "vs rate 0.2 (chosen on validation)" in lines[1]
    for line in lines:
        for name in ("test accuracy", "test NLL", "test ECE", "paired t-intervals over 3"):
            assert name in line
    assert learned_lines(GRID) == []
    # Only rate 0 in the grid: compared with it alone.
    only_zero = [r for r in GRID if r.rate == 0.0] + LEARNED
    assert {e.against for e in learned_effects(only_zero)} == {"rate 0"}
    # One seed: no interval, said in words.
    (line,) = learned_lines([GRID[0], LEARNED[0]])
    assert "no paired comparison: fewer than 2 seeds" in line
    with pytest.raises(ValueError, match="fewer than 2 seeds"):
        learned_effects([GRID[0], LEARNED[0]])


def test_a_learned_run_keeps_its_layer_rates_through_json_and_a_grid_run_its_keys() -> None:
    again = RunResult.from_json(LEARNED[0].to_json())
    assert again.learned
    assert again.layer_rates == [0.12, 0.30]
    assert again.history[0].layer_rates == [0.12, 0.30]
    grid = GRID[0].to_json()
    assert "layer_rates" not in grid  # stored results of fixed rates are as before
    assert not RunResult.from_json(grid).learned
