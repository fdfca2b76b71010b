"""The pool-based loop: train on the labelled examples, evaluate, score the pool, label, repeat.

The pool is the training split of a :class:`~dropkit.experiments.Dataset` (a built-in data
set, or any indexable data set through :func:`~dropkit.experiments.from_splits`); the test
split measures each round. The initial labelled set depends on the seed only, so every
strategy of a seed starts from the same examples and the same first model: strategies are
paired by seed.

Each round trains a model on the labelled set (from scratch, or ``warm_start`` from the last
round's weights with a fresh optimizer), evaluates it in eval mode (accuracy, NLL, ECE with
15 equal-width bins, from :mod:`dropkit.metrics`), then scores the unlabelled pool with
:func:`dropkit.mc.predict` and picks ``query`` examples with
:func:`~dropkit.active.acquire`. Everything random in round ``r`` of seed ``s`` is seeded from
``(s, r)``, so a round gives the same result whenever it runs: a run killed and started again
resumes at the first round without a row and ends on the same curve as one never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dropkit import mc
from dropkit.active._acquisition import acquire
from dropkit.active._config import ActiveConfig, ActiveProgress, ModelFn
from dropkit.active._store import ActiveStore, RoundResult

if TYPE_CHECKING:
    from dropkit.experiments.datasets import Dataset

__all__ = ["active_learning", "initial_labelled", "run_active"]


def _derived(*parts: int) -> int:
    """A seed for one use of one round, from integers (stable across runs and machines)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:6], "little")


def initial_labelled(pool_size: int, initial: int, seed: int) -> torch.Tensor:
    """The initial labelled pool indices of ``seed``, the same for every strategy.

    Example:
        >>> from dropkit.active import initial_labelled
        >>> a, b = initial_labelled(100, 5, seed=0), initial_labelled(100, 5, seed=0)
        >>> bool((a == b).all()), len(set(a.tolist()))
        (True, 5)
    """
    if initial > pool_size:
        raise ValueError(
            f"active: initial={initial} is more than the pool's {pool_size} examples; give a "
            "smaller initial"
        )
    generator = torch.Generator().manual_seed(_derived(seed, -1))
    return torch.randperm(pool_size, generator=generator)[:initial]


def _build(config: ActiveConfig, data: Dataset, model_fn: ModelFn | None) -> nn.Module:
    if model_fn is not None:
        model = model_fn(config.p)
    else:
        from dropkit.experiments import user
        from dropkit.experiments.models import build_model

        if user.is_spec(config.model):
            model = user.load(config.model, "model")(config.p)
        else:
            model = build_model(
                config.model,
                data.input_shape,
                data.num_classes,
                hidden=config.hidden,
                rate=config.p,
            )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"active: the model factory returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def _train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: ActiveConfig, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(y))
    model.train()
    for _ in range(config.steps):
        rows = torch.randint(0, len(y), (batch,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.eval()


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    from dropkit.metrics import expected_calibration_error, negative_log_likelihood

    model.eval()
    logits = torch.cat([model(x[i : i + 4096]) for i in range(0, len(x), 4096)])
    probs = torch.softmax(logits.double(), dim=-1)
    acc = float((probs.argmax(-1) == y).double().mean())
    return acc, negative_log_likelihood(probs, y), expected_calibration_error(probs, y)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _one_round(
    config: ActiveConfig,
    data: Dataset,
    strategy: str,
    seed: int,
    r: int,
    labelled: torch.Tensor,
    model: nn.Module,
) -> RoundResult:
    """Train ``model`` on ``labelled``, evaluate, and (before the last round) pick."""
    start, cpu = _clock()
    with torch.random.fork_rng():
        torch.manual_seed(_derived(seed, r, 1))
        _train(model, data.x_train[labelled], data.y_train[labelled], config, _derived(seed, r, 2))
    acc, nll, ece = _evaluate(model, data.x_test, data.y_test)
    trained, trained_cpu = _clock()
    picked: list[int] = []
    if r < config.rounds:
        mask = torch.ones(len(data.y_train), dtype=torch.bool)
        mask[labelled] = False
        unlabelled = mask.nonzero().squeeze(1)
        if config.pool is not None and config.pool < len(unlabelled):
            generator = torch.Generator().manual_seed(_derived(seed, r, 3))
            unlabelled = unlabelled[torch.randperm(len(unlabelled), generator=generator)]
            unlabelled = unlabelled[: config.pool].sort().values
        if len(unlabelled):
            if strategy == "random":  # nothing to score
                chosen = torch.randperm(
                    len(unlabelled), generator=torch.Generator().manual_seed(_derived(seed, r, 4))
                )[: config.query]
            else:
                result = mc.predict(
                    model,
                    data.x_train[unlabelled],
                    config.samples,
                    seed=_derived(seed, r, 5),
                    method=config.method,
                )
                chosen = acquire(
                    result,
                    strategy,
                    config.query,
                    seed=_derived(seed, r, 4),
                    beta=config.beta,
                    configurations=config.configurations,
                )
            picked = unlabelled[chosen].tolist()
    done, done_cpu = _clock()
    return RoundResult(
        strategy=strategy,
        seed=seed,
        round=r,
        labelled=len(labelled),
        test_acc=acc,
        test_nll=nll,
        test_ece=ece,
        train_seconds=trained - start,
        score_seconds=done - trained,
        train_cpu=trained_cpu - cpu,
        score_cpu=done_cpu - trained_cpu,
        picked=picked,
    )


def _resume(
    store: ActiveStore,
    key: str,
    output: Path,
    strategy: str,
    seed: int,
    config: ActiveConfig,
    pool_size: int,
) -> list[tuple[RoundResult, str | None]]:
    """The stored rounds 0..k-1 of (strategy, seed) that can be built on; later or broken ones
    are forgotten (run again).

    A round that was the last of a shorter run picked nothing; when more rounds are asked for
    now, it runs again to pick. With warm starts, the rounds after the last one whose model is
    on disk run again.
    """
    stored = store.rounds(key, strategy, seed)
    usable: list[tuple[RoundResult, str | None]] = []
    for result, checkpoint in stored:
        if result.round != len(usable):
            break
        usable.append((result, checkpoint))
    final = usable[-1][0] if usable else None
    if final and final.round < config.rounds and not final.picked and final.labelled < pool_size:
        usable.pop()
    warm_start = config.warm_start
    if warm_start and usable:
        last = usable[-1][1]
        while usable and not (last and (output / last).is_file()):
            usable.pop()
            last = usable[-1][1] if usable else None
    if len(usable) < len(stored):
        store.drop_from(key, strategy, seed, len(usable))
    return usable


def run_active(
    config: ActiveConfig,
    output: Path,
    *,
    data: Dataset | None = None,
    model_fn: ModelFn | None = None,
    progress: ActiveProgress | None = None,
) -> list[RoundResult]:
    """Run every (strategy, seed, round) of ``config`` not yet in ``output``; return them all.

    Results go to ``output``'s database (:mod:`dropkit.active._store`), the configuration's
    files (warm-start weights, the report) to its sub-folder. A round is stored once done, so
    an interruption loses at most the round in progress, and a second call goes on from there.

    Args:
        config: the experiment.
        output: the output folder.
        data: the data (default: ``load_dataset(config.dataset, split_seed=...)``).
        model_fn: your model as a callable of the dropout rate (``config.model`` then only
            names it); any model :func:`dropkit.mc.predict` supports with a tensor input.
        progress: callbacks, one per round.

    Returns:
        The rounds by strategy (in ``config.strategies`` order), seed and round.
    """
    config.check()
    progress = progress or ActiveProgress()
    if data is None:
        from dropkit.experiments.datasets import load_dataset

        data = load_dataset(config.dataset, split_seed=config.split_seed)
    output = Path(output)
    store = ActiveStore(output)
    key = config.key()
    folder = store.register(key, config.to_json(), config.folder_name())
    results: list[RoundResult] = []
    # seed by seed, so that an interrupted run has paired curves of every strategy
    for seed in range(config.seeds):
        for strategy in config.strategies:
            results += _run_one(
                config, data, model_fn, progress, store, key, output, folder, strategy, seed
            )
    order = {name: i for i, name in enumerate(config.strategies)}
    return sorted(results, key=lambda r: (order[r.strategy], r.seed, r.round))


def _run_one(
    config: ActiveConfig,
    data: Dataset,
    model_fn: ModelFn | None,
    progress: ActiveProgress,
    store: ActiveStore,
    key: str,
    output: Path,
    folder: str,
    strategy: str,
    seed: int,
) -> list[RoundResult]:
    done = _resume(store, key, output, strategy, seed, config, len(data.y_train))
    results = [result for result, _ in done[: config.rounds + 1]]
    for result in results:
        progress.on_round(result, True)
    labelled = initial_labelled(len(data.y_train), config.initial, seed)
    for result in results:
        labelled = torch.cat([labelled, torch.tensor(result.picked, dtype=torch.long)])
    model: nn.Module | None = None
    if config.warm_start and done and len(results) <= config.rounds:
        model = _build(config, data, model_fn)
        checkpoint = done[len(results) - 1][1]
        assert checkpoint is not None
        state = torch.load(output / checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
    for r in range(len(results), config.rounds + 1):
        if model is None or not config.warm_start:
            with torch.random.fork_rng():
                torch.manual_seed(_derived(seed, r, 0))
                model = _build(config, data, model_fn)
        result = _one_round(config, data, strategy, seed, r, labelled, model)
        checkpoint = None
        if config.warm_start:
            from dropkit.experiments.train import save_atomically

            name = f"{strategy}_seed-{seed}_round-{r}_{uuid.uuid4().hex[:8]}.pt"
            checkpoint = f"{folder}/warm-start/{name}"
            payload = {"format": "dropkit.active/1", "state_dict": model.state_dict()}
            save_atomically(payload, output / checkpoint, durable=True)
        if not store.save(key, result, checkpoint) and checkpoint:
            (output / checkpoint).unlink(missing_ok=True)  # another process stored it first
        if config.warm_start and r > 0:
            _forget_old(store, key, output, strategy, seed, r)
        progress.on_round(result, False)
        results.append(result)
        labelled = torch.cat([labelled, torch.tensor(result.picked, dtype=torch.long)])
        done.append((result, checkpoint))
        if not result.picked and len(labelled) >= len(data.y_train):
            break  # every pool example is labelled and evaluated: the curve ends here
    return results


def _forget_old(
    store: ActiveStore, key: str, output: Path, strategy: str, seed: int, r: int
) -> None:
    """Only the latest warm-start model is needed to go on: delete the one before."""
    for result, checkpoint in store.rounds(key, strategy, seed):
        if result.round == r - 1 and checkpoint:
            (output / checkpoint).unlink(missing_ok=True)


def active_learning(
    model: str | ModelFn,
    data: str | Callable[[], Sequence[Any]],
    *,
    strategies: Sequence[str] = ("random", "entropy", "bald", "batchbald", "power-bald"),
    seeds: int = 3,
    output: Path | str | None = None,
    progress: ActiveProgress | None = None,
    split_seed: int = 0,
    **options: Any,
) -> list[RoundResult]:
    """Active learning from Python, on a built-in or your own model and data.

    Args:
        model: a built-in name (``"mlp"``), ``"FILE.py:NAME"``, or a callable that takes the
            dropout rate as its one positional argument and returns an ``nn.Module``.
        data: a built-in name, ``"FILE.py:NAME"``, or a callable without arguments returning
            ``(train, test)`` or ``(train, val, test)`` torch ``Dataset``s of
            ``(input, integer label)`` pairs; the training split is the pool.
        strategies, seeds, split_seed: as for ``dropkit active``.
        output: the output folder; None: a temporary folder, removed afterwards.
        progress: callbacks, one per round.
        **options: fields of :class:`ActiveConfig` (``rounds``, ``initial``, ``query``,
            ``samples``, ``method``, ``steps``, ``warm_start``, ``p``, ...).

    Returns:
        One :class:`RoundResult` per (strategy, seed, round).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from dropkit.active import active_learning
        >>> def net(p):
        ...     return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                                torch.nn.Dropout(p), torch.nn.Linear(16, 2))
        >>> def blobs():
        ...     x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
        ...     y = (x[:, 0] > 0).long()
        ...     return TensorDataset(x[:150], y[:150]), TensorDataset(x[150:], y[150:])
        >>> rounds = active_learning(net, blobs, strategies=("random", "bald"), seeds=1,
        ...                          rounds=2, initial=4, query=4, steps=20, samples=5)
        >>> [(r.strategy, r.round, r.labelled) for r in rounds]  # doctest: +NORMALIZE_WHITESPACE
        [('random', 0, 4), ('random', 1, 8), ('random', 2, 12),
         ('bald', 0, 4), ('bald', 1, 8), ('bald', 2, 12)]
    """
    from dropkit.experiments.datasets import from_splits
    from dropkit.experiments.user import user_code

    named = user_code(model, data)
    dataset: Dataset | None = None
    if named.data_fn is not None:
        dataset = from_splits(named.data_fn, name=named.data_name, split_seed=split_seed)
    config = ActiveConfig(
        dataset=named.data_name,
        split_seed=split_seed,
        model=named.model_name,
        strategies=tuple(strategies),
        seeds=seeds,
        code=named.code,
        **options,
    )
    if output is None:
        with tempfile.TemporaryDirectory(prefix="dropkit-active-") as tmp:
            return run_active(
                config, Path(tmp), data=dataset, model_fn=named.model_fn, progress=progress
            )
    return run_active(
        config, Path(output), data=dataset, model_fn=named.model_fn, progress=progress
    )
