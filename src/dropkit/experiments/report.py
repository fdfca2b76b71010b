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

from dropkit.experiments.train import RunResult

__all__ = ["PLOTS", "RateSummary", "Stat", "summarize", "verdict", "write_report"]

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
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"

    def num(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


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
    seconds: Stat

    def row(self) -> dict[str, str]:
        """The table row, as shown in the terminal and the HTML report."""
        return {
            "rate": f"{self.rate:g}",
            "seeds": str(self.seeds),
            "train acc %": self.train_acc.pct(),
            "test acc %": self.test_acc.pct(),
            "gap (points)": self.gap.pct(),
            "test NLL": self.test_nll.num(),
            "test ECE": self.test_ece.num(),
            "epochs": f"{self.epochs.mean:.0f}",
            "seconds": self.seconds.num(1),
        }


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
            seconds=Stat.of([r.seconds for r in runs]),
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


def _plots(results: Sequence[RunResult]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = _by_rate(results)
    images: dict[str, bytes] = {}
    for name, attr, label in (
        ("loss.png", "train_loss", "training loss"),
        ("accuracy.png", "val_acc", "validation accuracy"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for rate, runs in groups.items():
            curve = _mean_curve(runs, attr)
            ax.plot(range(1, len(curve) + 1), curve, label=f"p = {rate:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} by dropout rate (mean over seeds)")
        if attr == "train_loss":
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        images[name] = _png(fig)
        plt.close(fig)
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
    images["gap.png"] = _png(fig)
    plt.close(fig)
    return images


def _png(fig: object) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
    return buffer.getvalue()


def _html(
    title: str,
    rows: list[dict[str, str]],
    verdict_line: str,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
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
<p>Accuracies in percent, mean ± standard deviation over seeds; the gap is train minus test
accuracy (both measured in eval mode); NLL and ECE (15 equal-width bins) on the test set.</p>
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
    rows = [s.row() for s in summarize(results)]
    title = f"dropkit compare: {config.get('dataset', '?')} / {config.get('model', '?')}"
    page = _html(title, rows, verdict(results), images, config, environment)
    (directory / "report.html").write_text(page, encoding="utf-8")
    paths["report.html"] = directory / "report.html"
    return paths
