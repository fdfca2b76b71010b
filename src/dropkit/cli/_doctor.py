"""``dropkit doctor MODEL``: find dropout mistakes in a model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from dropkit.cli._app import app
from dropkit.cli._summary import summary_console


@app.command()
def doctor(
    model: str = typer.Argument(
        ...,
        help="path/to/file.py:NAME or package.module:NAME: a model, or a factory called with no "
        "argument or, as dropkit compare calls make_model(p), with the dropout rate --rate.",
    ),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="An input shape such as 8,3,32,32 (repeat for several inputs)."
    ),
    input_file: Path | None = typer.Option(
        None,
        "--input",
        help="A .pt file (torch.save) of the input: a tensor, a list of tensors, or a dict of "
        "tensors by argument name (keyword inputs such as input_ids and attention_mask).",
    ),
    output_format: str = typer.Option("text", "--format", help="text or json."),
    ignore: list[str] = typer.Option([], "--ignore", help="A rule code to skip (repeatable)."),
    rate: float | None = typer.Option(
        None,
        "--rate",
        help="The dropout rate given to a factory that takes one, such as make_model(p) "
        "(default: 0.2).",
    ),
) -> None:
    """Check a model for dropout mistakes; exit 1 if any error or warning is found."""
    from dropkit.doctor import LoadError, check, load_inputs, load_model

    if output_format not in ("text", "json"):
        raise typer.BadParameter(
            f"expected text or json, got {output_format!r}", param_hint="--format"
        )
    try:
        module = load_model(model, rate)
        inputs = load_inputs(input_shape, input_file)
    except LoadError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        report = check(module, inputs, ignore=ignore)
    except ValueError as error:
        if str(error).startswith("doctor: unknown rule"):
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"Error: the model did not run on the example input: {error}", err=True)
        raise typer.Exit(2) from None
    except SystemExit as error:  # the model's forward exited: nothing was checked
        typer.echo(
            f"Error: the model exited (SystemExit({error.code!r})) while running on the example "
            "input; nothing was checked",
            err=True,
        )
        raise typer.Exit(2) from None
    except Exception as error:  # the model's own exception, shown as such
        typer.echo(
            f"Error: the model did not run on the example input: {type(error).__name__}: {error}",
            err=True,
        )
        raise typer.Exit(2) from None
    if output_format == "json":
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        console = summary_console(160)
        if not report.findings:
            console.print("No dropout mistakes found.")
        for severity in ("error", "warning", "info"):
            rows = [f for f in report.findings if f.severity == severity]
            if not rows:
                continue
            table = Table(title=f"{severity}s ({len(rows)})", title_justify="left")
            for column in ("code", "where", "message", "hint"):
                table.add_column(column)
            for f in rows:
                table.add_row(f.code, f.where or "(model)", f.message, f"{f.hint}; see {f.doc}")
            console.print(table)
        if inputs is None:
            console.print(
                "Only the module-tree rules ran; give --input-shape to trace the data flow."
            )
    raise typer.Exit(0 if report.ok else 1)
