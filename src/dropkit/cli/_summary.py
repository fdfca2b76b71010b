"""Printing a comparison's summary, shared by ``compare`` and ``report``."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

_EXTRA = ("matplotlib", "sklearn", "mnist1d")


def require_experiments_extra(extra: str = "experiments", modules: tuple[str, ...] = ()) -> None:
    """Exit with a one-line hint when an optional extra is not installed."""
    missing = [m for m in (*_EXTRA, *modules) if importlib.util.find_spec(m) is None]
    if missing:
        typer.echo(
            f"Error: this command needs {', '.join(missing)}; "
            f"install them with: pip install 'dropkit[{extra}]'",
            err=True,
        )
        raise typer.Exit(2)


def summary_console(width: int = 120) -> Console:
    """A console that does not wrap a wide table when the output is a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=width)


def print_summary(console: Console, results: Sequence[object], paths: dict[str, Path]) -> None:
    from dropkit.experiments.report import summarize, verdict

    rows = [s.row() for s in summarize(results)]  # type: ignore[arg-type]
    table = Table(title="dropout comparison (mean ± std over seeds)")
    for column in rows[0] if rows else ():
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    console.print(verdict(results), style="bold")  # type: ignore[arg-type]
    for name, path in paths.items():
        console.print(f"  {name:12s} {path}")
