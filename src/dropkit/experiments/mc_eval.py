"""Deterministic vs Monte Carlo dropout inference on the checkpoints of ``dropkit compare``."""

from __future__ import annotations

import math
import pickle
import statistics
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dropkit.experiments import user
from dropkit.experiments.compare import CHECKPOINT_FORMAT, CompareConfig
from dropkit.experiments.datasets import DatasetError, load_dataset
from dropkit.experiments.mc_regression import regression_scores
from dropkit.experiments.store import DB_NAME, Configuration, Store, StoreError
from dropkit.experiments.train import ConfigError, make_model
from dropkit.metrics import (
    brier_score,
    expected_calibration_error,
    misclassification_auroc,
    negative_log_likelihood,
)

__all__ = [
    "CheckpointError",
    "McRow",
    "check_checkpoint",
    "evaluate_checkpoints",
    "load_checkpoint",
    "resolve_configuration",
    "verify_checkpoints",
]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class McRow:
    """Test-set scores of one inference method on one run."""

    rate: float
    seed: int
    method: str  # "deterministic" or "MC (S samples)"
    accuracy: float
    nll: float
    ece: float
    brier: float
    auroc: float  # misclassification AUROC of the method's uncertainty
    seconds: float
    #: Regression (``--task regression``; the classification scores are then NaN), in the
    #: targets' units: see :mod:`dropkit.experiments.mc_regression`.
    rmse: float = math.nan
    coverage: float = math.nan  #: of the central 95% intervals
    width: float = math.nan
    calibration: float = math.nan  #: regression calibration error, levels 0.05 to 0.95
    noise_std: float = math.nan  #: the observation noise chosen on validation


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a ``dropkit compare`` checkpoint safely (``weights_only=True``) and check it."""
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path}: not a regular file; remove it from checkpoints/")
    retrain = (
        "delete it and run the same dropkit compare command again to retrain that run (or with "
        "--fresh to retrain them all)"
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text here suggests weights_only=False, that is, running whatever code
        # the file holds: advice dropkit never passes on about a file that fails this check.
        raise CheckpointError(
            f"{path}: not a readable checkpoint (damaged, or it holds more than tensors and "
            f"plain data, which dropkit does not load); {retrain}"
        ) from None
    except (zipfile.BadZipFile, RuntimeError, EOFError) as error:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (damaged or cut short: {type(error).__name__}); "
            f"{retrain}"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CheckpointError(f"{path}: cannot be read ({reason}); {retrain}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a dropkit compare checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    rate, seed = payload.get("rate"), payload.get("seed")
    if not (isinstance(rate, (int, float)) and 0.0 <= rate < 1.0):
        raise CheckpointError(f"{path}: its rate {rate!r} is not a dropout rate in [0, 1)")
    if not isinstance(seed, int):
        raise CheckpointError(f"{path}: its seed {seed!r} is not an integer")
    try:
        CompareConfig.from_json(payload["config"]).check()
    except ConfigError as error:
        raise CheckpointError(f"{path}: its configuration is invalid ({error})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{path}: its configuration is missing or unreadable ({type(error).__name__}: {error})"
        ) from None
    return payload


def _settings(config: dict[str, Any]) -> dict[str, object]:
    """A stored configuration's settings, one level deep, without the rates and seed count
    (a configuration's runs share everything else; see :meth:`CompareConfig.key`)."""
    flat = CompareConfig.from_json(config).flat()
    return {k: v for k, v in flat.items() if k not in ("rates", "seeds")}


def check_checkpoint(
    path: Path, payload: dict[str, Any], store: Store, chosen: Configuration, rate: float, seed: int
) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint is the run its database row names.

    Its configuration key, rate and seed must be the row's, and the configuration stored in it
    must be the row's (all but the rates and the seed count): a mismatch means a mixed-up
    folder, and the message names the file, the database and the settings that differ.
    """
    if payload.get("experiment") != chosen.key or (payload["rate"], payload["seed"]) != (
        rate,
        seed,
    ):
        raise CheckpointError(f"{path}: belongs to another configuration or run")
    try:
        row = _settings(chosen.config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{store.path}: configuration {chosen.folder} is not a dropkit compare one ({error})"
        ) from None
    stored = _settings(payload["config"])  # load_checkpoint has read it
    differ = [k for k in sorted(row.keys() | stored.keys()) if row.get(k) != stored.get(k)]
    if differ:
        shown = "; ".join(
            f"{k} = {_shown(stored.get(k))} in the checkpoint, {_shown(row.get(k))} in the row"
            for k in differ[:3]
        )
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise CheckpointError(
            f"{path} disagrees with its row in {store.path} (configuration {chosen.folder}): "
            f"{shown}{more}; the folder is mixed up: restore the checkpoint, or delete it and "
            "run the same dropkit compare command again"
        )


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "absent" if value is None else repr(value)


def verify_checkpoints(store: Store, chosen: Configuration) -> list[str]:
    """Check the checkpoints on disk that the rows of ``chosen`` name against their rows.

    Used by ``dropkit report``, which reads only the database: a checkpoint that disagrees with
    its row raises :class:`CheckpointError` (a mixed-up folder), while one that is missing or
    unreadable does not stop a report; the unreadable ones come back as messages to show.
    """
    unreadable = []
    for (rate, seed), checkpoint in sorted(store.done(chosen.key).items()):
        path = store.directory / checkpoint if checkpoint else None
        if path is None or not path.exists():
            continue
        try:
            payload = load_checkpoint(path)
        except CheckpointError as error:
            unreadable.append(str(error))
            continue
        check_checkpoint(path, payload, store, chosen, rate, seed)
    return unreadable


def _scores(probs: torch.Tensor, y: torch.Tensor, uncertainty: torch.Tensor) -> dict[str, float]:
    return {
        "accuracy": (probs.argmax(1) == y).float().mean().item(),
        "nll": negative_log_likelihood(probs, y),
        "ece": expected_calibration_error(probs, y),
        "brier": brier_score(probs, y),
        "auroc": misclassification_auroc(probs, y, uncertainty),
    }


def resolve_configuration(
    directory: Path, name: str | None = None
) -> tuple[Store, Configuration, list[Configuration]]:
    """The store, the chosen configuration and the others, for an output directory or one of
    its configuration folders (``name``: folder, key or a unique prefix; default: the only or
    the latest configuration)."""
    directory = Path(directory)
    in_output = directory.is_dir() and (directory.parent / DB_NAME).is_file()
    if in_output and not (directory / DB_NAME).is_file():
        name, directory = name or directory.name, directory.parent  # a configuration's folder
    store = Store(directory)
    try:
        chosen, others = store.choose(name)
    except StoreError as error:
        raise CheckpointError(str(error)) from None
    return store, chosen, others


def evaluate_checkpoints(
    directory: Path,
    *,
    samples: int = 30,
    rates: tuple[float, ...] | None = None,
    batch_size: int | None = None,
    configuration: str | None = None,
    method: str = "sampling",
) -> list[McRow]:
    """Score the checkpoints (with dropout) of one configuration in ``directory``, both ways.

    ``configuration`` chooses it (see :func:`resolve_configuration`); its runs' checkpoints are
    those its database rows name, and each must say it belongs to it, so configurations never
    mix. Deterministic inference uses eval mode and 1 - max probability as its uncertainty; MC
    inference averages ``samples`` passes of :func:`dropkit.mc.predict` (seed 0) and uses the
    predictive entropy. ``method``: ``"sampling"``, ``"moments"`` (one pass of moment
    propagation, ``predict(..., method="moments")``) or ``"both"``.
    """
    if method not in ("sampling", "moments", "both"):
        raise CheckpointError(f"expected method sampling, moments or both, got {method!r}")
    from dropkit.mc import predict

    store, chosen, _ = resolve_configuration(directory, configuration)
    try:
        config = CompareConfig.from_json(chosen.config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{store.path}: configuration {chosen.folder} is not a dropkit compare one ({error})"
        ) from None
    runs = sorted(store.done(chosen.key).items())
    data = None
    rows: list[McRow] = []
    for (rate, seed), checkpoint in runs:
        if rate == 0.0 or (rates is not None and rate not in rates):
            continue  # Monte Carlo dropout needs dropout
        if not checkpoint:
            raise CheckpointError(
                f"{chosen.folder}: run rate {rate:g} seed {seed} has no checkpoint; run the "
                "same dropkit compare command again to train it"
            )
        path = store.directory / checkpoint
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing; run the same dropkit compare command again to train it"
            )
        payload = load_checkpoint(path)
        check_checkpoint(path, payload, store, chosen, rate, seed)
        for spec, digest in dict(payload.get("sources", {})).items():
            if user.digest(spec) != digest:
                raise CheckpointError(
                    f"{spec}: the file changed since this run was trained; restore it or train "
                    "again with dropkit compare"
                )
        if data is None:
            try:
                data = load_dataset(
                    config.dataset, split_seed=config.split_seed, label_noise=config.label_noise
                )
            except DatasetError as error:
                raise CheckpointError(f"{chosen.folder}: {error}") from None
        try:
            model = make_model(config.train, data, rate)
        except ConfigError as error:
            raise CheckpointError(f"{chosen.folder}: {error}") from None
        try:
            model.load_state_dict(payload["state_dict"])
        except (RuntimeError, TypeError) as error:
            raise CheckpointError(f"{path}: weights do not fit the model ({error})") from None
        model.eval()
        kinds = ("sampling", "moments") if method == "both" else (method,)
        if config.task == "regression":
            nan = math.nan
            for label, seconds, scores in regression_scores(
                model, data, samples=samples, batch_size=batch_size, kinds=kinds
            ):
                rest = {k: v for k, v in scores.items() if k != "nll"}
                row = McRow(rate, seed, label, nan, scores["nll"], nan, nan, nan, seconds, **rest)
                rows.append(row)
            continue
        x, y = data.x_test, data.y_test
        start = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)
        seconds = time.perf_counter() - start
        det = _scores(probs, y, 1.0 - probs.max(1).values)
        rows.append(McRow(rate, seed, "deterministic", seconds=seconds, **det))
        for kind in kinds:
            start = time.perf_counter()
            result = predict(model, x, samples, batch_size=batch_size, seed=0, method=kind)
            seconds = time.perf_counter() - start
            mc = _scores(result.probs, y, result.predictive_entropy)
            label = f"MC ({samples} samples)" if kind == "sampling" else "moments (one pass)"
            rows.append(McRow(rate, seed, label, seconds=seconds, **mc))
    if not rows:
        raise CheckpointError(f"{chosen.folder}: no checkpoint with dropout (rate > 0) to evaluate")
    return rows


def summarize_rows(rows: list[McRow]) -> list[dict[str, str]]:
    """Mean ± std over seeds for each (rate, method), as table rows."""
    groups: dict[tuple[float, str], list[McRow]] = {}
    for row in rows:
        groups.setdefault((row.rate, row.method), []).append(row)

    def stat(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
        mean = statistics.fmean(values) * scale
        std = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    table = []
    for (rate, method), group in sorted(groups.items()):
        if not math.isnan(group[0].rmse):
            table.append(
                {
                    "rate": f"{rate:g}",
                    "inference": method,
                    "seeds": str(len(group)),
                    "RMSE": stat([r.rmse for r in group], 1, 2),
                    "NLL": stat([r.nll for r in group]),
                    "95% cover %": stat([r.coverage for r in group], 100, 1),
                    "95% width": stat([r.width for r in group], 1, 1),
                    "calib. error": stat([r.calibration for r in group]),
                    "noise std": stat([r.noise_std for r in group], 1, 2),
                    "seconds": stat([r.seconds for r in group], 1, 2),
                }
            )
            continue
        table.append(
            {
                "rate": f"{rate:g}",
                "inference": method,
                "seeds": str(len(group)),
                "accuracy %": stat([r.accuracy for r in group], 100, 1),
                "NLL": stat([r.nll for r in group]),
                "ECE": stat([r.ece for r in group]),
                "Brier": stat([r.brier for r in group]),
                "error AUROC": stat([r.auroc for r in group]),
                "seconds": stat([r.seconds for r in group], 1, 2),
            }
        )
    return table
