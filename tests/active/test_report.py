"""Summaries of a run: paired differences with random, labels to a target, areas, intervals."""

import pytest

from dropkit.active import Interval, RoundResult, summarize_active, write_active_report


def _rows(strategy, curves):
    """RoundResults of one strategy: ``curves[seed]`` is its accuracies at 10, 20, 30 labels."""
    return [
        RoundResult(strategy, seed, r, 10 * (r + 1), acc, 1.0, 0.1, 2.0, 0.5, 1.0, 0.25)
        for seed, accs in enumerate(curves)
        for r, acc in enumerate(accs)
    ]


RANDOM = [[0.5, 0.6, 0.7], [0.4, 0.6, 0.8], [0.5, 0.7, 0.7]]
BETTER = [[0.5, 0.7, 0.8], [0.4, 0.8, 0.9], [0.5, 0.8, 0.9]]


def test_paired_differences_areas_and_labels_to_target():
    summaries, target = summarize_active(_rows("random", RANDOM) + _rows("bald", BETTER))
    assert target == pytest.approx((0.7 + 0.8 + 0.7) / 3)  # random's final mean
    by = {s.strategy: s for s in summaries}
    # area: mean height by trapezoids; seed 0 of random: (0.55 + 0.65) / 2 = 0.6
    assert by["random"].area.mean == pytest.approx((0.6 + 0.6 + 0.65) / 3)
    diffs = [0.675 - 0.6, 0.725 - 0.6, 0.75 - 0.65]  # bald - random area, seed by seed
    expected = Interval.of(diffs)
    assert by["bald"].vs_random_area.mean == pytest.approx(expected.mean)
    assert by["bald"].vs_random_area.low == pytest.approx(expected.low)
    assert by["bald"].vs_random_final.mean == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert by["bald"].labels_to_target == 20  # mean curve 0.767 >= 0.733 at 20 labels
    assert by["random"].labels_to_target == 30
    assert by["bald"].reached == 3
    assert by["random"].vs_random_area is None
    assert by["bald"].train_cpu == pytest.approx(9 * 1.0)


def test_interval_is_a_t_interval():
    interval = Interval.of([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, sd 1.5811, t(0.975, 4) = 2.776: half width 1.963
    assert interval.mean == 3.0
    assert interval.high - interval.mean == pytest.approx(2.776 * 1.5811388 / 5**0.5, rel=1e-4)
    assert Interval.of([2.0]).low == Interval.of([2.0]).high == 2.0


def test_unfinished_seeds_are_cut_to_the_rounds_every_seed_has(tmp_path):
    rows = _rows("random", RANDOM) + _rows("bald", BETTER)
    rows = [r for r in rows if not (r.strategy == "bald" and r.seed == 2 and r.round == 2)]
    summaries, _ = summarize_active(rows)
    bald = next(s for s in summaries if s.strategy == "bald")
    assert bald.sizes == [10, 20]
    report = write_active_report(tmp_path, rows, {"dataset": "toy"})
    assert "Active learning: toy" in report.read_text()
