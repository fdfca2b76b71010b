"""``dropkit report DIR``: the table, plots and HTML again, from the database, without training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dropkit.cli._app import app
from dropkit.cli._summary import print_summary, require_experiments_extra, summary_console

if TYPE_CHECKING:
    from dropkit.experiments.store import Configuration


def configuration_option() -> Any:
    """``--config NAME``: which configuration of an output directory ``report`` and ``mc`` use."""
    return typer.Option(
        None,
        "--config",
        "-c",
        help="The configuration to use: its folder name (or a unique prefix). Default: the only "
        "one, else the one that ran last.",
    )


def announce(directory: Path, chosen: Configuration, others: list[Configuration]) -> None:
    """One line naming the configuration used and the others in the folder, if any."""
    if others:
        names = ", ".join(o.folder for o in others)
        typer.echo(
            f"{directory} holds {len(others) + 1} configurations; using {chosen.folder}. "
            f"Others: {names}; choose one with --config NAME."
        )
    else:
        typer.echo(f"configuration: {chosen.folder}")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of dropkit compare."),
    config: str | None = configuration_option(),
) -> None:
    """Regenerate the table, plots and report.html of a comparison from its database."""
    require_experiments_extra()
    from dropkit._env import environment
    from dropkit.experiments import CompareConfig
    from dropkit.experiments.mc_eval import CheckpointError, resolve_configuration
    from dropkit.experiments.options import ConfigError, check_results_database
    from dropkit.experiments.report import write_report
    from dropkit.experiments.store import AUTO, DB_NAME, StoreError

    try:  # read-only, before the store opens (and so changes) a file that is not dropkit's
        database = directory / DB_NAME
        check_results_database(database if database.exists() else directory.parent / DB_NAME)
    except ConfigError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(2) from None
    try:
        store, chosen, others = resolve_configuration(directory, config)
        settings = CompareConfig.from_json(chosen.config)
        results = store.results(chosen.key) + store.results(chosen.key + AUTO)
    except (CheckpointError, StoreError) as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    except (KeyError, TypeError, ValueError) as error:
        typer.echo(f"Error: {directory}: not a dropkit compare configuration ({error})", err=True)
        raise typer.Exit(2) from None
    announce(store.directory, chosen, others)
    flat = settings.flat()
    if any(r.learned for r in results):  # the grid may have been stored before auto was added
        flat["auto"] = True
    paths = write_report(store.directory / chosen.folder, results, flat, environment())
    print_summary(summary_console(), results, paths)
