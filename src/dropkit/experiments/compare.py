"""The paired experiment: the same model, data, seeds and budget at several dropout rates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dropkit.experiments.batched import can_batch, train_batched
from dropkit.experiments.datasets import Dataset, load_dataset
from dropkit.experiments.options import check_options
from dropkit.experiments.store import Store
from dropkit.experiments.train import EpochMetrics, RunResult, TrainConfig, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "CompareConfig",
    "checkpoint_path",
    "run_compare",
    "save_checkpoint",
]


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: data, training, the rates to compare and the number of seeds.

    Saved as JSON next to the results (never executed). Runs are identified by everything but
    ``rates`` and ``seeds``, so adding a rate or a seed later reuses the finished runs.
    ``batched`` trains the seeds of a rate together as one stacked model where the model allows
    (see :mod:`dropkit.experiments.batched`); it is part of the runs' identity.
    """

    dataset: str = "mnist1d"
    label_noise: float = 0.0
    split_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    rates: tuple[float, ...] = (0.0, 0.2, 0.5)
    seeds: int = 3
    batched: bool = True

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option; called before any work."""
        check_options(
            dataset=self.dataset,
            label_noise=self.label_noise,
            split_seed=self.split_seed,
            rates=self.rates,
            seeds=self.seeds,
            **dataclasses.asdict(self.train),
        )

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["rates"] = list(self.rates)
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
        return cls(**fields)

    def key(self) -> str:
        """Identity of the runs: a hash of everything except the rates and the seed count."""
        identity = self.to_json()
        del identity["rates"], identity["seeds"]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def flat(self) -> dict[str, object]:
        """One level of keys, for the report's configuration table."""
        flat = {k: v for k, v in self.to_json().items() if k != "train"}
        flat.update(dataclasses.asdict(self.train))
        return flat


@dataclass
class Progress:
    """Callbacks for a progress display; the library itself prints nothing."""

    on_run_start: Callable[[float, int, int], None] = lambda rate, seed, epochs: None
    on_epoch: Callable[[EpochMetrics], None] = lambda metrics: None
    on_run_done: Callable[[RunResult, bool], None] = lambda result, skipped: None


def run_compare(
    config: CompareConfig,
    output: Path,
    *,
    fresh: bool = False,
    data: Dataset | None = None,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Train every (rate, seed) not yet in ``output``'s database; return all of this config's runs.

    Each run is stored as soon as it finishes, so an interruption (Ctrl-C) keeps the finished
    ones and a second call resumes; ``fresh`` forgets this configuration's earlier runs first.
    """
    config.check()
    progress = progress or Progress()
    if data is None:
        data = load_dataset(
            config.dataset, split_seed=config.split_seed, label_noise=config.label_noise
        )
    store = Store(output)
    key = config.key()
    store.register(key, config.to_json())
    if fresh:
        store.forget(key)
    done = store.done(key)
    for rate in config.rates:
        todo = [seed for seed in range(config.seeds) if (rate, seed) not in done]
        for seed in range(config.seeds):
            if (rate, seed) in done:
                progress.on_run_done(_stored(store, key, rate, seed), True)
        if not todo:
            continue
        progress.on_run_start(rate, todo[0], config.train.epochs)
        for result in _train_runs(config, data, rate, todo, progress):
            store.save(key, result)
            save_checkpoint(output, config, result)
            progress.on_run_done(result, False)
    wanted = {(r, s) for r in config.rates for s in range(config.seeds)}
    return [r for r in store.results(key) if (r.rate, r.seed) in wanted]


def _train_runs(
    config: CompareConfig, data: Dataset, rate: float, seeds: list[int], progress: Progress
) -> Iterator[RunResult]:
    """The runs of one rate: together when batching is on and possible, else one by one."""
    if config.batched and can_batch(config.train):
        yield from train_batched(config.train, data, rate, seeds, on_epoch=progress.on_epoch)
        return
    for seed in seeds:
        if seed != seeds[0]:
            progress.on_run_start(rate, seed, config.train.epochs)
        yield train(config.train, data, rate, seed, on_epoch=progress.on_epoch)


CHECKPOINT_FORMAT = "dropkit.compare/1"


def checkpoint_path(output: Path, rate: float, seed: int) -> Path:
    return output / "checkpoints" / f"rate-{rate:g}_seed-{seed}.pt"


def save_checkpoint(output: Path, config: CompareConfig, result: RunResult) -> Path:
    """Write a run's weights and configuration (plain data: loads with ``weights_only=True``)."""
    path = checkpoint_path(output, result.rate, result.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "experiment": config.key(),
        "config": config.to_json(),
        "rate": result.rate,
        "seed": result.seed,
        "state_dict": result.model_state,
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never half a checkpoint
    return path


def _stored(store: Store, key: str, rate: float, seed: int) -> RunResult:
    return next(r for r in store.results(key) if (r.rate, r.seed) == (rate, seed))
