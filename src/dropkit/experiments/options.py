"""Checking the options of an experiment before any work: one function for compare and sweep.

Every check raises :class:`ConfigError` naming the option and saying what to give instead, so
the CLI can print one line and exit 2 before it loads data or creates a folder. Nothing is
clamped or ignored silently: a setting that would change nothing, or change what the table
reports, is refused.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from dropkit.experiments.datasets import DATASETS, REGRESSION_DATASETS, TASKS, dataset_task
from dropkit.experiments.models import CONV_VARIANTS, MODELS, count_sites
from dropkit.experiments.user import is_spec

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfigError",
    "check_auto",
    "check_options",
    "check_output",
    "check_results_database",
    "check_task",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "early", "late")
#: torch.Generator seeds are unsigned 64-bit; keep to the signed range every caller can hold.
_MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
    """A bad option: ``field`` is its Python name, ``option`` its CLI spelling, ``message`` why.

    Example:
        >>> error = ConfigError("split_seed", "must be non-negative, got -1")
        >>> error.option, error.message
        ('--split-seed', 'must be non-negative, got -1')
        >>> str(error)
        'split-seed: must be non-negative, got -1'
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field.replace('_', '-')}: {message}")
        self.field = field
        self.option = "--" + field.replace("_", "-")
        self.message = message


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_options(
    *,
    dataset: str | None = None,
    model: str | None = None,
    variant: str | None = None,
    hidden: Sequence[int] | None = None,
    layer_scale: Sequence[float] | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    early_stopping: int | None = None,
    schedule: str | None = None,
    schedule_epochs: int | None = None,
    label_noise: float | None = None,
    split_seed: int | None = None,
    rates: Sequence[float] | None = None,
    seeds: int | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    threads: int | None = None,
) -> None:
    """Raise :class:`ConfigError` for the first bad option; ``None`` means "not given".

    Used by :class:`~dropkit.experiments.TrainConfig`, ``CompareConfig`` and ``SweepConfig``, so
    ``dropkit compare`` and ``dropkit sweep`` refuse the same values with the same words.

    Example:
        >>> check_options(rates=(0.0, 0.5), layer_scale=(1.0, 3.0))
        Traceback (most recent call last):
        ...
        dropkit.experiments.options.ConfigError: layer-scale: rate 0.5 x scale 3 gives p = 1.5; every rate times every scale must be below 1
    """  # noqa: E501
    if dataset is not None and dataset not in DATASETS and not is_spec(dataset):
        raise ConfigError(
            "dataset",
            f"unknown {dataset!r}; expected one of {list(DATASETS)} or your own as "
            "FILE.py:NAME or package.module:NAME",
        )
    if model is not None and model not in MODELS and not is_spec(model):
        raise ConfigError(
            "model",
            f"unknown {model!r}; expected one of {list(MODELS)} or your own as "
            "FILE.py:NAME or package.module:NAME",
        )
    if variant is not None:
        if variant not in CONV_VARIANTS:
            raise ConfigError("variant", f"unknown {variant!r}; expected one of {CONV_VARIANTS}")
        if model is not None and model != "cnn" and variant != "channel":
            raise ConfigError(
                "variant", f"applies to --model cnn only, not {model!r}; leave it out"
            )
    if label_noise is not None and not (_finite(label_noise) and 0.0 <= label_noise < 1.0):
        raise ConfigError("label_noise", f"must be in [0, 1), got {label_noise}")
    if split_seed is not None and not 0 <= split_seed <= _MAX_SEED:
        raise ConfigError("split_seed", f"must be a non-negative integer, got {split_seed}")
    if rates is not None:
        if not rates:
            raise ConfigError("rates", "give at least one dropout rate")
        for rate in rates:
            if not (_finite(rate) and 0.0 <= rate < 1.0):
                raise ConfigError("rates", f"every rate must be in [0, 1), got {rate}")
        if len(set(rates)) != len(rates):
            raise ConfigError("rates", f"give each rate once, got {list(rates)}")
    if seeds is not None and seeds < 1:
        raise ConfigError("seeds", f"must be at least 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise ConfigError("epochs", f"must be at least 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer", f"unknown {optimizer!r}; expected one of {OPTIMIZERS}")
    if lr is not None and not (_finite(lr) and lr > 0):
        raise ConfigError("lr", f"must be a positive number, got {lr}")
    if weight_decay is not None and not (_finite(weight_decay) and weight_decay >= 0):
        raise ConfigError("weight_decay", f"must be a non-negative number, got {weight_decay}")
    if early_stopping is not None and early_stopping < 0:
        raise ConfigError("early_stopping", f"must be non-negative, got {early_stopping}")
    if hidden is not None and (not hidden or any(h < 1 for h in hidden)):
        raise ConfigError("hidden", f"sizes must be positive, got {list(hidden)}")
    _check_schedule(schedule, schedule_epochs, epochs)
    _check_layer_scale(layer_scale, model, hidden, rates)
    if n_trials is not None and n_trials < 1:
        raise ConfigError("n_trials", f"must be at least 1, got {n_trials}")
    if workers is not None and workers < 1:
        raise ConfigError("workers", f"must be at least 1, got {workers}")
    if timeout is not None and not (_finite(timeout) and timeout > 0):
        raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise ConfigError("threads", f"must be a whole number of threads, got {threads!r}")
    if threads is not None and threads < 1:
        raise ConfigError("threads", f"must be at least 1, got {threads}")


def _check_schedule(schedule: str | None, schedule_epochs: int | None, epochs: int | None) -> None:
    if schedule is not None and schedule not in SCHEDULES:
        raise ConfigError("schedule", f"unknown {schedule!r}; expected one of {SCHEDULES}")
    if schedule_epochs is None:
        return
    if schedule_epochs < 0:
        raise ConfigError("schedule_epochs", f"must be non-negative, got {schedule_epochs}")
    if schedule == "constant" and schedule_epochs:
        raise ConfigError(
            "schedule_epochs", "applies to --schedule early or late only; leave it out or add one"
        )
    if schedule == "early" and schedule_epochs == 0:
        raise ConfigError(
            "schedule_epochs",
            "--schedule early with 0 epochs of dropout never applies dropout; give "
            "--schedule-epochs N (the epochs with dropout), e.g. 10",
        )
    if schedule == "late" and epochs is not None and schedule_epochs >= epochs:
        raise ConfigError(
            "schedule_epochs",
            f"--schedule late starts dropout after epoch {schedule_epochs}, but there are only "
            f"{epochs} epochs; give fewer --schedule-epochs or more --epochs",
        )


def _check_layer_scale(
    layer_scale: Sequence[float] | None,
    model: str | None,
    hidden: Sequence[int] | None,
    rates: Sequence[float] | None,
) -> None:
    if layer_scale is None:
        return
    for scale in layer_scale:
        if not (_finite(scale) and scale >= 0):
            raise ConfigError(
                "layer_scale", f"every multiplier must be a non-negative number, got {scale}"
            )
    if model in MODELS:  # your own model's layers are counted once it is built
        sites = count_sites(model, hidden or (256, 128))
        if len(layer_scale) != sites:
            raise ConfigError(
                "layer_scale",
                f"{len(layer_scale)} multipliers for the {model}'s {sites} dropout layers; give "
                f"{sites} (one per layer, in forward order)",
            )
    for rate in rates or ():
        for scale in layer_scale:
            if rate * scale >= 1.0:
                raise ConfigError(
                    "layer_scale",
                    f"rate {rate:g} x scale {scale:g} gives p = {rate * scale:g}; every rate "
                    "times every scale must be below 1",
                )


def check_output(directory: Path, option: str = "output") -> None:
    """Raise :class:`ConfigError` unless ``directory`` is, or can become, a writable folder.

    Creates nothing: the check probes the deepest folder that exists with a temporary file.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(option, f"{path} is a file, not a folder; give a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            option, f"{path} is under {existing}, which is a file; give a folder elsewhere"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(
            option, f"cannot write into {existing} ({reason}); give a writable folder"
        ) from None


#: The columns a dropkit results database has; anything else is another program's file.
_TABLES = {
    "experiments": {"key", "config", "created"},
    "runs": {"experiment", "rate", "seed", "result", "finished"},
}


def check_results_database(path: Path, option: str = "output") -> None:
    """Raise :class:`ConfigError` if the file at ``path`` exists and is not dropkit's database.

    A corrupt file, another program's SQLite database, or one whose stored configurations
    dropkit cannot read, is named with what to do, instead of failing later mid-way.
    """
    path = Path(path)
    if not path.exists():
        return
    fix = "move it away or use another folder"
    if not path.is_file():
        raise ConfigError(option, f"{path} is not a regular file; {fix}")
    try:
        from dropkit.experiments.store import read_only_uri

        with closing(sqlite3.connect(read_only_uri(path), uri=True)) as db:
            tables = {
                name: {row[1] for row in db.execute(f"PRAGMA table_info({name})")}
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            configs = (
                [row[0] for row in db.execute("SELECT config FROM experiments")]
                if "config" in tables.get("experiments", set())
                else []
            )
    except sqlite3.Error as error:
        raise ConfigError(option, f"{path} is not a readable database ({error}); {fix}") from None
    for table, columns in _TABLES.items():
        if table in tables and not columns <= tables[table]:
            raise ConfigError(option, f"{path} is not a dropkit results database; {fix}")
    if tables and not set(_TABLES) & set(tables):
        raise ConfigError(option, f"{path} is not a dropkit results database; {fix}")
    for text in configs:
        try:
            config = json.loads(text)
        except (TypeError, ValueError):
            config = None
        if not (isinstance(config, dict) and isinstance(config.get("train"), dict)):
            raise ConfigError(option, f"{path} holds a configuration dropkit cannot read; {fix}")


def check_task(*, task: str, dataset: str, label_noise: float, auto: bool) -> None:
    """The task must be the data set's; refuse the options a regression cannot honour."""
    if task not in TASKS:
        raise ConfigError("task", f"unknown {task!r}; expected one of {list(TASKS)}")
    if task == "regression":
        if is_spec(dataset) or dataset not in REGRESSION_DATASETS:
            raise ConfigError(
                "dataset",
                f"{dataset} is a classification data set (integer labels); --task "
                f"regression runs on {' or '.join(REGRESSION_DATASETS)}",
            )
        if label_noise:
            raise ConfigError("label_noise", "applies to classification; leave it out")
        if auto:
            raise ConfigError(
                "rates", "auto (learned rates) runs on classification only; leave out auto"
            )
    elif dataset_task(dataset) == "regression":
        raise ConfigError("task", f"{dataset} is a regression data set; add --task regression")


def check_auto(
    *, schedule: str, layer_scale: Sequence[float] | None, model: str, variant: str
) -> None:
    """Refuse the settings a learned-rate run cannot honour, naming them."""
    if schedule != "constant":
        raise ConfigError(
            "rates",
            f"auto learns the rates, which --schedule {schedule} would set by epoch; "
            "leave out auto or the schedule",
        )
    if layer_scale is not None:
        raise ConfigError("rates", "auto learns each layer's rate; leave out auto or --layer-scale")
    if model == "rescnn" or (model == "cnn" and variant == "block"):
        what = "DropPath" if model == "rescnn" else "DropBlock"
        raise ConfigError(
            "rates",
            f"auto learns element and channel dropout rates; {model}'s {what} has no "
            "learned (Concrete) form; use --model mlp or cnn (--variant channel or element)",
        )
