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
    "PLOTS",
    "RateSummary",
    "Stat",
    "applicable_settings",
    "figures",
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

    def row(self, *, seeds: bool = False, epochs: bool = False) -> dict[str, str]:
        """The table row (terminal and HTML); ``seeds``/``epochs`` add those columns.

        Compact enough for 80 columns: the seed and epoch counts go into the title when every
        rate has the same (see :func:`table_title`).
        """
        row = {"rate": f"{self.rate:g}"}
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
    groups: dict[float, list[RunResult]] = defaultdict(list)
    for r in results:
        groups[r.rate].append(r)
    return dict(sorted(groups.items()))


def summarize(results: Sequence[RunResult]) -> list[RateSummary]:
    """Mean ± standard deviation over seeds of each rate's metrics."""
    return [
        RateSummary(
            rate=rate,
            seeds=len(runs),
            train_acc=Stat.of([r.train_acc for r in runs]),
            test_acc=Stat.of([r.test_acc for r in runs]),
            gap=Stat.of([r.gap for r in runs]),
            test_nll=Stat.of([r.test_nll for r in runs]),
            test_ece=Stat.of([r.test_ece for r in runs]),
            epochs=Stat.of([r.epochs_run for r in runs]),
            seconds=math.fsum(r.seconds for r in runs),
        )
        for rate, runs in _by_rate(results).items()
    ]


def verdict(results: Sequence[RunResult]) -> str:
    """Did the best dropout rate beat no dropout on test accuracy beyond seed noise?

    Runs with the same seed share data order and initialization, so rate ``p`` and rate 0 are
    compared seed by seed: dropout helped (or hurt) when the mean paired difference is more than
    two standard errors away from zero.
    """
    groups = _by_rate(results)
    if 0.0 not in groups:
        return "No verdict: the comparison has no rate 0 (no-dropout baseline)."
    baseline = {r.seed: r.test_acc for r in groups[0.0]}
    candidates = [
        (statistics.fmean(r.test_acc for r in runs), rate) for rate, runs in groups.items() if rate
    ]
    if not candidates:
        return "No verdict: the comparison has no dropout rate above 0."
    _, best = max(candidates)
    diffs = [r.test_acc - baseline[r.seed] for r in groups[best] if r.seed in baseline]
    if len(diffs) < 2:
        return (
            f"No verdict: fewer than 2 paired seeds for rate {best:g} (run with --seeds 3 or more)."
        )
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    change = f"{100 * mean:+.1f} ± {100 * se:.1f} points (paired over {len(diffs)} seeds)"
    if mean - 2 * se > 0:
        return f"Dropout helped: rate {best:g} changed test accuracy by {change}."
    if mean + 2 * se < 0:
        return f"Dropout hurt: even the best rate, {best:g}, changed test accuracy by {change}."
    return (
        f"No effect beyond seed noise: the best rate, {best:g}, changed test accuracy by {change}."
    )


def _mean_curve(runs: Sequence[RunResult], attr: str) -> list[float]:
    length = min(len(r.history) for r in runs)
    return [statistics.fmean(getattr(r.history[i], attr) for r in runs) for i in range(length)]


def figures(results: Sequence[RunResult]) -> dict[str, Any]:
    """The report's matplotlib figures by file name (close them with ``plt.close``).

    ``loss.png``: training and validation loss side by side; ``accuracy.png``: validation
    accuracy in percent, as in the table; ``gap.png``: train minus test accuracy in points.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = _by_rate(results)
    figs: dict[str, Any] = {}
    # Training and validation loss side by side on one scale: validation loss rising while
    # training loss falls is overfitting, the picture dropout is meant to change.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    for ax, attr, label in zip(
        axes, ("train_loss", "val_loss"), ("training loss", "validation loss"), strict=True
    ):
        for rate, runs in groups.items():
            curve = _mean_curve(runs, attr)
            ax.plot(range(1, len(curve) + 1), curve, label=f"p = {rate:g}")
        ax.set_xlabel("epoch")
        ax.set_title(f"{label} (mean over seeds)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend()
    figs["loss.png"] = fig
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for rate, runs in groups.items():
        curve = [100 * v for v in _mean_curve(runs, "val_acc")]  # percent, as in the table
        ax.plot(range(1, len(curve) + 1), curve, label=f"p = {rate:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy by dropout rate (mean over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    figs["accuracy.png"] = fig
    summary = summarize(results)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.errorbar(
        [s.rate for s in summary],
        [100 * s.gap.mean for s in summary],
        yerr=[100 * s.gap.std for s in summary],
        marker="o",
        capsize=4,
    )
    ax.set_xlabel("dropout rate p")
    ax.set_ylabel("train - test accuracy (points)")
    ax.set_title("generalization gap vs dropout rate")
    ax.grid(alpha=0.3)
    figs["gap.png"] = fig
    return figs


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
    "Accuracies in percent, mean ± standard deviation over seeds; the gap is train minus test "
    "accuracy in points (both measured in eval mode); NLL and ECE (15 equal-width bins) on the "
    "test set; seconds: the training time of all the rate's runs."
)


def _html(
    title: str,
    rows: list[dict[str, str]],
    verdict_line: str,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
    caption: str,
) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0]) if rows else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    figures = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, data in images.items()
    )

    def pairs(d: dict[str, object] | dict[str, str]) -> str:
        return "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in d.items()
        )

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
.verdict {{ font-size: 1.1em; font-weight: 600; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p class="verdict">{esc(verdict_line)}</p>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>{esc(caption)}</p>
<h2>Curves</h2>
{figures}
<h2>Configuration</h2>
<table id="config">{pairs(config)}</table>
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
            ]
        )
        for r in results:
            for e in r.history:
                writer.writerow(
                    [
                        r.rate,
                        r.seed,
                        e.epoch,
                        e.rate,
                        e.train_loss,
                        e.train_acc,
                        e.val_loss,
                        e.val_acc,
                        e.seconds,
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
    settings = applicable_settings(config)
    page = _html(title, rows, verdict(results), images, settings, environment, caption)
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
