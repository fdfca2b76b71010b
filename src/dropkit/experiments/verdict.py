"""Did dropout help? The paired verdict of a comparison and the learned-rate runs' effects."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from dropkit.experiments.results import RunResult
from dropkit.experiments.summary import learned_runs, runs_by_rate

__all__ = [
    "LEARNED_METRICS",
    "LEVEL",
    "REGRESSION_SELECTION_RULE",
    "SELECTION_RULE",
    "LearnedEffect",
    "PairedEffect",
    "learned_effects",
    "learned_lines",
    "paired_effect",
    "paired_interval",
    "verdict",
]

#: The confidence level of the verdict's interval.
LEVEL = 0.95

SELECTION_RULE = "the dropout rate with the highest mean validation accuracy"
#: The rule for regression runs (``--task regression``).
REGRESSION_SELECTION_RULE = "the dropout rate with the lowest mean validation RMSE"


@dataclass(frozen=True)
class PairedEffect:
    """The chosen dropout rate's effect on test accuracy against rate 0, paired by seed.

    ``low`` and ``high`` bound a paired t-interval at ``level`` for the mean difference (test
    accuracy at ``rate`` minus test accuracy at rate 0, seed by seed): the mean difference
    ± t(1 - (1 - level) / 2, seeds - 1) times its standard error.
    """

    rate: float
    #: the mean validation accuracy that chose ``rate`` (regression: the validation RMSE)
    val_acc: float
    mean: float
    low: float
    high: float
    level: float
    seeds: int
    #: ``accuracy``, or ``RMSE`` for regression runs: then the differences are of test RMSE
    #: (in the targets' units) and lower is better.
    metric: str = "accuracy"

    @property
    def call(self) -> str:
        """``helped`` or ``hurt`` when the interval excludes 0, else ``no clear effect``."""
        sign = -1.0 if self.metric == "RMSE" else 1.0
        low, high = sorted((sign * self.low, sign * self.high))
        if low > 0:
            return "helped"
        if high < 0:
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
    groups = runs_by_rate(results)
    if 0.0 not in groups:
        raise ValueError("the comparison has no rate 0 (no-dropout baseline)")
    regression = bool(results) and all(r.regression is not None for r in results)
    val_acc, chosen = _chosen_rate(groups, regression)
    score = _test_rmse if regression else _test_acc
    baseline = {r.seed: score(r) for r in groups[0.0]}
    diffs = [score(r) - baseline[r.seed] for r in groups[chosen] if r.seed in baseline]
    if len(diffs) < 2:
        raise ValueError(
            f"fewer than 2 paired seeds for rate {chosen:g} (run with --seeds 3 or more)"
        )
    mean, low, high = paired_interval(diffs, level)
    metric = "RMSE" if regression else "accuracy"
    return PairedEffect(chosen, val_acc, mean, low, high, level, len(diffs), metric)


def _test_acc(r: RunResult) -> float:
    return r.test_acc


def _test_rmse(r: RunResult) -> float:
    return r.regression.test_rmse if r.regression is not None else math.nan


def _val_rmse(r: RunResult) -> float:
    return r.regression.val_rmse if r.regression is not None else math.nan


def _chosen_rate(
    groups: dict[float, list[RunResult]], regression: bool = False
) -> tuple[float, float]:
    """``(mean validation accuracy, rate)`` of the rate above 0 that :data:`SELECTION_RULE`
    picks (on a tie, the lower rate); for regression, ``(mean validation RMSE, rate)`` by
    :data:`REGRESSION_SELECTION_RULE`."""
    sign = -1.0 if regression else 1.0
    score = _val_rmse if regression else (lambda r: r.val_acc)
    candidates = [
        (sign * statistics.fmean(score(r) for r in runs), -rate, rate)
        for rate, runs in groups.items()
        if rate
    ]
    if not candidates:
        raise ValueError("the comparison has no dropout rate above 0")
    value, _, chosen = max(candidates)
    return sign * value, chosen


#: The test metrics the learned-rate run is compared on: (attribute, name, scale, unit).
LEARNED_METRICS = (
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
    learned = learned_runs(results)
    if not learned:
        return []
    groups = runs_by_rate(results)
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
        for metric, *_ in LEARNED_METRICS:
            diffs = [getattr(a, metric) - getattr(b, metric) for a, b in pairs]
            mean, low, high = paired_interval(diffs, level)
            effects.append(LearnedEffect(metric, rate, against, mean, low, high, level, len(pairs)))
    return effects


def learned_lines(results: Sequence[RunResult], level: float = LEVEL) -> list[str]:
    """The learned-rate runs' effects as sentences (empty without such runs).

    Each line: one baseline rate, the mean learned-minus-baseline difference of test accuracy
    (points), NLL and ECE with their paired t-intervals.
    """
    if not learned_runs(results):
        return []
    try:
        effects = learned_effects(results, level)
    except ValueError as error:
        return [f"Learned rates (auto): no paired comparison: {error}."]
    lines = []
    for against in dict.fromkeys(e.against for e in effects):
        parts = []
        for e in (e for e in effects if e.against == against):
            _, name, scale, unit = next(m for m in LEARNED_METRICS if m[0] == e.metric)
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
    if effect.metric == "RMSE":
        return _regression_verdict(effect)
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


def _regression_verdict(effect: PairedEffect) -> str:
    interval = (
        f"{100 * effect.level:g}% paired t-interval over {effect.seeds} seeds (t with "
        f"{effect.seeds - 1} degrees of freedom)"
    )
    ends = f"{effect.low:+.2f} to {effect.high:+.2f}"
    chosen = (
        f"rate {effect.rate:g} ({REGRESSION_SELECTION_RULE}, {effect.val_acc:.2f}) changed test "
        f"RMSE vs rate 0 by {effect.mean:+.2f} (the targets' units)"
    )
    if effect.call == "no clear effect":
        return f"No clear effect of dropout: {chosen}; its {interval}, {ends}, includes 0."
    return f"Dropout {effect.call}: {chosen} ({interval}: {ends})."
