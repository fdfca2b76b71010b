"""``dropkit active``: pool-based active learning on dropout uncertainty, with a report."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from dropkit.cli._app import app
from dropkit.cli._summary import require_experiments_extra, usage_error

_DEFAULT_STRATEGIES = "random,entropy,bald,batchbald,power-bald"


@app.command()
def active(
    dataset: str = typer.Option(
        "mnist1d",
        "--dataset",
        "-d",
        help="mnist1d or digits (embedded), another built-in data set, or your own as "
        "FILE.py:NAME (a callable returning (train, test) torch Datasets; train is the pool).",
    ),
    strategies: str = typer.Option(
        _DEFAULT_STRATEGIES,
        help="Comma-separated: random, entropy, bald, variation-ratio, mean-std, margin, "
        "least-confidence, batchbald, or MODE-SCORE with MODE power, softmax or rank "
        "(power-bald, ...).",
    ),
    seeds: int = typer.Option(3, help="Seeds per strategy (strategies are paired by seed)."),
    rounds: int = typer.Option(8, help="Acquisition rounds after the initial labelled set."),
    initial: int = typer.Option(
        20, help="Initially labelled examples (the same for every strategy)."
    ),
    query: int = typer.Option(10, help="Examples labelled per round."),
    method: str = typer.Option(
        "sampling", help="Scoring: sampling (S passes) or moments (one pass)."
    ),
    samples: int = typer.Option(20, help="Monte Carlo samples S per pool example."),
    pool: int = typer.Option(
        1000, help="Unlabelled examples scored per round, a random subset; 0: all of them."
    ),
    steps: int = typer.Option(200, help="Gradient steps training each round's model."),
    p: float = typer.Option(0.5, help="Dropout rate of the model (the built-in mlp)."),
    hidden: str = typer.Option("256,128", help="Hidden sizes of the built-in mlp."),
    warm_start: bool = typer.Option(
        False, "--warm-start/--from-scratch", help="Train each round from the last round's weights."
    ),
    target: float | None = typer.Option(
        None,
        help="Target test accuracy (0-1) for the labels-needed column; default: random's final.",
    ),
    threads: int = typer.Option(
        1, help="torch CPU threads: the models are small, one thread is fastest on a busy machine."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output folder (default: dropkit-runs/active-DATASET)."
    ),
) -> None:
    """Label the pool examples the model is most uncertain about; compare strategies by seed."""
    require_experiments_extra()
    from dropkit._env import environment
    from dropkit.active import (
        ActiveConfig,
        ActiveProgress,
        ActiveStore,
        ActiveStoreError,
        RoundResult,
        run_active,
        summarize_active,
        table_rows,
        write_active_report,
    )
    from dropkit.experiments import DatasetError, load_dataset, user

    if threads < 1:
        usage_error("--threads", f"expected a positive number of threads, got {threads}")
    if target is not None and not 0.0 < target <= 1.0:
        usage_error("--target", f"expected an accuracy in (0, 1], got {target}")
    try:
        sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        usage_error("--hidden", f"expected comma-separated integers, got {hidden!r}")
    if user.is_spec(dataset):
        dataset = user.normalize(dataset)
    config = ActiveConfig(
        dataset=dataset,
        hidden=sizes,
        p=p,
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
        seeds=seeds,
        rounds=rounds,
        initial=initial,
        query=query,
        samples=samples,
        method=method,
        steps=steps,
        pool=pool or None,
        warm_start=warm_start,
    )
    try:
        config.check()
    except ValueError as error:
        option = _option_of(str(error))
        usage_error(option, str(error).removeprefix("active: "))
    try:
        data = load_dataset(config.dataset, split_seed=config.split_seed)
    except DatasetError as error:
        usage_error("--dataset", str(error))
    if config.initial > len(data.y_train):
        usage_error(
            "--initial", f"{config.initial} is more than the pool's {len(data.y_train)} examples"
        )
    name = user.describe(dataset) if user.is_spec(dataset) else dataset
    output = output or Path("dropkit-runs") / f"active-{name}"
    torch.set_num_threads(threads)
    total = len(config.strategies) * config.seeds * (config.rounds + 1)
    count = 0
    start = time.perf_counter()
    cpu = time.process_time()

    def line(r: RoundResult, skipped: bool) -> None:
        nonlocal count
        count += 1
        how = (
            "stored" if skipped else f"train {r.train_seconds:.1f} s, score {r.score_seconds:.1f} s"
        )
        typer.echo(
            f"[{count}/{total}] {r.strategy} seed {r.seed} round {r.round}: "
            f"{r.labelled} labels, test acc {100 * r.test_acc:.1f}% ({how})"
        )

    try:
        results = run_active(config, output, data=data, progress=ActiveProgress(line))
    except ActiveStoreError as error:
        usage_error("--output", str(error))
    store = ActiveStore(output)
    folder = output / store.register(config.key(), config.to_json(), config.folder_name())
    report = write_active_report(
        folder, results, config.to_json(), target=target, environment=environment()
    )
    summaries, used = summarize_active(results, target)
    rows = table_rows(summaries)
    columns = [
        "strategy",
        "labels to target",
        "area under curve %",
        "area - random (pts)",
        "score s (cpu)",
        "train s (cpu)",
    ]
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    typer.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(row[c].ljust(widths[c]) for c in columns))
    if used is not None:
        typer.echo(
            f"target accuracy {100 * used:.1f}%; intervals: 95% over seeds, paired with random"
        )
    typer.echo(
        f"{time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu:.0f} s CPU; "
        f"report: {report}"
    )


def _option_of(message: str) -> str:
    """The CLI option a configuration error is about (its field, dashed)."""
    for field in ("strategies", "strategy", "seeds", "rounds", "initial", "query", "samples",
                  "method", "steps", "pool", "p ", "batchbald"):  # fmt: skip
        if field in message:
            name = {"strategy": "strategies", "p ": "p", "batchbald": "method"}.get(field, field)
            return f"--{name}"
    return "option"
