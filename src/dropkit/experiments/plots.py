"""The report's figures: loss and validation curves by rate, the gap, the learned rates."""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from dropkit.experiments.results import RunResult
from dropkit.experiments.summary import Stat, learned_runs, runs_by_rate, summarize

__all__ = ["CAPTIONS", "PLOTS", "figures", "plot_images", "png_bytes"]

PLOTS = ("loss.png", "accuracy.png", "gap.png")


def _curves(
    runs: Sequence[RunResult],
    attr: str,
    scale: float = 1.0,
    transform: Callable[[float], float] = float,
) -> tuple[list[float], ...]:
    """Mean, lowest and highest value over seeds of ``attr`` at each epoch all runs reached."""
    length = min(len(r.history) for r in runs)
    values = [[scale * transform(getattr(r.history[i], attr)) for r in runs] for i in range(length)]
    return (
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _plot_curves(
    ax: Any,
    groups: dict[float, list[RunResult]],
    attr: str,
    scale: float,
    transform: Callable[[float], float] = float,
) -> None:
    for rate, runs in groups.items():
        mean, low, high = _curves(runs, attr, scale, transform)
        epochs = range(1, len(mean) + 1)
        (line,) = ax.plot(epochs, mean, label=f"p = {rate:g}")
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


#: What each figure shows, for the report's captions.
CAPTIONS = {
    "loss.png": (
        "Training loss (left) and validation loss (right), cross-entropy (regression: squared "
        "error on the standardized targets) on a log scale, by "
        "epoch and dropout rate p: line, the mean over seeds; shaded band, the range (lowest to "
        "highest) over seeds. The training loss is the mean over the epoch's batches, with "
        "dropout on; the validation loss is measured in eval mode after the epoch. Validation "
        "loss rising while training loss falls is overfitting."
    ),
    "accuracy.png": (
        "Validation accuracy in percent (eval mode, after each epoch) by epoch and dropout rate "
        "p: line, the mean over seeds; shaded band, the range (lowest to highest) over seeds."
    ),
    "rmse.png": (
        "Regression: validation RMSE on the standardized targets (eval mode, after each epoch; "
        "times the targets' standard deviation it is in their units) by epoch and dropout rate "
        "p: line, the mean over seeds; shaded band, the range (lowest to highest) over seeds."
    ),
    "gap.png": (
        "Generalization gap (train minus test accuracy, in points, both in eval mode after "
        "training) by dropout rate: dot, the mean over seeds; error bars, ± one standard "
        "deviation over seeds (the spread of the runs, not a confidence interval). For "
        "regression: test minus train RMSE, in the targets' units."
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

    groups = runs_by_rate(results)
    band = "line: mean over seeds, band: range over seeds"
    figs: dict[str, Any] = {}
    learned = learned_runs(results)
    regression = bool(results) and all(r.regression is not None for r in results)
    # Training and validation loss side by side on one scale: validation loss rising while
    # training loss falls is overfitting, the picture dropout is meant to change.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    for ax, attr, label in zip(
        axes, ("train_loss", "val_loss"), ("training loss", "validation loss"), strict=True
    ):
        _plot_curves(ax, groups, attr, 1.0)
        ax.set_xlabel("epoch")
        loss = "squared error, standardized" if regression else "cross-entropy"
        ax.set_ylabel(f"{label} ({loss})")
        ax.set_title(label)
        ax.set_yscale("log")
        ax.tick_params(labelleft=True)  # sharey hides the right panel's ticks otherwise
        ax.grid(alpha=0.3)
    axes[0].legend(title=band, title_fontsize="small")
    figs["loss.png"] = fig
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if regression:
        _plot_curves(ax, groups, "val_loss", 1.0, math.sqrt)
        ax.set_ylabel("validation RMSE (standardized targets)")
        ax.set_title("validation RMSE by dropout rate")
    else:
        _plot_curves(ax, groups, "val_acc", 100.0)  # percent, as in the table
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title("validation accuracy by dropout rate")
    ax.set_xlabel("epoch")
    ax.legend(title=band, title_fontsize="small")
    ax.grid(alpha=0.3)
    figs["rmse.png" if regression else "accuracy.png"] = fig
    summary = [s for s in summarize(results) if not s.label]
    gaps = [
        s.regression.gap if s.regression is not None else Stat(100 * s.gap.mean, 100 * s.gap.std)
        for s in summary
    ]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.errorbar(
        [s.rate for s in summary],
        [g.mean for g in gaps],
        yerr=[g.std for g in gaps],
        marker="o",
        capsize=4,
        label="mean ± std over seeds",
    )
    ax.set_xlabel("dropout rate p")
    gap = "test - train RMSE (targets' units)" if regression else "train - test accuracy (points)"
    ax.set_ylabel(gap)
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


def plot_images(results: Sequence[RunResult]) -> dict[str, bytes]:
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
