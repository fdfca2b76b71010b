"""``dropkit sweep``: search dropout settings with Optuna, on one machine or many."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.table import Table

from dropkit.cli._app import app
from dropkit.cli._options import nonempty_path, nonempty_text
from dropkit.cli._summary import config_error, require_experiments_extra, summary_console


@app.command()
def sweep(
    dataset: str = typer.Option(
        "mnist1d",
        "--dataset",
        "-d",
        help="mnist1d, digits, synthetic, mnist, fashion-mnist, cifar10, or your own as "
        "FILE.py:NAME or package.module:NAME, as in dropkit compare.",
    ),
    model: str = typer.Option(
        "mlp",
        "--model",
        "-m",
        help="mlp, cnn, rescnn, or your own as FILE.py:NAME or package.module:NAME (a callable "
        "taking the dropout rate and returning an nn.Module), as in dropkit compare.",
    ),
    epochs: int = typer.Option(20, help="Training epochs per trial."),
    n_trials: int = typer.Option(20, "--n-trials", help="Finished trials the study should hold."),
    timeout: float | None = typer.Option(None, help="Stop each worker after this many seconds."),
    storage: str | None = typer.Option(
        None,
        callback=nonempty_text("a database URL"),
        help="A database URL Optuna accepts, e.g. postgresql://user:pw@host/db (default: "
        "a SQLite file in the output directory).",
    ),
    study: str = typer.Option("dropkit-sweep", help="The study's name (shared by all workers)."),
    workers: int = typer.Option(1, help="Local worker processes on the same storage."),
    label_noise: float = typer.Option(0.0, help="Fraction of training labels made random."),
    output: Path = typer.Option(
        Path("dropkit-runs/sweep"),
        "--output",
        "-o",
        parser=nonempty_path("a folder"),
        metavar="DIR",
        help="Output directory.",
    ),
) -> None:
    """Search dropout rate, per-layer rates, schedule and weight decay on validation accuracy."""
    require_experiments_extra("sweep", ("optuna",))
    from dropkit._env import environment
    from dropkit.experiments.options import ConfigError, check_output
    from dropkit.experiments.report import write_sweep_report
    from dropkit.experiments.sweep import (
        SweepConfig,
        SweepError,
        masked_storage,
        run_sweep,
        study_plots,
    )

    config = SweepConfig(
        dataset=dataset, model=model, epochs=epochs, label_noise=label_noise, n_trials=n_trials,
        timeout=timeout, study=study, storage=storage, workers=workers,
    )  # fmt: skip
    try:
        config.check()
        check_output(output)
    except ConfigError as error:
        config_error(error)
    try:
        result = run_sweep(config, output)
    except SweepError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    report = write_sweep_report(
        output,
        f"dropkit sweep: {config.dataset} / {config.model}",
        result,
        study_plots(config, output),
        dataclasses.asdict(config) | {"storage": masked_storage(config, output)},
        environment(),
    )
    console = summary_console(140)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.states.items()))
    table = Table(title=f"study {study!r}: best trials, completed ones only ({counts})")
    for column in ("trial", "val acc %", "params"):
        table.add_column(column)
    for t in result.trials[:5]:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
        )
        table.add_row(str(t["number"]), f"{100 * t['value']:.1f}", params)
    console.print(table)
    # Plain echo, not the console: a wrapped command would not paste.
    typer.echo("Re-run the best configuration honestly (paired, several seeds):")
    typer.echo(f"  {result.compare_command}")
    typer.echo(f"  report       {report}")
