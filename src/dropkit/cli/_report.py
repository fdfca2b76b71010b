"""``dropkit report DIR``: the table, plots and HTML again, from the database, without training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dropkit.cli._app import app
from dropkit.cli._options import nonempty_path
from dropkit.cli._summary import (
    config_error,
    print_summary,
    require_experiments_extra,
    summary_console,
)

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
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        parser=nonempty_path("a folder"),
        metavar="DIR",
        help="Write metrics.csv, the plots and report.html here instead of into the "
        "configuration's folder (for a results folder you cannot write into).",
    ),
) -> None:
    """Regenerate the table, plots and report.html of a comparison from its database."""
    require_experiments_extra()
    from dropkit._env import environment
    from dropkit.experiments import CompareConfig
    from dropkit.experiments.mc_eval import (
        CheckpointError,
        resolve_configuration,
        verify_checkpoints,
    )
    from dropkit.experiments.options import ConfigError, check_output, check_results_database
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
        unreadable = verify_checkpoints(store, chosen)
    except (CheckpointError, StoreError) as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    except (KeyError, TypeError, ValueError) as error:
        typer.echo(f"Error: {directory}: not a dropkit compare configuration ({error})", err=True)
        raise typer.Exit(2) from None
    folder = store.directory / chosen.folder
    target = folder if output is None else output
    try:  # before any file is written: one line, not a traceback half-way
        check_output(target)
    except ConfigError as error:
        if output is not None:
            config_error(error)
        typer.echo(f"Error: {error.message} with --output DIR", err=True)
        raise typer.Exit(2) from None
    announce(store.directory, chosen, others)
    for message in unreadable:
        typer.echo(f"Warning: {message}", err=True)
    flat = settings.flat()
    if any(r.learned for r in results):  # the grid may have been stored before auto was added
        flat["auto"] = True
    try:
        paths = write_report(target, results, flat, environment())
    except OSError as error:
        reason = error.strerror or type(error).__name__
        where = error.filename or target
        typer.echo(
            f"Error: cannot write the report: {where} ({reason}); give a writable folder with "
            "--output DIR",
            err=True,
        )
        raise typer.Exit(2) from None
    print_summary(summary_console(), results, paths)
    if output is not None:
        typer.echo(f"The report is in {output}; {folder} was not changed.")
