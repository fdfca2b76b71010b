"""What a person reads after ``dropkit compare``: the table, the plots, the report's settings."""

from __future__ import annotations

import io
from html.parser import HTMLParser

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


def _drawn(name: str, results: list[RunResult]):
    """Figure ``name`` of ``results``, drawn (tick labels exist only once it is drawn)."""
    figs = figures(results)
    for other, fig in figs.items():
        if other != name:
            from matplotlib import pyplot as plt

            plt.close(fig)
    figs[name].canvas.draw()
    return figs[name]


@pytest.mark.parametrize("name", ["loss.png", "accuracy.png", "gap.png"])
def test_every_panel_has_labelled_axes_and_tick_labels(name) -> None:
    from matplotlib import pyplot as plt

    fig = _drawn(name, _results())
    try:
        for ax in fig.axes:
            assert ax.get_xlabel(), (name, ax.get_title())
            assert ax.get_ylabel(), (name, ax.get_title())
            for axis in (ax.xaxis, ax.yaxis):
                shown = [t for t in axis.get_ticklabels(which="both") if t.get_visible()]
                assert any(t.get_text() for t in shown), (name, ax.get_title(), axis)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    ("name", "attr", "scale"), [("loss.png", "val_loss", 1), ("accuracy.png", "val_acc", 100)]
)
def test_curves_carry_a_band_over_seeds_from_lowest_to_highest(name, attr, scale) -> None:
    from matplotlib import pyplot as plt

    results = _results()
    fig = _drawn(name, results)
    try:
        ax = fig.axes[-1]  # the validation panel
        bands = ax.collections
        assert len(bands) == 3  # one per rate
        runs = [r for r in results if r.rate == 0.0]
        y = bands[0].get_paths()[0].vertices[:, 1]
        values = [scale * getattr(r.history[e], attr) for r in runs for e in range(4)]
        assert min(y) == pytest.approx(min(values))
        assert max(y) == pytest.approx(max(values))
        lowest = [min(scale * getattr(r.history[e], attr) for r in runs) for e in range(4)]
        assert all(any(v == pytest.approx(low) for v in y) for low in lowest)
        legend = next(a.get_legend() for a in fig.axes if a.get_legend())
        assert "band: range over seeds" in legend.get_title().get_text()
    finally:
        plt.close(fig)


def test_gap_error_bars_are_one_standard_deviation_over_seeds() -> None:
    from matplotlib import pyplot as plt

    from dropkit.experiments.report import CAPTIONS

    results = _results()
    fig = _drawn("gap.png", results)
    try:
        (ax,) = fig.axes
        (container,) = ax.containers
        segments = container.lines[2][0].get_segments()
        for summary, segment in zip(summarize(results), segments, strict=True):
            assert (segment[1][1] - segment[0][1]) / 2 == pytest.approx(100 * summary.gap.std)
        assert container.get_label() == "mean ± std over seeds"
        assert "standard deviation over seeds" in CAPTIONS["gap.png"]
    finally:
        plt.close(fig)


class _Page(HTMLParser):
    """The figure captions and the configuration table's rows of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.captions: list[str] = []
        self.config: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._in: list[str] = []
        self._table = ""

    def handle_starttag(self, tag, attrs) -> None:
        self._in.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("id", "")
        if tag == "tr" and self._table == "config":
            self.config.append([])
        if tag in ("figcaption", "p"):
            (self.captions if tag == "figcaption" else self.paragraphs).append("")

    def handle_endtag(self, tag) -> None:
        self._in.pop()

    def handle_data(self, data) -> None:
        where = self._in[-1] if self._in else ""
        if where == "figcaption":
            self.captions[-1] += data
        elif where == "p":
            self.paragraphs[-1] += data
        elif where in ("th", "td") and self._table == "config":
            self.config[-1].append(data)


def test_the_report_explains_its_figures_its_plus_minus_and_every_setting(tmp_path) -> None:
    from dropkit.experiments.report import FIELDS

    config = CompareConfig(dataset="synthetic").flat()
    write_report(tmp_path, _results(), config, {"torch": "x"})
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    assert len(page.captions) == 3
    for caption in page.captions:
        assert not caption.endswith(".png"), caption
        assert "over seeds" in caption, caption
    assert any("band" in c for c in page.captions)
    assert any("error bars" in c for c in page.captions)
    # Every ± of the page is defined where it appears: the table's in its caption, and the
    # verdict gives its interval as two ends, never as ±.
    text = (tmp_path / "report.html").read_text()
    table_caption = next(p for p in page.paragraphs if "every ± in the table" in p)
    assert "standard deviation over seeds" in table_caption
    assert "paired t-interval" in table_caption
    verdict_line = next(p for p in page.paragraphs if "rate 0" in p and "interval" in p)
    assert "±" not in verdict_line
    prose = [*page.paragraphs, *page.captions]
    cells = sum(cell.count("±") for cell in _table_cells(text))
    assert text.count("±") == sum(p.count("±") for p in prose) + cells  # nowhere else
    for p in prose:
        assert "±" not in p or "standard deviation over seeds" in p, p
    assert len(page.config) == len(applicable_settings(config))
    for row in page.config:
        assert len(row) == 3, row  # name, value, meaning
        assert row[2].strip(), row
    every = set(CompareConfig(code="x").flat())
    assert every <= set(FIELDS), every - set(FIELDS)
    assert "stacked model" in FIELDS["batched"]


def _table_cells(page: str) -> list[str]:
    """The text of the summary table's cells."""
    start = page.index('<table id="summary">')
    body = page[start : page.index("</table>", start)]
    return body.replace("<", "\n<").splitlines()


def test_the_terminal_summary_says_what_plus_minus_is() -> None:
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=80, color_system=None), _results(), {})
    out = " ".join(buffer.getvalue().split())
    assert "mean ± std over 3 seeds" in out
    assert "±: standard deviation over seeds (not an interval)" in out
    assert "95% paired t-interval" in out
