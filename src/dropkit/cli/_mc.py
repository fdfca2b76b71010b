"""``dropkit mc DIR``: deterministic vs Monte Carlo dropout inference on trained checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dropkit.cli._app import app
from dropkit.cli._report import announce, configuration_option
from dropkit.cli._summary import require_experiments_extra, summary_console


@app.command()
def mc(
    directory: Path = typer.Argument(
        ..., help="An output directory of dropkit compare (or one configuration's folder in it)."
    ),
    config: str | None = configuration_option(),
    samples: int = typer.Option(30, min=1, help="Monte Carlo samples per input."),
    rates: str = typer.Option("", help="Only these rates, e.g. 0.2,0.5 (default: all > 0)."),
    batch_size: int | None = typer.Option(None, min=1, help="Inputs per chunk (bounds memory)."),
    method: str = typer.Option(
        "sampling",
        help="sampling (S passes), moments (one pass of moment propagation) or both.",
    ),
) -> None:
    """Score one configuration's checkpoints on the test set: deterministic vs MC dropout."""
    if method not in ("sampling", "moments", "both"):
        raise typer.BadParameter(f"expected sampling, moments or both, got {method!r}")
    require_experiments_extra()
    from dropkit.experiments.mc_eval import (
        CheckpointError,
        evaluate_checkpoints,
        resolve_configuration,
        summarize_rows,
    )
    from dropkit.experiments.store import AUTO, StoreError

    try:
        wanted = tuple(float(r) for r in rates.split(",") if r.strip()) or None
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated rates, got {rates!r}") from None
    try:
        store, chosen, others = resolve_configuration(directory, config)
        announce(store.directory, chosen, others)
        rows = evaluate_checkpoints(
            store.directory,
            samples=samples,
            rates=wanted,
            batch_size=batch_size,
            configuration=chosen.key,
            method=method,
        )
    except (CheckpointError, StoreError) as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    learned = len(store.done(chosen.key + AUTO))
    table_rows = summarize_rows(rows)
    title = f"test set: deterministic vs Monte Carlo dropout ({store.directory / chosen.folder})"
    table = Table(title=title)
    for column in table_rows[0]:
        table.add_column(column, justify="right")
    for row in table_rows:
        table.add_row(*row.values())
    summary_console(150).print(table)
    if "RMSE" in table_rows[0]:
        typer.echo(
            "Regression, in the targets' units: NLL of each method's predictive distribution "
            "(MC: the mixture of its passes), central 95% intervals; the noise std of each "
            "method is chosen on the validation split (see dropkit.experiments.mc_regression)."
        )
    else:
        typer.echo(
            "Uncertainty for the error AUROC: 1 - max probability (deterministic), "
            "predictive entropy (MC, moments)."
        )
    if learned:
        typer.echo(
            f"Not scored here: the {learned} learned-rate (auto) runs; dropkit mc scores the runs "
            "at fixed rates (the learned runs' test accuracy, NLL and ECE are in dropkit report)."
        )
