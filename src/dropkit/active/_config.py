"""The configuration of an active-learning experiment, and the callbacks of its progress."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from dropkit.active._acquisition import check_strategy
from dropkit.active._store import RoundResult

if TYPE_CHECKING:
    pass

__all__ = ["ActiveConfig", "ActiveProgress", "ModelFn"]

#: Your model: called with the dropout rate ``p``, returns an ``nn.Module`` for the data.
ModelFn = Callable[[float], nn.Module]

_METHODS = ("sampling", "moments")


@dataclass(frozen=True)
class ActiveConfig:
    """An active-learning experiment: data, model, training per round, acquisition.

    Saved as JSON next to the results (never executed). Its rounds are identified by
    everything but ``strategies``, ``seeds`` and ``rounds``: adding a strategy, a seed or
    rounds later reuses the finished rounds.

    ``rounds`` acquisitions of ``query`` examples follow the ``initial`` labelled ones, so a
    curve has ``rounds + 1`` points. ``steps`` gradient steps (Adam, batches of ``batch_size``
    drawn with replacement from the labelled set) train each round's model, whatever the
    labelled set's size. ``pool``: score a random subset of this many unlabelled examples each
    round (Gal et al. score 2,000), None: all of them. ``samples``: the S of
    :func:`dropkit.mc.predict`; ``method``: its ``method``. ``beta``: the exponent of the
    stochastic strategies; ``configurations``: BatchBALD's (see
    :func:`~dropkit.active.batch_bald`).
    """

    dataset: str = "mnist1d"
    split_seed: int = 0
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    p: float = 0.5
    strategies: tuple[str, ...] = ("random", "entropy", "bald", "batchbald", "power-bald")
    seeds: int = 3
    rounds: int = 8
    initial: int = 20
    query: int = 10
    samples: int = 20
    method: str = "sampling"
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warm_start: bool = False
    pool: int | None = 1000
    beta: float = 1.0
    configurations: int = 1024
    code: str = ""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what it takes."""
        positive = {
            "seeds": self.seeds,
            "initial": self.initial,
            "query": self.query,
            "samples": self.samples,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "configurations": self.configurations,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"active: {name} must be a positive integer, got {value!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ValueError(f"active: rounds must be an integer >= 0, got {self.rounds!r}")
        if self.pool is not None and (isinstance(self.pool, bool) or self.pool < 1):
            raise ValueError(f"active: pool must be a positive integer or None, got {self.pool!r}")
        if not 0.0 < self.p < 1.0:
            raise ValueError(
                f"active: p must be in (0, 1): Monte Carlo dropout needs dropout, got {self.p!r}"
            )
        if self.method not in _METHODS:
            raise ValueError(f"active: method must be one of {list(_METHODS)}, got {self.method!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"active: lr must be a positive number, got {self.lr!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"active: beta must be a positive number, got {self.beta!r}")
        if self.weight_decay < 0:
            raise ValueError(f"active: weight_decay must be >= 0, got {self.weight_decay!r}")
        from dropkit.experiments.datasets import dataset_task

        if dataset_task(self.dataset) == "regression":
            raise ValueError(
                f"active: {self.dataset} is a regression data set; the acquisition scores rank "
                "a classifier's uncertainty: choose a classification data set"
            )
        if not self.strategies:
            raise ValueError("active: give at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"active: a strategy is listed twice in {list(self.strategies)}")
        for strategy in self.strategies:
            check_strategy(strategy)
            if strategy == "batchbald" and self.method == "moments":
                raise ValueError(
                    "active: batchbald needs method='sampling' (its joint entropy needs one "
                    "dropout mask per sample across the pool; moments draws are independent)"
                )

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        data["strategies"] = list(self.strategies)
        if not self.code:
            del data["code"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActiveConfig:
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)

    def key(self) -> str:
        """Identity of the rounds: a hash of everything but strategies, seeds and rounds."""
        identity = self.to_json()
        for name in ("strategies", "seeds", "rounds"):
            del identity[name]
        from dropkit.experiments import user

        sources = [user.digest(s) for s in (self.dataset, self.model) if user.is_spec(s)]
        if sources:
            identity["sources"] = sources
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def folder_name(self) -> str:
        """The settings that differ from the defaults (data set and model left out), or
        ``default``."""
        default = ActiveConfig().to_json()
        skip = {"dataset", "model", "strategies", "seeds", "rounds", "code"}
        parts = []
        for name, value in self.to_json().items():
            if name in skip or value == default.get(name):
                continue
            option = name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(option if value else f"no-{option}")
            elif isinstance(value, list):
                parts.append(f"{option}-{','.join(f'{v:g}' for v in value)}")
            elif isinstance(value, float):
                parts.append(f"{option}-{value:g}")
            else:
                parts.append(f"{option}-{value}")
        name = re.sub(r"[^A-Za-z0-9.,=+-]+", "_", "_".join(parts)) or "default"
        return name if len(name) <= 80 else f"{name[:70]}-{self.key()[:8]}"


@dataclass
class ActiveProgress:
    """Callbacks for a progress display; the library itself prints nothing.

    ``on_round(result, skipped)`` is called once per round, ``skipped`` when it was stored
    already (a resumed run).
    """

    on_round: Callable[[RoundResult, bool], None] = field(default=lambda result, skipped: None)
