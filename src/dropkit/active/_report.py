"""Summaries of an active-learning run: learning curves, labels to a target, the area under
the curve, each strategy paired against random, and the time spent scoring vs training.

Intervals are 95% Student-t intervals over seeds (the seeds are the independent replicates;
strategies are paired by seed, so a difference is taken seed by seed first).
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dropkit.active._store import RoundResult

__all__ = [
    "Interval",
    "StrategySummary",
    "summarize_active",
    "table_rows",
    "write_active_report",
]

# two-sided 95% quantiles of Student's t, by degrees of freedom
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% t-interval (``low == high == mean`` for one seed)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        """Example:
        >>> from dropkit.active import Interval
        >>> round(Interval.of([1.0, 2.0, 3.0]).high, 3)
        4.484
        """
        n = len(values)
        mean = statistics.fmean(values)
        if n < 2:
            return cls(mean, mean, mean, n)
        t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
        half = t * statistics.stdev(values) / math.sqrt(n)
        return cls(mean, mean - half, mean + half, n)

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n < 2:
            return f"{scale * self.mean:.{digits}f}"
        return (
            f"{scale * self.mean:.{digits}f} "
            f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"
        )


@dataclass(frozen=True)
class StrategySummary:
    """One strategy over its seeds."""

    strategy: str
    seeds: int
    sizes: list[int]  # labelled-set sizes, the curve's x
    accuracy: list[Interval]  # test accuracy at each size
    area: Interval  # mean accuracy over the curve (trapezoids on the labelled sizes)
    final: Interval  # test accuracy at the last size
    labels_to_target: float | None  # first size where the mean curve reaches the target
    reached: int  # seeds whose own curve reaches the target
    vs_random_area: Interval | None  # area minus random's, seed by seed
    vs_random_final: Interval | None
    train_seconds: float  # summed over seeds and rounds (wall)
    score_seconds: float
    train_cpu: float
    score_cpu: float


def _area(sizes: Sequence[int], accuracy: Sequence[float]) -> float:
    """Normalised area under the learning curve: the curve's mean height."""
    if len(sizes) < 2 or sizes[-1] == sizes[0]:
        return float(accuracy[0])
    total = sum(
        (sizes[i + 1] - sizes[i]) * (accuracy[i + 1] + accuracy[i]) / 2
        for i in range(len(sizes) - 1)
    )
    return total / (sizes[-1] - sizes[0])


def _first_reach(sizes: Sequence[int], accuracy: Sequence[float], target: float) -> int | None:
    return next((s for s, a in zip(sizes, accuracy, strict=True) if a >= target), None)


def summarize_active(
    results: Sequence[RoundResult], target: float | None = None
) -> tuple[list[StrategySummary], float | None]:
    """Per-strategy summaries of ``results``, and the target accuracy used.

    Only rounds that every seed of a strategy finished enter its curve. ``target``: the
    accuracy whose labels-to-reach is counted; None: random's mean final accuracy when random
    is among the strategies (how many labels each strategy needs to do as well as random does
    with them all), else no target.
    """
    runs: dict[str, dict[int, dict[int, RoundResult]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        runs[r.strategy][r.seed][r.round] = r
    curves: dict[str, tuple[list[int], dict[int, list[float]]]] = {}
    for strategy, seeds in runs.items():
        common = min(len(rounds) for rounds in seeds.values())
        sizes = [seeds[min(seeds)][i].labelled for i in range(common)]
        curves[strategy] = (sizes, {s: [rounds[i].test_acc for i in range(common)]
                                    for s, rounds in seeds.items()})  # fmt: skip
    if target is None and "random" in curves:
        target = statistics.fmean(acc[-1] for acc in curves["random"][1].values())
    random_sizes, random_acc = curves.get("random", ([], {}))
    summaries = []
    for strategy, (sizes, by_seed) in curves.items():
        points = [Interval.of([acc[i] for acc in by_seed.values()]) for i in range(len(sizes))]
        areas = {s: _area(sizes, acc) for s, acc in by_seed.items()}
        vs_area = vs_final = None
        paired = sorted(set(by_seed) & set(random_acc))
        if (
            strategy != "random"
            and paired
            and random_sizes[: len(sizes)] == sizes[: len(random_sizes)]
        ):
            n = min(len(sizes), len(random_sizes))
            diff_area = [
                _area(sizes[:n], by_seed[s][:n]) - _area(sizes[:n], random_acc[s][:n])
                for s in paired
            ]
            diff_final = [by_seed[s][n - 1] - random_acc[s][n - 1] for s in paired]
            vs_area, vs_final = Interval.of(diff_area), Interval.of(diff_final)
        reach = None if target is None else _first_reach(sizes, [p.mean for p in points], target)
        reached = 0 if target is None else sum(
            _first_reach(sizes, acc, target) is not None for acc in by_seed.values()
        )  # fmt: skip
        rows = [r for seed in runs[strategy].values() for r in seed.values()]
        summaries.append(
            StrategySummary(
                strategy=strategy,
                seeds=len(by_seed),
                sizes=sizes,
                accuracy=points,
                area=Interval.of(list(areas.values())),
                final=points[-1],
                labels_to_target=reach,
                reached=reached,
                vs_random_area=vs_area,
                vs_random_final=vs_final,
                train_seconds=sum(r.train_seconds for r in rows),
                score_seconds=sum(r.score_seconds for r in rows),
                train_cpu=sum(r.train_cpu for r in rows),
                score_cpu=sum(r.score_cpu for r in rows),
            )
        )
    return summaries, target


def table_rows(summaries: Sequence[StrategySummary]) -> list[dict[str, str]]:
    """The summary table (accuracies in percent, intervals in brackets)."""
    rows = []
    for s in summaries:
        rows.append(
            {
                "strategy": s.strategy,
                "seeds": str(s.seeds),
                "labels to target": "not reached"
                if s.labels_to_target is None
                else f"{s.labels_to_target} ({s.reached}/{s.seeds} seeds)",
                "area under curve %": s.area.text(100),
                "final acc %": s.final.text(100),
                "area - random (pts)": ""
                if s.vs_random_area is None
                else s.vs_random_area.text(100),
                "final - random (pts)": ""
                if s.vs_random_final is None
                else s.vs_random_final.text(100),
                "score s (cpu)": f"{s.score_seconds:.1f} ({s.score_cpu:.1f})",
                "train s (cpu)": f"{s.train_seconds:.1f} ({s.train_cpu:.1f})",
            }
        )
    return rows


def _figures(summaries: Sequence[StrategySummary]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from dropkit.experiments.plots import png_bytes

    images = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in summaries:
        mean = [100 * p.mean for p in s.accuracy]
        ax.plot(s.sizes, mean, marker="o", markersize=3, label=s.strategy)
        ax.fill_between(
            s.sizes, [100 * p.low for p in s.accuracy], [100 * p.high for p in s.accuracy],
            alpha=0.15,
        )  # fmt: skip
    ax.set_xlabel("labelled examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Learning curves: mean and 95% interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    images["learning-curves.png"] = png_bytes(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [s.strategy for s in summaries]
    ax.barh(names, [s.train_cpu for s in summaries], label="training")
    ax.barh(
        names, [s.score_cpu for s in summaries], left=[s.train_cpu for s in summaries],
        label="scoring and choosing",
    )  # fmt: skip
    ax.set_xlabel("CPU seconds, all seeds and rounds")
    ax.legend()
    images["time.png"] = png_bytes(fig)
    plt.close(fig)
    return images


def write_active_report(
    directory: Path,
    results: Sequence[RoundResult],
    config: dict[str, object],
    *,
    target: float | None = None,
    environment: dict[str, str] | None = None,
) -> Path:
    """Write ``report.html`` (curves, tables, configuration) into ``directory``; return it."""
    summaries, target = summarize_active(results, target)
    rows = table_rows(summaries)
    images = _figures(summaries)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (directory / name).write_bytes(data)
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
    curve_head = "<th>labelled</th>" + "".join(f"<th>{esc(s.strategy)}</th>" for s in summaries)
    sizes = max((s.sizes for s in summaries), key=len, default=[])
    curve_rows = "".join(
        f"<tr><td>{size}</td>"
        + "".join(
            f"<td>{esc(s.accuracy[i].text(100))}</td>" if i < len(s.accuracy) else "<td></td>"
            for s in summaries
        )
        + "</tr>"
        for i, size in enumerate(sizes)
    )
    target_text = "none" if target is None else f"{100 * target:.1f}%"

    def pairs(d: dict[str, object] | dict[str, str]) -> str:
        return "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in d.items()
        )

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dropkit active learning</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Active learning: {esc(str(config.get("dataset", "")))}</h1>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Target accuracy: {esc(target_text)} (by default random's final mean accuracy). Means over
seeds with 95% t-intervals in brackets. The area under the learning curve is the curve's mean
height (trapezoids over the labelled-set sizes). Differences with random are taken seed by seed
(same initial labels, same first model), in accuracy points. Times: wall seconds summed over
seeds and rounds, process CPU seconds in parentheses.</p>
<h2>Curves</h2>
{figures}
<table id="curves"><thead><tr>{curve_head}</tr></thead><tbody>{curve_rows}</tbody></table>
<h2>Configuration</h2>
<table id="config">{pairs(config)}</table>
<h2>Environment</h2>
<table id="environment">{pairs(environment or {})}</table>
</body></html>
"""
    path = directory / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
