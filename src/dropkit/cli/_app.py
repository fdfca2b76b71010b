"""The ``dropkit`` command: parses arguments, calls the library, prints."""

from __future__ import annotations

import typer

from dropkit._version import __version__

app = typer.Typer(
    name="dropkit",
    help="Dropout for PyTorch, correct and fast: layers, checks and experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dropkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Dropout for PyTorch, correct and fast."""
