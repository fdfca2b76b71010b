"""The paired comparison from Python: :func:`compare` on a built-in or your own model and data."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dropkit.experiments import user
from dropkit.experiments.compare import CompareConfig, Progress, run_compare
from dropkit.experiments.datasets import Dataset, from_splits
from dropkit.experiments.threads import DEFAULT_THREADS
from dropkit.experiments.train import ModelFn, RunResult, TrainConfig

__all__ = ["compare"]


def compare(
    model: str | ModelFn,
    data: str | Callable[[], Sequence[Any]],
    *,
    rates: Sequence[float] = (0.0, 0.2, 0.5),
    seeds: int = 3,
    output: Path | str | None = None,
    fresh: bool = False,
    label_noise: float = 0.0,
    split_seed: int = 0,
    batched: bool = True,
    auto: bool = False,
    task: str = "classification",
    threads: int | None = DEFAULT_THREADS,
    progress: Progress | None = None,
    **train_options: Any,
) -> list[RunResult]:
    """The paired comparison from Python, on a built-in or your own model and data.

    Args:
        model: a built-in name (``"mlp"``), ``"FILE.py:NAME"``, or a callable that takes the
            dropout rate as its one positional argument and returns an ``nn.Module``.
        data: a built-in name, ``"FILE.py:NAME"``, or a callable without arguments returning
            ``(train, test)`` or ``(train, val, test)`` torch ``Dataset``s of
            ``(input, integer label)`` pairs (validation is split off ``train`` when absent).
        rates, seeds, label_noise, split_seed, batched: as for ``dropkit compare``.
        task: ``classification`` or ``regression`` (a built-in regression data set such as
            ``diabetes``; see :class:`CompareConfig`).
        threads: torch's thread count while training (``--threads``; see
            :class:`CompareConfig`); ``None`` leaves it as it is.
        auto: add a learned-rate run per seed (``--rates ...,auto``; see
            :class:`CompareConfig`).
        output: the output folder (its database, one sub-folder per configuration with the
            report, plots and checkpoints); None: a temporary folder, removed afterwards.
        fresh: train again, replacing the earlier runs once the new set is complete.
        **train_options: fields of :class:`~dropkit.experiments.train.TrainConfig`
            (``epochs``, ``lr``, ``batch_size``, ``schedule``, ...).

    Returns:
        One :class:`~dropkit.experiments.train.RunResult` per (rate, seed), by rate then seed,
        then with ``auto`` the learned-rate runs by seed (``result.learned``).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from dropkit.experiments import compare
        >>> def net(p):
        ...     layers = [torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(p)]
        ...     return torch.nn.Sequential(*layers, torch.nn.Linear(16, 2))
        >>> def blobs():
        ...     x = torch.randn(120, 4, generator=torch.Generator().manual_seed(0))
        ...     y = (x[:, 0] > 0).long()
        ...     return TensorDataset(x[:80], y[:80]), TensorDataset(x[80:], y[80:])
        >>> results = compare(net, blobs, rates=(0.0, 0.5), seeds=2, epochs=2)
        >>> [(r.rate, r.seed) for r in results]
        [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    """
    named = user.user_code(model, data)
    model_fn: ModelFn | None = named.model_fn
    model_name, data_name = named.model_name, named.data_name
    dataset: Dataset | None = None
    if named.data_fn is not None:
        dataset = from_splits(
            named.data_fn, name=data_name, split_seed=split_seed, label_noise=label_noise
        )
    config = CompareConfig(
        dataset=data_name,
        label_noise=label_noise,
        split_seed=split_seed,
        train=TrainConfig(model=model_name, **train_options),
        rates=tuple(float(r) for r in rates),
        seeds=seeds,
        batched=batched,
        code=named.code,
        auto=auto,
        task=task,
        threads=threads,
    )
    if output is None:
        with tempfile.TemporaryDirectory(prefix="dropkit-") as tmp:
            return run_compare(
                config, Path(tmp), data=dataset, progress=progress, model_fn=model_fn
            )
    return run_compare(
        config, Path(output), fresh=fresh, data=dataset, progress=progress, model_fn=model_fn
    )
