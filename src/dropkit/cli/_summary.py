"""Printing a comparison's summary, shared by ``compare`` and ``report``."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the experiments extra is imported only when a command needs it
    from dropkit.experiments.train import EpochMetrics, RunResult

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


def usage_error(option: str, message: str) -> NoReturn:
    """Print ``Error: OPTION: MESSAGE`` as one line on stderr and exit 2 (a usage error)."""
    typer.echo(f"Error: {option}: {message}", err=True)
    raise typer.Exit(2)


def config_error(error: Exception) -> NoReturn:
    """:func:`usage_error` for a :class:`~dropkit.experiments.ConfigError`."""
    usage_error(getattr(error, "option", "option"), getattr(error, "message", str(error)))


def summary_console(width: int = 120) -> Console:
    """A console that does not wrap a wide table when the output is a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=width)


def print_summary(console: Console, results: Sequence[object], paths: dict[str, Path]) -> None:
    from dropkit.experiments.report import learned_lines, summarize, table_title, verdict

    title, rows = table_title(summarize(results))  # type: ignore[arg-type]
    regression = bool(results) and all(getattr(r, "regression", None) for r in results)
    gap = (
        "gap: test - train RMSE; RMSE, NLL and width in the targets' units"
        if regression
        else "gap: train - test accuracy"
    )
    # No vertical rules and no outer padding: the table fits 80 columns (a narrow terminal).
    table = Table(
        title=title,
        caption=f"±: standard deviation over seeds (not an interval); {gap}; seconds: "
        "training time of all the rate's runs",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    for column in rows[0] if rows else ():
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    console.print(verdict(results), style="bold")  # type: ignore[arg-type]
    for line in learned_lines(results):  # type: ignore[arg-type]
        console.print(line)
    for name, path in paths.items():
        console.print(f"  {name:12s} {path}")


class PlainProgress:
    """Progress as plain lines (per run and per epoch), for output that is not a terminal.

    A live progress bar draws nothing into a file or a pipe; these lines show that a long run
    is alive and how it goes.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self._where = ""
        self._epochs = 0

    def start(self, rate: float | str, seed: int, epochs: int) -> None:
        what = rate if isinstance(rate, str) else f"{rate:g}"  # "auto": a learned-rate run
        self._where, self._epochs = f"rate {what}, seed {seed}", epochs
        typer.echo(f"{self._where}: training for {epochs} epochs")

    def epoch(self, m: EpochMetrics) -> None:
        acc = "" if math.isnan(m.val_acc) else f", val acc {100 * m.val_acc:.1f}%"
        typer.echo(
            f"{self._where}: epoch {m.epoch}/{self._epochs}: train loss {m.train_loss:.4f}, "
            f"val loss {m.val_loss:.4f}{acc}"
        )

    def done(self, r: RunResult, skipped: bool) -> None:
        self.finished += 1
        how = "already done" if skipped else f"done in {r.seconds:.1f} s"
        learned = "/".join(f"{p:.3g}" for p in r.layer_rates or [])
        what = f"auto, learned p {learned}" if r.learned else f"rate {r.rate:g}"
        score = (
            f"test RMSE {r.regression.test_rmse:.3g}"
            if r.regression is not None
            else f"test acc {100 * r.test_acc:.1f}%"
        )
        typer.echo(f"run {self.finished}/{self.total} ({what}, seed {r.seed}) {how}: {score}")
