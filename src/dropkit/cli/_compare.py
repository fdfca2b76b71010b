"""``dropkit compare``: the paired experiment with and without dropout, with a report."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dropkit import functional as dk_F
from dropkit.cli._app import app
from dropkit.cli._options import nonempty_path
from dropkit.cli._summary import (
    PlainProgress,
    config_error,
    print_summary,
    require_experiments_extra,
    summary_console,
    usage_error,
)
from dropkit.metrics import check_torchmetrics


def _numbers(option: str, text: str, kind: type = float) -> tuple:  # type: ignore[type-arg]
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        usage_error(option, f"expected comma-separated numbers, got {text!r}")


def _rates(text: str) -> tuple[tuple[float, ...], bool]:
    """``--rates``: the grid and whether ``auto`` (a learned-rate run) is in it; ``auto``
    alone means the default grid and the learned run."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    auto = [part for part in parts if part.lower() == "auto"]
    if len(auto) > 1:
        usage_error("--rates", f"give auto once, got {text!r}")
    grid = [part for part in parts if part.lower() != "auto"]
    if auto and not grid:
        return (0.0, 0.2, 0.5), True
    try:
        return tuple(float(part) for part in grid), bool(auto)
    except ValueError:
        usage_error("--rates", f"expected comma-separated numbers and auto, got {text!r}")


@app.command()
def compare(
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="mnist1d (the default), digits, synthetic, mnist, fashion-mnist, cifar10, or your "
        "own as FILE.py:NAME or package.module:NAME (a callable returning (train, test) or "
        "(train, val, test) torch Datasets of (input, integer label) pairs); with --task "
        "regression: diabetes (the default).",
    ),
    task: str = typer.Option(
        "classification",
        help="classification, or regression (squared error; RMSE, Gaussian NLL and 95% "
        "interval coverage in the targets' units).",
    ),
    model: str = typer.Option(
        "mlp",
        "--model",
        "-m",
        help="mlp, cnn, rescnn, or your own as FILE.py:NAME or package.module:NAME (a callable "
        "taking the dropout rate and returning an nn.Module).",
    ),
    variant: str = typer.Option(
        "channel", help="The cnn's conv-block dropout: channel, element or block (DropBlock)."
    ),
    rates: str = typer.Option(
        "0,0.2,0.5",
        help="Comma-separated dropout rates in [0, 1); add auto for a learned-rate run per seed "
        "(Concrete dropout), e.g. 0,0.2,0.5,auto; auto alone: 0,0.2,0.5,auto.",
    ),
    seeds: int = typer.Option(3, help="Seeds per rate (runs are paired by seed)."),
    epochs: int = typer.Option(60, help="Training epochs per run."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam, adamw or sgd."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    hidden: str = typer.Option(
        "256,128", help="Hidden sizes (mlp) or the head width (cnn; first entry)."
    ),
    layer_scale: str = typer.Option("", help="Per-dropout-layer rate multipliers, e.g. 0.5,1."),
    schedule: str = typer.Option("constant", help="constant, early or late dropout."),
    schedule_epochs: int = typer.Option(0, help="Epochs with (early) or without (late) dropout."),
    early_stopping: int = typer.Option(0, help="Patience in epochs on validation loss; 0: off."),
    label_noise: float = typer.Option(0.0, help="Fraction of training labels made random."),
    split_seed: int = typer.Option(0, help="Seed of the train/validation split and label noise."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        parser=nonempty_path("a folder"),
        metavar="DIR",
        help="Output directory (default: dropkit-runs/DATASET-MODEL); each configuration gets "
        "its own sub-folder there.",
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Train this configuration again; its earlier runs are replaced only once the new "
        "set is complete.",
    ),
    batched: bool = typer.Option(
        True,
        "--batched/--one-at-a-time",
        help="Train the seeds of a rate together as one stacked model (mlp, no early stopping).",
    ),
    threads: int = typer.Option(
        1,
        help="torch threads while training; fixed, so the numbers do not change with the "
        "machine's load. Part of the configuration: another count is stored apart.",
    ),
) -> None:
    """Train with and without dropout at several rates; print a table, write plots and a report."""
    require_experiments_extra()
    from dropkit._env import environment
    from dropkit.experiments import (
        CompareConfig,
        ConfigError,
        DatasetError,
        Store,
        TrainConfig,
        load_dataset,
        run_compare,
        user,
    )
    from dropkit.experiments import Progress as Callbacks
    from dropkit.experiments.compare import check_model, config_folder
    from dropkit.experiments.options import check_output, check_results_database
    from dropkit.experiments.report import write_report
    from dropkit.experiments.store import StoreError
    from dropkit.experiments.train import EpochMetrics, RunResult

    if dataset is None:
        dataset = "diabetes" if task == "regression" else "mnist1d"
    names = {"--dataset": dataset, "--model": model}
    for option, name in names.items():
        if user.is_spec(name):
            try:
                user.load(name, option[2:])  # fails here, before any work, with its reason
            except user.SpecError as error:  # one plain line: a path does not fit a box
                typer.echo(f"Error: {option}: {error}", err=True)
                raise typer.Exit(2) from None
            names[option] = user.normalize(name)
    dataset, model = names["--dataset"], names["--model"]

    train = TrainConfig(
        model=model,
        variant=variant,
        hidden=_numbers("--hidden", hidden, int),
        layer_scale=_numbers("--layer-scale", layer_scale) or None,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
        early_stopping=early_stopping,
        schedule=schedule,
        schedule_epochs=schedule_epochs,
    )
    grid, auto = _rates(rates)
    config = CompareConfig(
        dataset=dataset,
        label_noise=label_noise,
        split_seed=split_seed,
        train=train,
        rates=grid,
        seeds=seeds,
        batched=batched,
        auto=auto,
        task=task,
        threads=threads,
    )
    short = [user.describe(n) if user.is_spec(n) else n for n in (dataset, model)]
    output = output or Path("dropkit-runs") / "-".join(short)
    try:
        config.check()
        check_output(output)
        check_results_database(Store(output).path)
    except ConfigError as error:
        config_error(error)
    console = summary_console()
    # Data, model, metrics and kernels take seconds before the first run starts: say so.
    console.print(f"preparing the data set {short[0]}, the model {short[1]} and the kernels ...")
    try:
        data = load_dataset(dataset, split_seed=split_seed, label_noise=label_noise)
    except DatasetError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2 if user.is_spec(dataset) else 1) from None
    try:
        check_model(config, data)
    except ConfigError as error:  # your model, built once before any work
        config_error(error)
    try:
        check_torchmetrics()  # the runs are scored with it: fail before training, not after
    except RuntimeError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    # Load the dropout kernels now (numba's import and cache, ~1 s once per process), so that
    # the first dropout rate's "seconds" is training time like every other rate's.
    dk_F.dropout(torch.zeros(2, requires_grad=True), 0.5, seed=0).sum().backward()  # type: ignore[no-untyped-call]
    try:
        folder = config_folder(output, config)
    except StoreError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    total = (len(config.rates) + config.auto) * config.seeds
    finished = [0]
    # A progress bar draws nothing into a file or a pipe: print plain lines there instead.
    plain = None if console.is_terminal else PlainProgress(total)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        runs = bar.add_task("runs", total=total)
        epoch_task = bar.add_task("epochs", total=config.train.epochs)

        def start(rate: float | str, seed: int, n_epochs: int) -> None:
            what = rate if isinstance(rate, str) else f"{rate:g}"
            bar.update(runs, description=f"rate {what}, seed {seed}")
            bar.reset(epoch_task, total=n_epochs)
            if plain:
                plain.start(rate, seed, n_epochs)

        def epoch(metrics: EpochMetrics) -> None:
            score = (
                f"val loss {metrics.val_loss:.3f}"
                if math.isnan(metrics.val_acc)
                else f"val acc {metrics.val_acc:.3f}"
            )
            bar.update(epoch_task, advance=1, description=score)
            if plain:
                plain.epoch(metrics)

        def done(result: RunResult, skipped: bool) -> None:
            finished[0] += 1
            bar.update(runs, completed=finished[0])
            if plain:
                plain.done(result, skipped)

        try:
            results = run_compare(
                config, output, fresh=fresh, data=data, progress=Callbacks(start, epoch, done)
            )
        except KeyboardInterrupt:
            if fresh:
                console.print(
                    f"Interrupted: {finished[0]} of {total} runs are saved in {folder} (the "
                    "fresh set; the earlier runs stay until it is complete); run the same command, "
                    "--fresh included, again to resume it."
                )
            else:
                console.print(
                    f"Interrupted: {finished[0]} of {total} runs are saved in {folder}; run the "
                    "same command again to resume (at most the epoch in progress is lost)."
                )
            raise typer.Exit(130) from None
        except ConfigError as error:  # found only once your model is built
            config_error(error)
    paths = write_report(folder, results, config.flat(), environment())
    print_summary(console, results, paths)
