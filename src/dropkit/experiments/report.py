"""The report of a comparison: ``metrics.csv``, the plots and ``report.html``, from its results.

The parts live beside it: the table (:mod:`~dropkit.experiments.summary`), the verdict
(:mod:`~dropkit.experiments.verdict`), the figures (:mod:`~dropkit.experiments.plots`) and the
HTML (:mod:`~dropkit.experiments.page`); their public names are re-exported here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from dropkit.experiments.page import FIELDS, html_page, learned_section, write_sweep_report
from dropkit.experiments.plots import CAPTIONS, PLOTS, figures, plot_images, png_bytes
from dropkit.experiments.results import RunResult
from dropkit.experiments.summary import (
    RateSummary,
    Stat,
    learned_runs,
    summarize,
    table_title,
)
from dropkit.experiments.verdict import (
    LEVEL,
    SELECTION_RULE,
    LearnedEffect,
    PairedEffect,
    learned_effects,
    learned_lines,
    paired_effect,
    paired_interval,
    verdict,
)

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


_COMPARE_CAPTION = (
    "Accuracies in percent; every ± in the table is one standard deviation over seeds (the "
    "spread of the runs, not a confidence interval). The gap is train minus test accuracy in "
    "points (both measured in eval mode); NLL and ECE (15 equal-width bins) on the test set; "
    "seconds: the training time of all the rate's runs. The verdict above chooses the dropout "
    "rate on the validation split and gives a 95% paired t-interval (t with seeds - 1 degrees "
    "of freedom) for its test-accuracy difference against rate 0."
)

_REGRESSION_CAPTION = (
    "Regression: RMSE, its gap (test minus train) and the 95% interval width in the targets' "
    "units (not the standardized ones the model learned); every ± is one standard deviation "
    "over seeds. The network runs in eval mode (no dropout), and its predictive distribution "
    "is the Gaussian with one noise variance, the validation MSE: test NLL is its negative "
    "log-likelihood per target (nats, in the targets' units), cover the fraction of test "
    "targets inside its central 95% interval. The verdict chooses the rate on the validation "
    "split (lowest mean RMSE) and gives a 95% paired t-interval for its test-RMSE difference "
    "against rate 0. For MC dropout's predictive distribution: dropkit mc DIR."
)

_LEARNED_CAPTION = (
    "The auto row: the learned-rate runs (Concrete dropout, one per seed, the same seeds and "
    "data), with each dropout layer's final learned rate (mean over seeds) in brackets."
)


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
    learned = learned_runs(results)
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
    images = plot_images(results) if results else {}
    for name, data in images.items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    heading, rows = table_title(summarize(results))
    title = f"dropkit compare: {config.get('dataset', '?')} / {config.get('model', '?')}"
    regression = bool(results) and all(r.regression is not None for r in results)
    caption = f"{heading}. {_REGRESSION_CAPTION if regression else _COMPARE_CAPTION}"
    if learned:
        caption += f" {_LEARNED_CAPTION}"
    settings = applicable_settings(config)
    page = html_page(
        title,
        rows,
        verdict(results),
        images,
        settings,
        environment,
        caption,
        captions=CAPTIONS,
        meanings=FIELDS,
        extra=learned_section(results),
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
    if model != "mlp" or config.get("early_stopping") or config.get("task") == "regression":
        settings.pop("batched", None)  # regression runs train one at a time
    if config.get("task") == "regression":
        settings.pop("label_noise", None)
    return settings
