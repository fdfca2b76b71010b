"""Rate search with Optuna: one study, any number of workers, on SQLite or any database URL.

Optuna's documented way to distribute a search is to point every worker at the same database;
``dropkit sweep`` does that with the runner's training as the objective (validation accuracy,
reported every epoch so that the median pruner stops unpromising trials; the test split is
never used). Heartbeats are on: a trial whose worker died is marked failed and retried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropkit.experiments import user
from dropkit.experiments.datasets import dataset_task, load_dataset
from dropkit.experiments.models import conv_variants, count_sites, dropout_sites
from dropkit.experiments.options import ConfigError, check_options
from dropkit.experiments.train import TrainConfig, make_model, train

__all__ = [
    "SURPLUS",
    "SweepConfig",
    "SweepError",
    "SweepResult",
    "masked_storage",
    "route_optuna_logging",
    "run_sweep",
    "study_plots",
    "summarize",
    "trial_seed",
]


class SweepError(RuntimeError):
    """The study's storage cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class SweepConfig:
    """A search: data, model and budget, the study's name and storage, and how many workers."""

    dataset: str = "mnist1d"
    model: str = "mlp"
    epochs: int = 20
    batch_size: int = 64
    label_noise: float = 0.0
    split_seed: int = 0
    n_trials: int = 20
    timeout: float | None = None
    study: str = "dropkit-sweep"
    storage: str | None = None  # default: sqlite:///OUTPUT/sweep.sqlite
    workers: int = 1
    sampler_seed: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option; called before any work."""
        check_options(
            dataset=self.dataset,
            model=self.model,
            epochs=self.epochs,
            batch_size=self.batch_size,
            label_noise=self.label_noise,
            split_seed=self.split_seed,
            n_trials=self.n_trials,
            workers=self.workers,
            timeout=self.timeout,
        )
        if dataset_task(self.dataset) == "regression":
            raise ConfigError(
                "dataset",
                f"{self.dataset} is a regression data set; the sweep ranks trials by validation "
                "accuracy: choose a classification data set, or compare rates with dropkit "
                "compare --task regression",
            )

    def storage_url(self, output: Path) -> str:
        return self.storage or f"sqlite:///{(output / 'sweep.sqlite').resolve()}"


@dataclass(frozen=True)
class SweepResult:
    """The study's completed trials, best first, and the paired re-run of the best one."""

    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]  # completed trials only: number, state, value, params
    compare_command: str  # one line, ready to paste
    states: dict[str, int] = field(default_factory=dict)  # trials per state, e.g. PRUNED: 3


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: distinct per trial, the same on every machine.

    Workers (local processes or other machines) share one study, whose storage numbers its trials
    uniquely; seeding each trial from its number keeps two workers from drawing the same
    parameters, and keeps a one-worker search reproducible.

    Example:
        >>> trial_seed(0, 1) != trial_seed(0, 2), trial_seed(0, 1) == trial_seed(0, 1)
        (True, True)
    """
    digest = hashlib.blake2b(f"dropkit-sweep:{seed}:{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _sampler(seed: int) -> Any:
    """Optuna's TPE sampler, reseeded for every trial by :func:`trial_seed`."""
    import optuna
    from optuna.samplers import BaseSampler, TPESampler

    class TrialSeededTPE(BaseSampler):  # type: ignore[misc]
        def __init__(self) -> None:
            self._tpe = TPESampler(seed=seed)

        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            self._tpe = TPESampler(seed=trial_seed(seed, trial.number))
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self._tpe.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._tpe.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._tpe.reseed_rng()

    return TrialSeededTPE()


class _SurplusTrial(Exception):
    """A trial past ``n_trials``, started by a worker racing another; it is never run."""


#: The user attribute that marks a :class:`_SurplusTrial` in the study's storage.
SURPLUS = "dropkit_surplus"


class _OptunaLines(logging.Handler):
    """Optuna's warnings and errors as dropkit prints its own: one plain line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _SurplusTrial.__name__ in message:  # dropkit's own bookkeeping, not a failure
            return
        sys.stderr.write(f"{record.levelname.capitalize()} (optuna): {message}\n")


def route_optuna_logging() -> None:
    """Silence Optuna's progress chatter and print its warnings as dropkit's own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    logger = logging.getLogger("optuna")
    if not any(isinstance(h, _OptunaLines) for h in logger.handlers):
        logger.addHandler(_OptunaLines())


def _masked(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _storage(url: str) -> Any:
    import optuna
    from optuna.storages import RDBStorage

    try:  # Optuna >= 4.9 names it after heartbeats
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    except ImportError:  # older Optuna
        from optuna.storages import RetryFailedTrialCallback as Retry

    engine_kwargs = (
        {"connect_args": {"timeout": 60}}
        if url.startswith("sqlite")
        else {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10},
        }
    )
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=5,
                    grace_period=20,
                    heartbeat_stale_trial_callback=Retry(max_retry=2),
                )
        except ImportError as error:
            raise SweepError(
                f"{_masked(url)}: the database driver is missing ({error}); for PostgreSQL "
                "pip install 'psycopg[binary]'"
            ) from None
        except Exception as error:  # sqlalchemy's errors for a bad URL or an unreachable server
            text = str(error).strip()
            # Workers started together race to create Optuna's tables: the loser retries.
            if attempt < 4 and ("duplicate key" in text or "already exists" in text):
                time.sleep(0.5 + attempt)
                continue
            first_line = text.splitlines()[0] if text else type(error).__name__
            raise SweepError(
                f"{_masked(url)}: cannot open the study's storage: {first_line}"
            ) from None
    raise AssertionError("unreachable")


def _layer_scale(early: float, sites: int) -> tuple[float, ...] | None:
    """Rates growing linearly from ``early`` x rate at the first layer to the full rate."""
    if sites < 2:
        return None
    return tuple(round(early + (1.0 - early) * i / (sites - 1), 4) for i in range(sites))


def _sites(config: SweepConfig, data: Any = None) -> int:
    """How many dropout layers the swept model has (the layer scale spans them)."""
    if not user.is_spec(config.model):
        return count_sites(config.model)
    if data is None:  # your model may need the data's shape: build it on the data, as trials do
        data = load_dataset(
            config.dataset, split_seed=config.split_seed, label_noise=config.label_noise
        )
    return len(dropout_sites(make_model(TrainConfig(model=config.model), data, 0.0)))


def _objective(config: SweepConfig) -> Any:
    import optuna

    data = load_dataset(
        config.dataset, split_seed=config.split_seed, label_noise=config.label_noise
    )
    sites = _sites(config, data)

    def objective(trial: optuna.Trial) -> float:
        rate = trial.suggest_float("rate", 0.0, 0.7)
        early = trial.suggest_float("early_layer_scale", 0.25, 1.0)
        schedule = trial.suggest_categorical("schedule", ["constant", "early", "late"])
        schedule_epochs = (
            0 if schedule == "constant"
            else trial.suggest_int("schedule_epochs", 1, max(1, config.epochs // 2))
        )  # fmt: skip
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        # The variant where the model offers a choice (the cnn's conv blocks; DropBlock on 2-D
        # inputs); rescnn's DropPath and the mlp's element dropout are fixed.
        variant = "channel"
        if config.model == "cnn":
            choices = list(conv_variants(data.input_shape))
            variant = trial.suggest_categorical("variant", choices)
        train_config = TrainConfig(
            model=config.model,
            variant=variant,
            epochs=config.epochs,
            batch_size=config.batch_size,
            weight_decay=weight_decay,
            schedule=schedule,
            schedule_epochs=schedule_epochs,
            layer_scale=_layer_scale(early, sites),
        )

        def report(metrics: Any) -> None:
            trial.report(metrics.val_acc, metrics.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return train(train_config, data, rate, seed=0, on_epoch=report).val_acc

    return objective


def _optimize(config: SweepConfig, url: str, poll: float = 1.0) -> None:
    """One worker: run trials until the study holds ``n_trials`` finished ones in all.

    Workers share the count through the storage. While the finished and running trials of all
    workers reach ``n_trials``, a worker starts none: it waits for the running ones, since a
    worker that died leaves its trial running until the heartbeat check fails it and queues it
    again (then a waiting worker takes it). Two workers that decide at the same moment could
    still start one trial too many, so each trial first checks its place: the storage numbers
    trials in the order they start, and a trial with ``n_trials`` live ones (finished, running
    or waiting) before it is not run but stored as failed, marked :data:`SURPLUS`.
    """
    import optuna
    from optuna.trial import TrialState

    route_optuna_logging()  # again: a spawned worker starts with Optuna's defaults
    storage = _storage(url)
    study = optuna.load_study(
        study_name=config.study, storage=storage, sampler=_sampler(config.sampler_seed)
    )
    study_id = storage.get_study_id_from_name(config.study)
    vouched: set[int] = set()  # running trials this worker has given a first heartbeat
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    live = (*done, TrialState.RUNNING, TrialState.WAITING)
    objective = _objective(config)

    def bounded(trial: optuna.Trial) -> float:
        before = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=live)
            if t.number < trial.number
        ]
        if len(before) >= config.n_trials:
            trial.set_user_attr(SURPLUS, True)
            raise _SurplusTrial(f"trial {trial.number}: the study has {config.n_trials} already")
        return float(objective(trial))

    start = time.monotonic()
    while config.timeout is None or time.monotonic() - start < config.timeout:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]
        states = Counter(t.state for t in trials)
        finished = sum(states[s] for s in done)
        if finished >= config.n_trials:
            return
        if (
            finished + states[TrialState.RUNNING] >= config.n_trials
            and not states[TrialState.WAITING]
        ):
            # A worker killed between creating its trial and its heartbeat thread's first write
            # leaves a running trial with no heartbeat, which the stale check never fails: it
            # would be waited for forever. Each running trial gets one heartbeat from the first
            # worker that waits on it; a live trial's own heartbeats then keep it fresh, and
            # an orphan turns stale after the grace period and is retried like any other.
            for trial in trials:
                if trial.state == TrialState.RUNNING and trial.number not in vouched:
                    storage.record_heartbeat(
                        storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                    )
                    vouched.add(trial.number)
            time.sleep(poll)  # the last trials are running elsewhere
            continue
        left = None if config.timeout is None else config.timeout - (time.monotonic() - start)
        study.optimize(bounded, n_trials=1, timeout=left, catch=(_SurplusTrial,))


def _worker(config_json: dict[str, Any], url: str) -> None:
    _optimize(SweepConfig(**config_json), url)


def run_sweep(config: SweepConfig, output: Path) -> SweepResult:
    """Run (or resume) the study until it holds ``n_trials`` finished trials; summarize it."""
    import optuna

    config.check()
    route_optuna_logging()
    output.mkdir(parents=True, exist_ok=True)
    url = config.storage_url(output)
    optuna.create_study(
        study_name=config.study,
        storage=_storage(url),
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    if config.workers == 1:
        _optimize(config, url)
    else:
        context = multiprocessing.get_context("spawn")
        procs = [
            context.Process(target=_worker, args=(dataclasses.asdict(config), url))
            for _ in range(config.workers)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
    return summarize(config, url)


def summarize(config: SweepConfig, url: str) -> SweepResult:
    """The completed trials best first (pruned ones stopped early and are not ranked)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=config.study, storage=_storage(url))
    every = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]
    complete = sorted(
        (t for t in every if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: -float(t.value),
    )
    if not complete:
        raise SweepError(f"study {config.study!r} has no completed trial yet")
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)}
        for t in complete
    ]
    best = complete[0]
    p = best.params
    parts = [
        "dropkit compare",
        f"--dataset {config.dataset}",
        f"--model {config.model}",
        f"--rates 0,{p['rate']:.3f}",
        "--seeds 5",
        f"--epochs {config.epochs}",
        f"--weight-decay {p['weight_decay']:.2e}",
        f"--schedule {p['schedule']}",
    ]
    if p["schedule"] != "constant":
        parts.append(f"--schedule-epochs {p['schedule_epochs']}")
    if "variant" in p:
        parts.append(f"--variant {p['variant']}")
    scale = _layer_scale(p["early_layer_scale"], _sites(config))
    if scale is not None:
        parts.append(f"--layer-scale {','.join(f'{v:g}' for v in scale)}")
    if config.label_noise:
        parts.append(f"--label-noise {config.label_noise:g}")
    if config.split_seed:
        parts.append(f"--split-seed {config.split_seed}")
    states = dict(Counter(t.state.name for t in every))
    return SweepResult(float(best.value), dict(p), trials, " ".join(parts), states)


def study_plots(config: SweepConfig, output: Path) -> dict[str, bytes]:
    """PNGs of the study's optimization history and parameter importances (where computable)."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    from dropkit.experiments.plots import png_bytes

    study = optuna.load_study(study_name=config.study, storage=_storage(config.storage_url(output)))
    images: dict[str, bytes] = {}
    for name, plot in (
        ("history.png", optuna_plots.plot_optimization_history),
        ("importances.png", optuna_plots.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():  # Optuna's "experimental" and few-trials notices
                warnings.simplefilter("ignore")
                axes = plot(study)
        except (ValueError, RuntimeError):  # importances need a few completed trials
            continue
        images[name] = png_bytes(axes.figure)
        plt.close(axes.figure)
    return images


def masked_storage(config: SweepConfig, output: Path) -> str:
    """The study's storage URL without its password, for reports."""
    return _masked(config.storage_url(output))
