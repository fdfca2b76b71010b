"""Mean ± standard deviation over seeds of a comparison's runs, rate by rate: the table."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from dropkit.experiments.results import RunResult

__all__ = [
    "RateSummary",
    "RegressionStats",
    "Stat",
    "learned_runs",
    "runs_by_rate",
    "summarize",
    "table_title",
]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if any(math.isnan(v) for v in values):  # a score the runs lack (accuracy of regression)
            return cls(math.nan, math.nan)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std)

    def pct(self) -> str:
        return f"{100 * self.mean:.1f}±{100 * self.std:.1f}"

    def num(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f}±{self.std:.{digits}f}"


@dataclass(frozen=True)
class RegressionStats:
    """A rate's regression scores over seeds, in the targets' units (see
    :class:`~dropkit.experiments.results.RegressionScores`)."""

    train_rmse: Stat
    test_rmse: Stat
    gap: Stat  #: test minus train RMSE
    coverage: Stat  #: of the central 95% intervals, a fraction
    width: Stat  #: of the central 95% intervals
    calibration_error: Stat

    @classmethod
    def of(cls, runs: Sequence[RunResult]) -> RegressionStats | None:
        scores = [r.regression for r in runs if r.regression is not None]
        if not scores or len(scores) != len(runs):
            return None
        return cls(
            Stat.of([s.train_rmse for s in scores]),
            Stat.of([s.test_rmse for s in scores]),
            Stat.of([s.gap for s in scores]),
            Stat.of([s.coverage for s in scores]),
            Stat.of([s.width for s in scores]),
            Stat.of([s.calibration_error for s in scores]),
        )


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
    #: Regression runs' scores (their accuracies and ECE are NaN); None for classification.
    regression: RegressionStats | None = None

    def row(self, *, seeds: bool = False, epochs: bool = False) -> dict[str, str]:
        """The table row (terminal and HTML); ``seeds``/``epochs`` add those columns.

        Compact enough for 80 columns: the seed and epoch counts go into the title when every
        rate has the same (see :func:`table_title`).
        """
        row = {"rate": self.label or f"{self.rate:g}"}
        if seeds:
            row["seeds"] = str(self.seeds)
        if self.regression is not None:
            reg = self.regression
            row |= {
                "train RMSE": reg.train_rmse.num(1),
                "test RMSE": reg.test_rmse.num(1),
                "gap": reg.gap.num(1),
                "test NLL": self.test_nll.num(),
                "95% cover %": reg.coverage.pct(),
                "95% width": reg.width.num(0),
            }
        else:
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


def runs_by_rate(results: Sequence[RunResult]) -> dict[float, list[RunResult]]:
    """The runs at fixed rates by rate (learned-rate runs left out: see :func:`_learned`)."""
    groups: dict[float, list[RunResult]] = defaultdict(list)
    for r in results:
        if not r.learned:
            groups[r.rate].append(r)
    return dict(sorted(groups.items()))


def learned_runs(results: Sequence[RunResult]) -> list[RunResult]:
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
        regression=RegressionStats.of(runs),
    )


def summarize(results: Sequence[RunResult]) -> list[RateSummary]:
    """Mean ± standard deviation over seeds of each rate's metrics.

    Learned-rate runs (``--rates auto``) come last as one row labelled ``auto`` with each
    layer's final learned rate (mean over seeds), e.g. ``auto (0.12/0.08)``; its ``rate`` is
    the mean of those.
    """
    summaries = [_summary(runs, rate) for rate, runs in runs_by_rate(results).items()]
    learned = learned_runs(results)
    if learned:
        rates = _mean_layer_rates(learned)
        label = "auto (" + "/".join(f"{p:.3g}" for p in rates) + ")"
        summaries.append(_summary(learned, statistics.fmean(r.rate for r in learned), label))
    return summaries
