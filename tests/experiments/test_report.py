"""What a person reads after ``dropkit compare``: the table, the plots, the report's settings."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from dropkit.cli._summary import print_summary
from dropkit.experiments import CompareConfig, TrainConfig, summarize, write_report
from dropkit.experiments.report import applicable_settings, figures
from dropkit.experiments.train import EpochMetrics, RunResult

pytest.importorskip("matplotlib")


def _run(rate: float, seed: int, seconds: float, epochs: int = 4) -> RunResult:
    """A run with the magnitudes of the README's default comparison (no training needed)."""
    history = [
        EpochMetrics(
            epoch=e + 1,
            rate=rate,
            train_loss=1.0 / (e + 1) + rate,
            train_acc=0.5 + 0.1 * e,
            val_loss=1.1 + 0.2 * e * (0.5 - rate) + 0.01 * seed,
            val_acc=0.4 + 0.05 * e + 0.01 * seed,
            seconds=seconds / epochs,
        )
        for e in range(epochs)
    ]
    return RunResult(
        rate=rate,
        seed=seed,
        train_acc=1.0 - 0.3 * rate - 0.001 * seed,
        test_acc=0.629 + 0.05 * rate + 0.01 * seed,
        test_nll=1.646 - rate + 0.07 * seed,
        test_ece=0.232 - 0.3 * rate + 0.02 * seed,
        val_acc=0.6,
        epochs_run=epochs,
        seconds=seconds,
        history=history,
    )


def _results(seconds: float = 5.2) -> list[RunResult]:
    return [_run(rate, seed, seconds) for rate in (0.0, 0.2, 0.5) for seed in range(3)]


def test_the_table_fits_80_columns_one_line_per_rate() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, color_system=None)
    print_summary(console, _results(), {})
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    for summary in summarize(_results()):
        row = summary.row()
        # Every cell of a rate's row on one line: nothing wrapped.
        assert sum(all(cell in line for cell in row.values()) for line in lines) == 1, row


def test_batched_seeds_report_their_shared_time_not_a_zero_spread() -> None:
    # Seeds trained together as one stacked model each carry the batch's time / 3.
    batched = summarize([_run(0.5, seed, 5.0) for seed in range(3)])[0].row()
    assert batched["seconds"] == "15.0"
    one_at_a_time = summarize([_run(0.5, seed, 1.0 + seed) for seed in range(3)])[0].row()
    assert one_at_a_time["seconds"] == "6.0"


def test_loss_plot_shows_validation_beside_training_loss() -> None:
    from matplotlib import pyplot as plt

    results = _results()
    figs = figures(results)
    try:
        titles = [ax.get_title() for ax in figs["loss.png"].axes]
        assert any("validation loss" in t for t in titles)
        assert any("training loss" in t for t in titles)
        val_axes = next(ax for ax in figs["loss.png"].axes if "validation" in ax.get_title())
        p0 = next(line for line in val_axes.get_lines() if line.get_label() == "p = 0")
        expected = [sum(r.history[e].val_loss for r in results[:3]) / 3 for e in range(4)]
        assert list(p0.get_ydata()) == pytest.approx(expected)
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_accuracy_plot_is_in_percent_as_in_the_table() -> None:
    from matplotlib import pyplot as plt

    results = _results()
    figs = figures(results)
    try:
        (ax,) = figs["accuracy.png"].axes
        p0 = next(line for line in ax.get_lines() if line.get_label() == "p = 0")
        expected = [100 * sum(r.history[e].val_acc for r in results[:3]) / 3 for e in range(4)]
        assert list(p0.get_ydata()) == pytest.approx(expected)
        assert "%" in ax.get_ylabel()
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_the_report_lists_only_the_settings_that_apply(tmp_path) -> None:
    mlp = CompareConfig(dataset="synthetic").flat()
    write_report(tmp_path, _results(), mlp, {"torch": "x"})
    page = (tmp_path / "report.html").read_text()
    assert "<th>lr</th>" in page
    for absent in ("variant", "schedule_epochs", "layer_scale"):
        assert f"<th>{absent}</th>" not in page, absent
    cnn = CompareConfig(train=TrainConfig(model="cnn", schedule="early", schedule_epochs=5))
    settings = applicable_settings(cnn.flat())
    assert settings["variant"] == "channel"
    assert settings["schedule_epochs"] == 5
    assert settings["hidden"] == [256]  # the cnn reads only the head's width
    assert "batched" not in settings  # only the mlp batches
