"""``dropkit sweep``: search dropout settings with Optuna, on one machine or many."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dropkit.cli._app import app
from dropkit.cli._summary import require_experiments_extra, summary_console


@app.command()
def sweep(
    dataset: str = typer.Option(
        "mnist1d", "--dataset", "-d", help="A data set of dropkit compare."
    ),
    model: str = typer.Option("mlp", "--model", "-m", help="mlp, cnn or rescnn."),
    epochs: int = typer.Option(20, help="Training epochs per trial."),
    n_trials: int = typer.Option(20, "--n-trials", help="Finished trials the study should hold."),
    timeout: float | None = typer.Option(None, help="Stop each worker after this many seconds."),
    storage: str | None = typer.Option(
        None,
        help="A database URL Optuna accepts, e.g. postgresql://user:pw@host/db (default: "
        "a SQLite file in the output directory).",
    ),
    study: str = typer.Option("dropkit-sweep", help="The study's name (shared by all workers)."),
    workers: int = typer.Option(1, help="Local worker processes on the same storage."),
    label_noise: float = typer.Option(0.0, help="Fraction of training labels made random."),
    output: Path = typer.Option(
        Path("dropkit-runs/sweep"), "--output", "-o", help="Output directory."
    ),
) -> None:
    """Search dropout rate, per-layer rates, schedule and weight decay on validation accuracy."""
    require_experiments_extra("sweep", ("optuna",))
    from dropkit._env import environment
    from dropkit.experiments.sweep import SweepConfig, SweepError, run_sweep, write_sweep_report
    from dropkit.experiments.train import ConfigError

    config = SweepConfig(
        dataset=dataset, model=model, epochs=epochs, label_noise=label_noise, n_trials=n_trials,
        timeout=timeout, study=study, storage=storage, workers=workers,
    )  # fmt: skip
    try:
        config.check()
    except ConfigError as error:
        message = str(error).split(": ", 1)[1]
        raise typer.BadParameter(message, param_hint="--" + error.field.replace("_", "-")) from None
    try:
        result = run_sweep(config, output)
    except SweepError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    report = write_sweep_report(output, config, result, environment())
    console = summary_console(140)
    table = Table(title=f"study {study!r}: best trials (validation accuracy)")
    for column in ("trial", "state", "val acc %", "params"):
        table.add_column(column)
    for t in result.trials[:5]:
        value = "-" if t["value"] is None else f"{100 * t['value']:.1f}"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
        )
        table.add_row(str(t["number"]), t["state"], value, params)
    console.print(table)
    console.print("Re-run the best configuration honestly (paired, several seeds):")
    console.print(f"  {result.compare_command}")
    console.print(f"  report       {report}")
