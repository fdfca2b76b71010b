"""The paired experiment: the same model, data, seeds and budget at several dropout rates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropkit.experiments import user
from dropkit.experiments.batched import can_batch, train_batched
from dropkit.experiments.datasets import (
    Dataset,
    load_dataset,
)
from dropkit.experiments.options import check_auto, check_options, check_task
from dropkit.experiments.state import save_atomically
from dropkit.experiments.store import AUTO, STAGED, Store
from dropkit.experiments.threads import DEFAULT_THREADS, fixed_threads
from dropkit.experiments.train import (
    AUTO_INIT_P,
    EpochMetrics,
    ModelFn,
    RunResult,
    TrainConfig,
    _rate_setter,
    make_learned_model,
    make_model,
    train,
)

__all__ = [
    "AUTO_LABEL",
    "CHECKPOINT_FORMAT",
    "CompareConfig",
    "check_model",
    "config_folder",
    "run_compare",
    "save_checkpoint",
]


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: data, training, the rates to compare and the number of seeds.

    Saved as JSON next to the results (never executed). Runs are identified by everything but
    ``rates``, ``auto`` and ``seeds``, so adding a rate or a seed later reuses the finished runs.
    ``auto`` adds one learned-rate run per seed beside the grid (Concrete dropout, see
    :func:`~dropkit.experiments.train.make_learned_model`); those runs are stored apart from the
    grid's, under the configuration's key with ``+auto``, so adding ``auto`` later reuses the
    grid and a learned run is never read as one at a fixed rate.
    ``batched`` trains the seeds of a rate together as one stacked model where the model allows
    (see :mod:`dropkit.experiments.batched`); it is part of the runs' identity.
    ``threads`` is torch's thread count while the runs train (see
    :mod:`dropkit.experiments.threads`): fixed, so that the numbers do not change with the
    machine's load, and part of the identity, as another count gives other bits; ``None``
    leaves torch's count as it is and is what configurations stored without one mean.

    ``task`` is ``classification`` or ``regression`` (a regression data set, squared error,
    scores in the targets' units); part of the runs' identity, and left out of the JSON when it
    is the default, so classification configurations keep the keys they always had.

    ``dataset`` and ``train.model`` may name your own code (``FILE.py:NAME``,
    ``package.module:NAME``); the identity then includes the source files' digests, and
    ``code`` the digest of code passed as Python objects, so an edit starts a new configuration.
    """

    dataset: str = "mnist1d"
    label_noise: float = 0.0
    split_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    rates: tuple[float, ...] = (0.0, 0.2, 0.5)
    seeds: int = 3
    batched: bool = True
    code: str = ""
    auto: bool = False
    task: str = "classification"
    threads: int | None = DEFAULT_THREADS

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option; called before any work."""
        check_options(
            dataset=self.dataset,
            label_noise=self.label_noise,
            split_seed=self.split_seed,
            rates=self.rates,
            seeds=self.seeds,
            threads=self.threads,
            **dataclasses.asdict(self.train),
        )
        check_task(
            task=self.task,
            dataset=self.dataset,
            label_noise=self.label_noise,
            auto=self.auto,
        )
        if self.auto:
            check_auto(
                schedule=self.train.schedule,
                layer_scale=self.train.layer_scale,
                model=self.train.model,
                variant=self.train.variant,
            )

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["rates"] = list(self.rates)
        if not self.code:
            del data["code"]  # absent unless set, so built-in configurations keep their keys
        if not self.auto:
            del data["auto"]
        if self.task == "classification":
            del data["task"]
        if self.threads is None:  # stored before the count was fixed: the keys they had
            del data["threads"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareConfig:
        """The inverse of :meth:`to_json` (JSON turned the tuples into lists)."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        train: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data["train"].items()
        }
        fields["train"] = TrainConfig(**train)
        fields.setdefault("threads", None)  # stored before the count was fixed
        return cls(**fields)

    def key(self) -> str:
        """Identity of the runs: a hash of everything except the rates and the seed count."""
        identity = self.to_json()
        del identity["rates"], identity["seeds"]
        identity.pop("auto", None)  # a "rate" of its own: its runs have their own key
        sources = [user.digest(s) for s in (self.dataset, self.train.model) if user.is_spec(s)]
        if sources:
            identity["sources"] = sources
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def folder_name(self) -> str:
        """A readable folder name: the settings that differ from the defaults, or ``default``.

        The data set and the model are left out (the output folder is named after them); the
        store appends part of the key when another configuration of the folder has the name.
        """
        default = CompareConfig().flat()
        skip = {"dataset", "model", "rates", "seeds", "code", "auto"}
        parts = []
        for name, value in self.flat().items():
            if name in skip or value == default.get(name):
                continue
            option = name.replace("_", "-")
            if name == "batched":
                parts.append("batched" if value else "one-at-a-time")  # the CLI's flags
            elif isinstance(value, bool):
                parts.append(option if value else f"no-{option}")
            elif isinstance(value, list | tuple):
                parts.append(f"{option}-{','.join(f'{v:g}' for v in value)}")
            elif isinstance(value, float):
                parts.append(f"{option}-{value:g}")
            else:
                parts.append(f"{option}-{value}")
        name = re.sub(r"[^A-Za-z0-9.,=+-]+", "_", "_".join(parts)) or "default"
        return name if len(name) <= 80 else f"{name[:70]}-{self.key()[:8]}"

    def flat(self) -> dict[str, object]:
        """One level of keys, for the report's configuration table."""
        flat = {k: v for k, v in self.to_json().items() if k != "train"}
        flat.update(dataclasses.asdict(self.train))
        return flat


#: How a progress display names the learned-rate runs in place of a rate.
AUTO_LABEL = "auto"


@dataclass
class Progress:
    """Callbacks for a progress display; the library itself prints nothing.

    ``on_run_start`` gets the rate, or :data:`AUTO_LABEL` for a learned-rate run.
    """

    on_run_start: Callable[[float | str, int, int], None] = lambda rate, seed, epochs: None
    on_epoch: Callable[[EpochMetrics], None] = lambda metrics: None
    on_run_done: Callable[[RunResult, bool], None] = lambda result, skipped: None


def config_folder(output: Path, config: CompareConfig) -> Path:
    """The sub-folder of ``output`` that holds ``config``'s report, plots and checkpoints."""
    folder = Store(output).register(config.key(), config.to_json(), config.folder_name())
    return Path(output) / folder


@dataclass(frozen=True)
class _Place:
    """Where a set of runs goes: its key in the database and its files."""

    key: str
    output: Path
    folder: str
    progress: str  # sub-folder of the training states of unfinished runs

    def state_path(self, rate: float | str, seeds: Sequence[int]) -> Path:
        what = rate if isinstance(rate, str) else f"{rate:g}"
        name = f"rate-{what}_seeds-{'-'.join(map(str, seeds))}.pt"
        return self.output / self.folder / self.progress / name


def run_compare(
    config: CompareConfig,
    output: Path,
    *,
    fresh: bool = False,
    data: Dataset | None = None,
    progress: Progress | None = None,
    model_fn: ModelFn | None = None,
) -> list[RunResult]:
    """Train every (rate, seed) not yet in ``output``'s database; return all of this config's runs.

    A run is finished once its checkpoint is on disk and then its row in the database; the
    training state is saved every epoch, so an interruption (Ctrl-C) loses at most one epoch of
    one run and a second call resumes. ``fresh`` trains the runs again as a new set and replaces
    the earlier ones only when that set is complete (an interrupted ``fresh`` call resumes it).
    ``model_fn`` is your model as a Python callable (``config.train.model`` then only names it).
    With ``config.auto`` the learned-rate runs (one per seed, one at a time) follow the grid,
    resume and ``fresh`` as the grid's do, and come last in the list (``result.learned``).
    Everything runs with ``config.threads`` torch threads; torch's count is restored afterwards.
    """
    config.check()
    with fixed_threads(config.threads):
        return _run_compare(config, output, fresh, data, progress or Progress(), model_fn)


def _run_compare(
    config: CompareConfig,
    output: Path,
    fresh: bool,
    data: Dataset | None,
    progress: Progress,
    model_fn: ModelFn | None,
) -> list[RunResult]:
    if data is None:
        data = load_dataset(
            config.dataset, split_seed=config.split_seed, label_noise=config.label_noise
        )
    check_model(config, data, model_fn)
    output = Path(output)
    store = Store(output)
    key = config.key()
    folder = config_folder(output, config).name
    place = _Place(key, output, folder, "progress")
    if fresh:
        store.register(key + STAGED, config.to_json(), folder + STAGED)
        place = _Place(key + STAGED, output, folder, "progress-fresh")
    done = _verified(store, place)
    for rate in config.rates:
        todo = [seed for seed in range(config.seeds) if (rate, seed) not in done]
        for seed in range(config.seeds):
            if (rate, seed) in done:
                progress.on_run_done(_stored(store, place.key, rate, seed), True)
        if not todo:
            continue
        progress.on_run_start(rate, todo[0], config.train.epochs)
        for result, state in _train_runs(config, data, rate, todo, progress, place, model_fn):
            _finish(store, place, config, result)
            if state is not None:
                state.unlink(missing_ok=True)
            progress.on_run_done(result, False)
    if config.auto:
        learned_place = _Place(place.key + AUTO, output, folder, place.progress)
        store.register(learned_place.key, config.to_json(), folder + AUTO)
        _learn(config, data, store, learned_place, progress, model_fn)
    if fresh:
        sets = [(place.key, key)] + ([(place.key + AUTO, key + AUTO)] if config.auto else [])
        for staged, final in sets:
            for name in store.promote(staged, final):
                (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / folder / place.progress, ignore_errors=True)
    wanted = {(r, s) for r in config.rates for s in range(config.seeds)}
    results = [r for r in store.results(key) if (r.rate, r.seed) in wanted]
    learned = [r for r in store.results(key + AUTO) if r.seed < config.seeds] if config.auto else []
    complete = len(learned) == (config.seeds if config.auto else 0)
    results += sorted(learned, key=lambda r: r.seed)
    if len(results) == len(wanted) + len(learned) and complete:
        # States left by runs that were interrupted and then finished with other seeds; a
        # process still training here writes its state again after its next epoch.
        shutil.rmtree(output / folder / "progress", ignore_errors=True)
    return results


def check_model(config: CompareConfig, data: Dataset, model_fn: ModelFn | None = None) -> None:
    """Build your model once at the highest rate, so that a mistake in it (or a schedule or
    ``layer_scale`` it cannot take) is reported before any work as a ``ConfigError``; with
    ``auto``, also its learned-rate form (every model: a dropout layer without one is refused)."""
    if model_fn is not None or user.is_spec(config.train.model):
        rate = max(config.rates)
        _rate_setter(config.train, make_model(config.train, data, rate, model_fn), rate)
    if config.auto:
        make_learned_model(config.train, data, model_fn)


def _learn(
    config: CompareConfig,
    data: Dataset,
    store: Store,
    place: _Place,
    progress: Progress,
    model_fn: ModelFn | None,
) -> None:
    """The learned-rate runs not yet stored under ``place``, one seed at a time."""
    done = {seed for (_, seed) in _verified(store, place)}
    for seed in range(config.seeds):
        if seed in done:
            stored = next(r for r in store.results(place.key) if r.seed == seed)
            progress.on_run_done(stored, True)
            continue
        progress.on_run_start(AUTO_LABEL, seed, config.train.epochs)
        state = place.state_path(AUTO_LABEL, [seed])
        result = train(
            config.train,
            data,
            AUTO_INIT_P,
            seed,
            on_epoch=progress.on_epoch,
            model_fn=model_fn,
            state_path=state,
            learned=True,
        )
        _finish(store, place, config, result)
        state.unlink(missing_ok=True)
        progress.on_run_done(result, False)


def _verified(store: Store, place: _Place) -> set[tuple[float, int]]:
    """The finished runs whose checkpoint is there; the others are forgotten (trained again)."""
    done = set()
    for (rate, seed), checkpoint in store.done(place.key).items():
        if checkpoint and (place.output / checkpoint).is_file():
            done.add((rate, seed))
        else:
            store.drop(place.key, rate, seed)
    return done


def _finish(store: Store, place: _Place, config: CompareConfig, result: RunResult) -> None:
    """Checkpoint first (atomically, flushed to disk), then the row that makes the run done."""
    what = AUTO_LABEL if result.learned else f"{result.rate:g}"
    name = f"rate-{what}_seed-{result.seed}_{uuid.uuid4().hex[:8]}.pt"
    relative = f"{place.folder}/checkpoints/{name}"
    save_checkpoint(place.output / relative, config, result)
    if not store.save(place.key, result, relative):
        (place.output / relative).unlink(missing_ok=True)  # another process finished it first


def _train_runs(
    config: CompareConfig,
    data: Dataset,
    rate: float,
    seeds: list[int],
    progress: Progress,
    place: _Place,
    model_fn: ModelFn | None,
) -> Iterator[tuple[RunResult, Path | None]]:
    """The runs of one rate, each with its training state's file (delete it once stored)."""
    # The stacked model learns class labels; regression runs are trained one at a time.
    stack = config.batched and model_fn is None and config.task == "classification"
    if stack and can_batch(config.train):
        state = place.state_path(rate, seeds)
        results = train_batched(
            config.train, data, rate, seeds, on_epoch=progress.on_epoch, state_path=state
        )
        for i, result in enumerate(results):
            yield result, state if i == len(results) - 1 else None
        return
    for seed in seeds:
        if seed != seeds[0]:
            progress.on_run_start(rate, seed, config.train.epochs)
        state = place.state_path(rate, [seed])
        result = train(
            config.train,
            data,
            rate,
            seed,
            on_epoch=progress.on_epoch,
            model_fn=model_fn,
            state_path=state,
        )
        yield result, state


CHECKPOINT_FORMAT = "dropkit.compare/1"


def save_checkpoint(path: Path, config: CompareConfig, result: RunResult) -> Path:
    """Write a run's weights and configuration (plain data: loads with ``weights_only=True``)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "experiment": config.key(),
        "config": config.to_json(),
        "rate": result.rate,
        "seed": result.seed,
        "sources": _sources(config),
        "state_dict": result.model_state,
    }
    if result.learned:  # the weights of the concrete model (make_learned_model), not the grid's
        payload["experiment"] = config.key() + AUTO
        payload["learned"] = list(result.layer_rates or ())
    save_atomically(payload, path, durable=True)
    return path


def _sources(config: CompareConfig) -> dict[str, str]:
    """The digests of the user's files a configuration names, for ``dropkit mc`` to check."""
    specs = (config.dataset, config.train.model)
    return {s: user.digest(s) for s in specs if user.is_spec(s)}


def _stored(store: Store, key: str, rate: float, seed: int) -> RunResult:
    return next(r for r in store.results(key) if (r.rate, r.seed) == (rate, seed))
