"""``dropkit bench``: dropkit vs torch dropout on this machine, side by side."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dropkit._env import environment
from dropkit.cli._app import app
from dropkit.cli._options import nonempty_path

_QUICK_SIZES = [1 << 16, 1 << 20, 1 << 24]
_FULL_SIZES = [1 << k for k in range(16, 26)]


def _size_label(numel: int) -> str:
    return f"2^{numel.bit_length() - 1}" if numel & (numel - 1) == 0 else str(numel)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="3 sizes and fewer rounds (under a minute)."),
    sizes: str = typer.Option(
        "", help="Comma-separated element counts, e.g. 65536,16777216 (default: 2^16..2^25)."
    ),
    dtypes: str = typer.Option("float32,bfloat16", help="Comma-separated dtypes."),
    rounds: int = typer.Option(0, min=0, help="Timed rounds per contender (default 7, quick 5)."),
    compiled: bool = typer.Option(True, "--compile/--no-compile", help="Include torch.compile."),
    mlp: bool = typer.Option(True, "--mlp/--no-mlp", help="Include the end-to-end MLP epoch."),
    mlp_epochs: int = typer.Option(0, min=0, help="Timed MLP epochs per variant (default 15)."),
    fused: bool = typer.Option(
        True, "--fused/--no-fused", help="Include bias_dropout_add vs the eager expression."
    ),
    convert: bool = typer.Option(
        True, "--convert/--no-convert", help="Include a stock torch model before/after convert."
    ),
    real: bool = typer.Option(
        True,
        "--real/--no-real",
        help="Include real models (BERT, GPT-2, timm ViT, VGG-11) before/after convert, "
        "one thread; skipped under --quick.",
    ),
    output: Path | None = typer.Option(
        None,
        parser=nonempty_path("a file name"),
        metavar="FILE",
        help="Write the results as JSON here.",
    ),
) -> None:
    """Time dropout forward and forward+backward: dropkit, torch, torch.compile, a copy."""
    import torch

    from dropkit.bench import (
        bench_convert,
        bench_convert_real,
        bench_fused,
        bench_kernels,
        bench_mlp,
    )

    try:
        size_list = [int(s) for s in sizes.split(",") if s] or (
            _QUICK_SIZES if quick else _FULL_SIZES
        )
        dtype_list = [getattr(torch, name.strip()) for name in dtypes.split(",") if name.strip()]
    except (ValueError, AttributeError) as error:
        raise typer.BadParameter(f"bad --sizes or --dtypes: {error}") from error
    if any(n < 1 for n in size_list) or not all(isinstance(d, torch.dtype) for d in dtype_list):
        raise typer.BadParameter("--sizes must be positive integers and --dtypes torch dtypes")
    console = Console()
    # The small-model sections run first: after the large kernels (and torch.compile) the
    # process runs small models measurably slower (idle worker threads, a fragmented heap).
    mlp_rows = bench_mlp(epochs=mlp_epochs or (7 if quick else 15)) if mlp else []
    if mlp_rows:
        mlp_table = Table(title="MLP 64-256-128-10, dropout 0.5, Adam, batch 64: ms per epoch")
        for column in ("dropout", "ms per epoch", "added by dropout", "95% interval"):
            mlp_table.add_column(column, justify="right")
        for m in mlp_rows:
            mlp_table.add_row(
                m.variant,
                f"{m.epoch_s * 1e3:.1f}",
                f"{m.overhead_pct:+.1f}%",
                f"{m.low_pct:+.1f}% to {m.high_pct:+.1f}%",
            )
        console.print(mlp_table)
    convert_rows = bench_convert(rounds=5 if quick else 9) if convert else []
    if convert_rows:
        convert_table = Table(title="training step of stock torch models, before/after convert")
        for column in ("model", "torch ms", "converted ms", "speed-up"):
            convert_table.add_column(column, justify="right")
        for c in convert_rows:
            convert_table.add_row(
                c.model, f"{c.torch_ms:.1f}", f"{c.converted_ms:.1f}", f"{c.speedup:.2f}x"
            )
        console.print(convert_table)
    real_rows, real_skipped = bench_convert_real() if real and not quick else ([], {})
    if real and quick:
        console.print("convert on real models: skipped under --quick")
    if real_rows or real_skipped:
        real_table = Table(title="training step of real models, before/after convert, 1 thread")
        for column in ("model", "swapped", "torch ms", "converted ms", "speed-up"):
            real_table.add_column(column, justify="right")
        for c in real_rows:
            real_table.add_row(
                c.model,
                str(c.swapped),
                f"{c.torch_ms:.1f}",
                f"{c.converted_ms:.1f}",
                f"{c.speedup:.2f}x",
            )
        for model, reason in real_skipped.items():
            real_table.add_row(model, f"skipped: {reason}", "", "", "")
        console.print(real_table)
        if real_rows:
            median = statistics.median(c.speedup for c in real_rows)
            console.print(f"median speed-up over the {len(real_rows)} timed: {median:.2f}x")
    fused_rows = bench_fused(rounds=5 if quick else 7) if fused else {}
    if fused_rows:
        fused_table = Table(
            title="residual + dropout(x + bias), (16, 512, 1024) float32, p=0.1, ms"
        )
        for column in ("pass", "torch eager", "dropkit fused", "speed-up"):
            fused_table.add_column(column, justify="right")
        for pass_, t in fused_rows.items():
            ratio = t["torch eager"] / t["dropkit fused"]
            fused_table.add_row(
                pass_, f"{t['torch eager']:.1f}", f"{t['dropkit fused']:.1f}", f"{ratio:.1f}x"
            )
        console.print(fused_table)
    rows = bench_kernels(
        size_list, dtype_list, rounds=rounds or (5 if quick else 7), compiled=compiled
    )
    table = Table(title="dropout, CPU, median ms per call (ratios: x times dropkit's time)")
    for column in ("size", "dtype", "pass", "dropkit", "torch", "torch.compile", "copy", "clone"):
        table.add_column(column, justify="right")
    for row in rows:
        t = row.times_ms
        ours = t["dropkit"]

        def cell(name: str, t: dict[str, float] = t, ours: float = ours) -> str:
            return f"{t[name]:.3f} ({t[name] / ours:.1f}x)" if name in t else "-"

        table.add_row(
            _size_label(row.numel),
            row.dtype.removeprefix("torch."),
            row.pass_,
            f"{ours:.3f}",
            cell("torch"),
            cell("torch.compile"),
            cell("copy"),
            cell("clone"),
        )
    console.print(table)
    if output is not None:
        payload = {
            "environment": environment(),
            "kernels": [r.to_json() for r in rows],
            "mlp": [m.to_json() for m in mlp_rows],
            "fused": fused_rows,
            "convert": [c.to_json() for c in convert_rows],
            "convert_real": [c.to_json() for c in real_rows],
            "convert_real_skipped": real_skipped,
        }
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {output}")
