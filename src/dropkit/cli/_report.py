"""``dropkit report DIR``: the table, plots and HTML again, from the database, without training."""

from __future__ import annotations

from pathlib import Path

import typer

from dropkit.cli._app import app
from dropkit.cli._summary import print_summary, require_experiments_extra, summary_console


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of dropkit compare."),
) -> None:
    """Regenerate the table, plots and report.html of a comparison from its database."""
    require_experiments_extra()
    from dropkit._env import environment
    from dropkit.experiments import CompareConfig, Store
    from dropkit.experiments.options import ConfigError, check_results_database
    from dropkit.experiments.report import write_report
    from dropkit.experiments.store import DB_NAME

    store = Store(directory)
    try:
        check_results_database(store.path, option="directory")
    except ConfigError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(2) from None
    if not store.path.exists():
        typer.echo(f"Error: {directory} has no {DB_NAME}; run dropkit compare first", err=True)
        raise typer.Exit(2)
    keys = [k for k in store.experiments() if store.done(k)]
    if not keys:
        typer.echo(f"Error: {store.path} holds no finished runs", err=True)
        raise typer.Exit(1)
    key = keys[-1]
    config = CompareConfig.from_json(store.config(key))
    results = store.results(key)
    paths = write_report(directory, results, config.flat(), environment())
    print_summary(summary_console(), results, paths)
