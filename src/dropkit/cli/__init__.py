"""Command-line interface: ``dropkit`` (or ``python -m dropkit``)."""

import sys

import typer

from dropkit.cli import _active, _bench, _compare, _doctor, _info, _mc, _report, _sweep  # noqa: F401  (registers the commands)
from dropkit.cli._app import app

__all__ = ["app", "main"]


# Click's UsageError, from the click that this typer uses (newer typers vendor their own copy).
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def main() -> None:
    """Run the ``dropkit`` command.

    A usage error that Click itself finds (an option that does not parse, an unknown command)
    is one line on stderr and exit status 2, like the errors dropkit's commands report.
    """
    try:
        status = app(standalone_mode=False)
    except _USAGE_ERROR as error:
        message = error.format_message()  # type: ignore[attr-defined]
        typer.echo(f"Error: {message}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
