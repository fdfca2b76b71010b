"""Summaries, the verdict, plots and the HTML report of a comparison, from its results."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropkit.experiments.train import RunResult

if TYPE_CHECKING:
    from dropkit.experiments.sweep import SweepResult

__all__ = [
    "CAPTIONS",
    "FIELDS",
    "LEVEL",
    "PLOTS",
    "SELECTION_RULE",
    "LearnedEffect",
    "PairedEffect",
    "RateSummary",
    "Stat",
    "applicable_settings",
    "figures",
    "learned_effects",
    "learned_lines",
    "paired_effect",
    "paired_interval",
    "png_bytes",
    "summarize",
    "table_title",
    "verdict",
    "write_report",
    "write_sweep_report",
]

PLOTS = ("loss.png", "accuracy.png", "gap.png")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std)

    def pct(self) -> str:
        return f"{100 * self.mean:.1f}±{100 * self.std:.1f}"

    def num(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f}±{self.std:.{digits}f}"


@dataclass(frozen=True)
class RateSummary:
    rate: float
    seeds: int
    train_acc: Stat
    test_acc: Stat
    gap: Stat
    test_nll: Stat
    test_ece: Stat
    epochs: Stat
    #: Training time of all the rate's runs together. Not a mean ± std per run: seeds trained
    #: together as one stacked model have one time between them.
    seconds: float
    #: The row's name in place of the rate: the learned-rate runs' ``auto (p1/p2/...)``.
    label: str = ""

    def row(self, *, seeds: bool = False, epochs: bool = False) -> dict[str, str]:
        """The table row (terminal and HTML); ``seeds``/``epochs`` add those columns.

        Compact enough for 80 columns: the seed and epoch counts go into the title when every
        rate has the same (see :func:`table_title`).
        """
        row = {"rate": self.label or f"{self.rate:g}"}
        if seeds:
            row["seeds"] = str(self.seeds)
        row |= {
            "train %": self.train_acc.pct(),
            "test %": self.test_acc.pct(),
            "gap (pt)": self.gap.pct(),
            "test NLL": self.test_nll.num(),
            "test ECE": self.test_ece.num(),
        }
        if epochs:
            row["epochs"] = f"{self.epochs.mean:.0f}"
        row["seconds"] = f"{self.seconds:.1f}"
        return row


def table_title(summaries: Sequence[RateSummary]) -> tuple[str, list[dict[str, str]]]:
    """The table's title and rows: counts shared by every rate in the title, others as columns.

    Example:
        >>> s = Stat(0.5, 0.01)
        >>> rows = [RateSummary(0.0, 3, s, s, s, s, s, Stat(60, 0), 1.0)]
        >>> table_title(rows)[0]
        'dropout comparison: mean ± std over 3 seeds, 60 epochs'
    """
    seed_counts = {s.seeds for s in summaries}
    epoch_counts = {(s.epochs.mean, s.epochs.std) for s in summaries}
    parts = []
    if len(seed_counts) == 1:
        parts.append(f"{seed_counts.pop()} seeds")
    if len(epoch_counts) == 1 and next(iter(epoch_counts))[1] == 0:
        parts.append(f"{next(iter(epoch_counts))[0]:.0f} epochs")
    title = "dropout comparison: mean ± std over " + (", ".join(parts) if parts else "seeds")
    rows = [s.row(seeds="seeds" not in title, epochs="epochs" not in title) for s in summaries]
    return title, rows


def _by_rate(results: Sequence[RunResult]) -> dict[float, list[RunResult]]:
    """The runs at fixed rates by rate (learned-rate runs left out: see :func:`_learned`)."""
    groups: dict[float, list[RunResult]] = defaultdict(list)
    for r in results:
        if not r.learned:
            groups[r.rate].append(r)
    return dict(sorted(groups.items()))


def _learned(results: Sequence[RunResult]) -> list[RunResult]:
    """The learned-rate runs (``--rates auto``), by seed."""
    return sorted((r for r in results if r.learned), key=lambda r: r.seed)


def _mean_layer_rates(runs: Sequence[RunResult]) -> list[float]:
    """Each layer's final learned rate, the mean over the runs."""
    layers = [r.layer_rates or [] for r in runs]
    return [statistics.fmean(values) for values in zip(*layers, strict=True)]


def _summary(runs: Sequence[RunResult], rate: float, label: str = "") -> RateSummary:
    return RateSummary(
        rate=rate,
        seeds=len(runs),
        train_acc=Stat.of([r.train_acc for r in runs]),
        test_acc=Stat.of([r.test_acc for r in runs]),
        gap=Stat.of([r.gap for r in runs]),
        test_nll=Stat.of([r.test_nll for r in runs]),
        test_ece=Stat.of([r.test_ece for r in runs]),
        epochs=Stat.of([r.epochs_run for r in runs]),
        seconds=math.fsum(r.seconds for r in runs),
        label=label,
    )


def summarize(results: Sequence[RunResult]) -> list[RateSummary]:
    """Mean ± standard deviation over seeds of each rate's metrics.

    Learned-rate runs (``--rates auto``) come last as one row labelled ``auto`` with each
    layer's final learned rate (mean over seeds), e.g. ``auto (0.12/0.08)``; its ``rate`` is
    the mean of those.
    """
    summaries = [_summary(runs, rate) for rate, runs in _by_rate(results).items()]
    learned = _learned(results)
    if learned:
        rates = _mean_layer_rates(learned)
        label = "auto (" + "/".join(f"{p:.3g}" for p in rates) + ")"
        summaries.append(_summary(learned, statistics.fmean(r.rate for r in learned), label))
    return summaries


#: The confidence level of the verdict's interval.
LEVEL = 0.95

SELECTION_RULE = "the dropout rate with the highest mean validation accuracy"


@dataclass(frozen=True)
class PairedEffect:
    """The chosen dropout rate's effect on test accuracy against rate 0, paired by seed.

    ``low`` and ``high`` bound a paired t-interval at ``level`` for the mean difference (test
    accuracy at ``rate`` minus test accuracy at rate 0, seed by seed): the mean difference
    ± t(1 - (1 - level) / 2, seeds - 1) times its standard error.
    """

    rate: float
    val_acc: float  #: the mean validation accuracy that chose ``rate``
    mean: float
    low: float
    high: float
    level: float
    seeds: int

    @property
    def call(self) -> str:
        """``helped`` or ``hurt`` when the interval excludes 0, else ``no clear effect``."""
        if self.low > 0:
            return "helped"
        if self.high < 0:
            return "hurt"
        return "no clear effect"


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and paired t-interval ``(mean, low, high)`` of per-seed differences.

    Student's t with ``len(diffs) - 1`` degrees of freedom: with 3 seeds the half-width is
    4.30 standard errors at 95%, not the 2 (or 1.96) of a normal approximation.

    Example:
        >>> mean, low, high = paired_interval([0.01, 0.02, 0.03])
        >>> round(mean, 3), round(low, 4), round(high, 4)
        (0.02, -0.0048, 0.0448)
    """
    if len(diffs) < 2:
        raise ValueError(f"paired_interval: needs at least 2 differences, got {len(diffs)}")
    if not 0 < level < 1:
        raise ValueError(f"paired_interval: level must be in (0, 1), got {level}")
    from scipy import stats

    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * se
    return mean, mean - half, mean + half


def paired_effect(results: Sequence[RunResult], level: float = LEVEL) -> PairedEffect:
    """Choose a dropout rate on validation, then measure it against rate 0 on the test set.

    The rate is the one with the highest mean validation accuracy among the rates above 0 (on
    a tie, the lower rate); the test set is used only to measure that one rate, so picking the
    best of several rates on it cannot inflate the effect (the winner's curse). Runs are paired
    by seed (same data order and initialization).

    Raises:
        ValueError: naming what is missing (rate 0, a rate above 0, or 2 paired seeds).
    """
    groups = _by_rate(results)
    if 0.0 not in groups:
        raise ValueError("the comparison has no rate 0 (no-dropout baseline)")
    val_acc, chosen = _chosen_rate(groups)
    baseline = {r.seed: r.test_acc for r in groups[0.0]}
    diffs = [r.test_acc - baseline[r.seed] for r in groups[chosen] if r.seed in baseline]
    if len(diffs) < 2:
        raise ValueError(
            f"fewer than 2 paired seeds for rate {chosen:g} (run with --seeds 3 or more)"
        )
    mean, low, high = paired_interval(diffs, level)
    return PairedEffect(chosen, val_acc, mean, low, high, level, len(diffs))


def _chosen_rate(groups: dict[float, list[RunResult]]) -> tuple[float, float]:
    """``(mean validation accuracy, rate)`` of the rate above 0 that :data:`SELECTION_RULE`
    picks (on a tie, the lower rate)."""
    candidates = [
        (statistics.fmean(r.val_acc for r in runs), -rate, rate)
        for rate, runs in groups.items()
        if rate
    ]
    if not candidates:
        raise ValueError("the comparison has no dropout rate above 0")
    val_acc, _, chosen = max(candidates)
    return val_acc, chosen


#: The test metrics the learned-rate run is compared on: (attribute, name, scale, unit).
_LEARNED_METRICS = (
    ("test_acc", "test accuracy", 100.0, " points"),
    ("test_nll", "test NLL", 1.0, ""),
    ("test_ece", "test ECE", 1.0, ""),
)


@dataclass(frozen=True)
class LearnedEffect:
    """The learned-rate runs against one grid rate on one test metric, paired by seed.

    ``mean``, ``low`` and ``high``: the mean per-seed difference (learned minus the grid rate)
    and its paired t-interval at ``level`` (see :func:`paired_interval`), in the metric's own
    units (accuracy as a fraction). ``against`` says which rate and why it was chosen.
    """

    metric: str  #: ``test_acc``, ``test_nll`` or ``test_ece``
    rate: float
    against: str  #: ``rate 0`` or ``rate R (chosen on validation)``
    mean: float
    low: float
    high: float
    level: float
    seeds: int


def learned_effects(results: Sequence[RunResult], level: float = LEVEL) -> list[LearnedEffect]:
    """The learned-rate runs' test accuracy, NLL and ECE against rate 0 and against the grid's
    rate chosen on validation (the verdict's rate, :data:`SELECTION_RULE`), paired by seed.

    Empty without learned-rate runs. A baseline the grid lacks (no rate 0, no rate above 0) is
    left out; fewer than 2 paired seeds raise.

    Raises:
        ValueError: fewer than 2 seeds pair a learned run with a grid run.
    """
    learned = _learned(results)
    if not learned:
        return []
    groups = _by_rate(results)
    baselines: list[tuple[float, str]] = []
    if 0.0 in groups:
        baselines.append((0.0, "rate 0"))
    try:
        _, chosen = _chosen_rate(groups)
        baselines.append((chosen, f"rate {chosen:g} (chosen on validation)"))
    except ValueError:
        pass
    effects = []
    for rate, against in baselines:
        grid = {r.seed: r for r in groups[rate]}
        pairs = [(r, grid[r.seed]) for r in learned if r.seed in grid]
        if len(pairs) < 2:
            raise ValueError(
                f"fewer than 2 seeds pair the learned-rate runs with rate {rate:g} (run with "
                "--seeds 3 or more)"
            )
        for metric, *_ in _LEARNED_METRICS:
            diffs = [getattr(a, metric) - getattr(b, metric) for a, b in pairs]
            mean, low, high = paired_interval(diffs, level)
            effects.append(LearnedEffect(metric, rate, against, mean, low, high, level, len(pairs)))
    return effects


def learned_lines(results: Sequence[RunResult], level: float = LEVEL) -> list[str]:
    """The learned-rate runs' effects as sentences (empty without such runs).

    Each line: one baseline rate, the mean learned-minus-baseline difference of test accuracy
    (points), NLL and ECE with their paired t-intervals.
    """
    if not _learned(results):
        return []
    try:
        effects = learned_effects(results, level)
    except ValueError as error:
        return [f"Learned rates (auto): no paired comparison: {error}."]
    lines = []
    for against in dict.fromkeys(e.against for e in effects):
        parts = []
        for e in (e for e in effects if e.against == against):
            _, name, scale, unit = next(m for m in _LEARNED_METRICS if m[0] == e.metric)
            digits = 1 if scale > 1 else 3
            parts.append(
                f"{name} {scale * e.mean:+.{digits}f}{unit} ({scale * e.low:+.{digits}f} to "
                f"{scale * e.high:+.{digits}f})"
            )
        seeds = effects[0].seeds
        lines.append(
            f"Learned rates (auto) vs {against}, {100 * level:g}% paired t-intervals over "
            f"{seeds} seeds: " + "; ".join(parts) + "."
        )
    return lines


def verdict(results: Sequence[RunResult], level: float = LEVEL) -> str:
    """Did dropout change test accuracy beyond seed noise? One sentence naming how it decided.

    See :func:`paired_effect`: the rate is chosen on validation, and the call is ``helped`` or
    ``hurt`` when the paired t-interval of its test effect against rate 0 excludes 0.
    """
    try:
        effect = paired_effect(results, level)
    except ValueError as error:
        return f"No verdict: {error}."
    interval = (
        f"{100 * effect.level:g}% paired t-interval over {effect.seeds} seeds (t with "
        f"{effect.seeds - 1} degrees of freedom)"
    )
    ends = f"{100 * effect.low:+.1f} to {100 * effect.high:+.1f}"
    chosen = (
        f"rate {effect.rate:g} ({SELECTION_RULE}, {100 * effect.val_acc:.1f}%) changed test "
        f"accuracy vs rate 0 by {100 * effect.mean:+.1f} points"
    )
    if effect.call == "no clear effect":
        return f"No clear effect of dropout: {chosen}; its {interval}, {ends}, includes 0."
    return f"Dropout {effect.call}: {chosen} ({interval}: {ends})."


def _curves(runs: Sequence[RunResult], attr: str, scale: float = 1.0) -> tuple[list[float], ...]:
    """Mean, lowest and highest value over seeds of ``attr`` at each epoch all runs reached."""
    length = min(len(r.history) for r in runs)
    values = [[scale * getattr(r.history[i], attr) for r in runs] for i in range(length)]
    return (
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _plot_curves(ax: Any, groups: dict[float, list[RunResult]], attr: str, scale: float) -> None:
    for rate, runs in groups.items():
        mean, low, high = _curves(runs, attr, scale)
        epochs = range(1, len(mean) + 1)
        (line,) = ax.plot(epochs, mean, label=f"p = {rate:g}")
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


#: What each figure shows, for the report's captions.
CAPTIONS = {
    "loss.png": (
        "Training loss (left) and validation loss (right), cross-entropy on a log scale, by "
        "epoch and dropout rate p: line, the mean over seeds; shaded band, the range (lowest to "
        "highest) over seeds. The training loss is the mean over the epoch's batches, with "
        "dropout on; the validation loss is measured in eval mode after the epoch. Validation "
        "loss rising while training loss falls is overfitting."
    ),
    "accuracy.png": (
        "Validation accuracy in percent (eval mode, after each epoch) by epoch and dropout rate "
        "p: line, the mean over seeds; shaded band, the range (lowest to highest) over seeds."
    ),
    "gap.png": (
        "Generalization gap (train minus test accuracy, in points, both in eval mode after "
        "training) by dropout rate: dot, the mean over seeds; error bars, ± one standard "
        "deviation over seeds (the spread of the runs, not a confidence interval)."
    ),
    "learned_rates.png": (
        "The learned-rate runs (--rates auto, Concrete dropout): each dropout layer's learned "
        "rate p after each epoch, layers in forward order: line, the mean over seeds; shaded "
        "band, the range (lowest to highest) over seeds. Every layer starts at p = 0.1."
    ),
}


def figures(results: Sequence[RunResult]) -> dict[str, Any]:
    """The report's matplotlib figures by file name (close them with ``plt.close``).

    ``loss.png``: training and validation loss side by side; ``accuracy.png``: validation
    accuracy in percent, as in the table; ``gap.png``: train minus test accuracy in points.
    :data:`CAPTIONS` says what each shows, bands and error bars included.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = _by_rate(results)
    band = "line: mean over seeds, band: range over seeds"
    figs: dict[str, Any] = {}
    learned = _learned(results)
    # Training and validation loss side by side on one scale: validation loss rising while
    # training loss falls is overfitting, the picture dropout is meant to change.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    for ax, attr, label in zip(
        axes, ("train_loss", "val_loss"), ("training loss", "validation loss"), strict=True
    ):
        _plot_curves(ax, groups, attr, 1.0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (cross-entropy)")
        ax.set_title(label)
        ax.set_yscale("log")
        ax.tick_params(labelleft=True)  # sharey hides the right panel's ticks otherwise
        ax.grid(alpha=0.3)
    axes[0].legend(title=band, title_fontsize="small")
    figs["loss.png"] = fig
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    _plot_curves(ax, groups, "val_acc", 100.0)  # percent, as in the table
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy by dropout rate")
    ax.legend(title=band, title_fontsize="small")
    ax.grid(alpha=0.3)
    figs["accuracy.png"] = fig
    summary = [s for s in summarize(results) if not s.label]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.errorbar(
        [s.rate for s in summary],
        [100 * s.gap.mean for s in summary],
        yerr=[100 * s.gap.std for s in summary],
        marker="o",
        capsize=4,
        label="mean ± std over seeds",
    )
    ax.set_xlabel("dropout rate p")
    ax.set_ylabel("train - test accuracy (points)")
    ax.set_title("generalization gap vs dropout rate")
    ax.legend()
    ax.grid(alpha=0.3)
    figs["gap.png"] = fig
    if learned:
        figs["learned_rates.png"] = _learned_figure(plt, learned, band)
    return figs


def _learned_figure(plt: Any, learned: Sequence[RunResult], band: str) -> Any:
    """Each concrete layer's learned rate by epoch: mean over seeds, band the range."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    length = min(len(r.history) for r in learned)
    layers = min(len(r.history[0].layer_rates or []) for r in learned) if length else 0
    epochs = range(1, length + 1)
    for layer in range(layers):
        values = [[(r.history[i].layer_rates or [])[layer] for r in learned] for i in range(length)]
        mean = [statistics.fmean(v) for v in values]
        (line,) = ax.plot(epochs, mean, label=f"layer {layer + 1}")
        ax.fill_between(
            epochs,
            [min(v) for v in values],
            [max(v) for v in values],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("learned dropout rate p")
    ax.set_title("learned dropout rate by layer (Concrete dropout)")
    ax.legend(title=band, title_fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _plots(results: Sequence[RunResult]) -> dict[str, bytes]:
    from matplotlib import pyplot as plt

    images = {}
    for name, fig in figures(results).items():
        images[name] = png_bytes(fig)
        plt.close(fig)
    return images


def png_bytes(fig: object) -> bytes:
    """A matplotlib figure as PNG bytes (for files and for embedding in a report)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
    return buffer.getvalue()


_COMPARE_CAPTION = (
    "Accuracies in percent; every ± in the table is one standard deviation over seeds (the "
    "spread of the runs, not a confidence interval). The gap is train minus test accuracy in "
    "points (both measured in eval mode); NLL and ECE (15 equal-width bins) on the test set; "
    "seconds: the training time of all the rate's runs. The verdict above chooses the dropout "
    "rate on the validation split and gives a 95% paired t-interval (t with seeds - 1 degrees "
    "of freedom) for its test-accuracy difference against rate 0."
)

_LEARNED_CAPTION = (
    "The auto row: the learned-rate runs (Concrete dropout, one per seed, the same seeds and "
    "data), with each dropout layer's final learned rate (mean over seeds) in brackets."
)


def _learned_section(results: Sequence[RunResult]) -> str:
    """The HTML of the learned-rate runs' paired comparison (empty without such runs)."""
    if not _learned(results):
        return ""
    esc = html.escape
    try:
        effects = learned_effects(results)
    except ValueError as error:
        return f"<h2>Learned rates (auto)</h2><p>No paired comparison: {esc(str(error))}.</p>"
    body = ""
    for e in effects:
        _, name, scale, unit = next(m for m in _LEARNED_METRICS if m[0] == e.metric)
        digits = 1 if scale > 1 else 3
        cells = (
            name + unit.replace(" points", " (points)"),
            e.against,
            f"{scale * e.mean:+.{digits}f}",
            f"{scale * e.low:+.{digits}f} to {scale * e.high:+.{digits}f}",
            str(e.seeds),
        )
        body += "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
    head = "".join(
        f"<th>{esc(h)}</th>"
        for h in (
            "metric",
            "against",
            "learned minus against",
            f"{100 * LEVEL:g}% paired t-interval",
            "seeds",
        )
    )
    note = (
        "The learned-rate runs (auto) against the grid, seed by seed (the same data, "
        "initialization and batch order): the mean difference (learned minus the grid rate; "
        "accuracy in points, higher is better; NLL and ECE, lower is better) and its paired "
        "t-interval (t with seeds - 1 degrees of freedom). The grid rate is chosen on the "
        f"validation split ({SELECTION_RULE}), never on the test set."
    )
    return (
        f'<h2>Learned rates (auto)</h2><table id="learned"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table><p>{esc(note)}</p>"
    )


#: What each configuration field of a comparison means (``CompareConfig.flat()``'s keys).
FIELDS = {
    "dataset": "the data set (a built-in name, or your code as FILE.py:NAME)",
    "label_noise": "fraction of training labels replaced by random ones (0: none)",
    "split_seed": "seed of the train/validation split and of the label noise",
    "rates": "the dropout rates compared (0: no dropout, the baseline)",
    "seeds": "runs per rate; runs with the same seed share initial weights and batch order",
    "batched": (
        "True: the seeds of a rate were trained together as one stacked model, each run with "
        "its own initial weights, batch order and dropout masks (faster for small models); "
        "False: one run at a time"
    ),
    "code": "digest of model or data code passed as Python objects",
    "threads": (
        "torch's thread count while the runs trained, fixed so that the numbers do not depend "
        "on the machine's load; another count gives other bits and is stored apart"
    ),
    "auto": (
        "True: one learned-rate run per seed beside the rates (Concrete dropout, every layer "
        "from p = 0.1, regularizer weights l**2 / N and 2 / N with l = 0.01)"
    ),
    "model": "the model (mlp, cnn, rescnn, or your code as FILE.py:NAME)",
    "variant": "the cnn's conv-block dropout: channel, element or block (DropBlock)",
    "hidden": "hidden layer widths (mlp) or the head's width (cnn)",
    "layer_scale": "per-dropout-layer multipliers of the rate",
    "optimizer": "the optimizer (adam, adamw, or sgd with momentum 0.9)",
    "lr": "learning rate",
    "weight_decay": "weight decay (L2 penalty; decoupled for adamw)",
    "epochs": "training epochs per run (the most, with early stopping)",
    "batch_size": "examples per training batch",
    "early_stopping": "patience in epochs on validation loss (0: off)",
    "schedule": "constant, early or late dropout (Liu et al. 2023)",
    "schedule_epochs": "epochs with (early) or without (late) dropout",
}


def _html(
    title: str,
    rows: list[dict[str, str]],
    verdict_line: str,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
    caption: str,
    *,
    captions: dict[str, str] | None = None,
    meanings: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    esc = html.escape
    captions = captions or {}
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0]) if rows else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    figures = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>'
        f"{esc(captions.get(name, name))}</figcaption></figure>"
        for name, data in images.items()
    )

    def pairs(d: dict[str, object] | dict[str, str], notes: dict[str, str] | None = None) -> str:
        def note(k: object) -> str:
            return f'<td class="meaning">{esc(notes.get(str(k), ""))}</td>' if notes else ""

        return "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td>{note(k)}</tr>" for k, v in d.items()
        )

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
.verdict {{ font-size: 1.1em; font-weight: 600; }}
figure {{ display: inline-block; margin: 0.5em; max-width: 40em; vertical-align: top; }}
figcaption {{ font-size: 0.9em; }}
td.meaning {{ text-align: left; color: #555; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p class="verdict">{esc(verdict_line)}</p>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>{esc(caption)}</p>
{extra}
<h2>Figures</h2>
{figures}
<h2>Configuration</h2>
<table id="config">{pairs(config, meanings)}</table>
<h2>Environment</h2>
<table id="environment">{pairs(environment)}</table>
</body></html>
"""


def write_report(
    directory: Path,
    results: Sequence[RunResult],
    config: dict[str, object],
    environment: dict[str, str],
) -> dict[str, Path]:
    """Write ``metrics.csv``, the plots and ``report.html`` into ``directory``; return paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    csv_path = directory / "metrics.csv"
    learned = _learned(results)
    # Learned-rate runs: "auto" in the rate column, the epoch's mean learned rate in
    # epoch_rate, and each layer's rate in a column of its own (empty for the fixed rates).
    layers = max((len(e.layer_rates or []) for r in learned for e in r.history), default=0)
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rate",
                "seed",
                "epoch",
                "epoch_rate",
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "seconds",
                *(f"layer_{i + 1}_p" for i in range(layers)),
            ]
        )
        for r in results:
            for e in r.history:
                rates = list(e.layer_rates or [])
                writer.writerow(
                    [
                        "auto" if r.learned else r.rate,
                        r.seed,
                        e.epoch,
                        e.rate,
                        e.train_loss,
                        e.train_acc,
                        e.val_loss,
                        e.val_acc,
                        e.seconds,
                        *(rates + [""] * (layers - len(rates))),
                    ]
                )
    paths["metrics.csv"] = csv_path
    images = _plots(results) if results else {}
    for name, data in images.items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    heading, rows = table_title(summarize(results))
    title = f"dropkit compare: {config.get('dataset', '?')} / {config.get('model', '?')}"
    caption = f"{heading}. {_COMPARE_CAPTION}"
    if learned:
        caption += f" {_LEARNED_CAPTION}"
    settings = applicable_settings(config)
    page = _html(
        title,
        rows,
        verdict(results),
        images,
        settings,
        environment,
        caption,
        captions=CAPTIONS,
        meanings=FIELDS,
        extra=_learned_section(results),
    )
    (directory / "report.html").write_text(page, encoding="utf-8")
    paths["report.html"] = directory / "report.html"
    return paths


def applicable_settings(config: dict[str, object]) -> dict[str, object]:
    """The settings of a comparison that changed what ran (``CompareConfig.flat()``'s keys).

    The cnn's ``variant`` only for the cnn, ``schedule_epochs`` only with a schedule,
    ``layer_scale`` only when given, ``hidden`` only where the model reads it, ``batched`` only
    where runs can batch; other keys pass through.

    Example:
        >>> applicable_settings({"model": "mlp", "variant": "channel", "schedule": "constant",
        ...                      "schedule_epochs": 0, "layer_scale": None, "lr": 0.001})
        {'model': 'mlp', 'schedule': 'constant', 'lr': 0.001}
    """
    model = config.get("model")
    settings = dict(config)
    if model != "cnn":
        settings.pop("variant", None)
    if config.get("schedule") == "constant":
        settings.pop("schedule_epochs", None)
    if config.get("layer_scale") is None:
        settings.pop("layer_scale", None)
    hidden = config.get("hidden")
    if model == "rescnn":
        settings.pop("hidden", None)
    elif model == "cnn" and isinstance(hidden, (list, tuple)):
        settings["hidden"] = list(hidden[:1])  # the head's width; the convolutions are fixed
    if model != "mlp" or config.get("early_stopping"):
        settings.pop("batched", None)
    return settings


_SWEEP_CAPTION = (
    "The completed trials with the highest validation accuracy (percent, one seed each); pruned "
    "trials stopped early and are not ranked. A search's best trial is optimistic: the command "
    "above re-runs it against no dropout over several seeds, and that paired result is the one "
    "to trust."
)


def write_sweep_report(
    directory: Path,
    title: str,
    result: SweepResult,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
) -> Path:
    """Write ``sweep.html`` (the top trials, the compare command, the study's plots) and the
    plots as PNG files into ``directory``; return the page's path."""
    for name, data in images.items():
        (directory / name).write_bytes(data)
    rows = [
        {
            "trial": str(t["number"]),
            "val acc %": f"{100 * t['value']:.1f}",
            **{k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in t["params"].items()},
        }
        for t in result.trials[:10]
    ]
    columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order
    rows = [{c: row.get(c, "-") for c in columns} for row in rows]
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.states.items()))
    line = (
        f"Best validation accuracy {100 * result.best_value:.1f}% ({counts}). Re-run it "
        f"against no dropout with several seeds: {result.compare_command}"
    )
    page = _html(title, rows, line, images, config, environment, _SWEEP_CAPTION)
    path = directory / "sweep.html"
    path.write_text(page, encoding="utf-8")
    return path
