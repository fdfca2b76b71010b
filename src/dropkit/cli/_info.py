"""``dropkit info``: the environment, for bug reports."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dropkit._env import environment
from dropkit.cli._app import app


@app.command()
def info() -> None:
    """Print versions of dropkit, torch and Python, the devices, and the available backends."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, value in environment().items():
        table.add_row(label, value)
    Console().print(table)
