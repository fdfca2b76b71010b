"""Command-line interface: ``dropkit`` (or ``python -m dropkit``)."""

from dropkit.cli import _bench, _compare, _doctor, _info, _mc, _report, _sweep  # noqa: F401  (registers the commands)
from dropkit.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Run the ``dropkit`` command."""
    app()
