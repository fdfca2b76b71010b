"""``dropkit.convert`` on real models: a training step before and after, interleaved.

    python benchmarks/bench_convert_real.py           # 12 rounds, 1 thread: ~2 minutes idle
    python benchmarks/bench_convert_real.py --rounds 5 --models bert,gpt2
    python benchmarks/bench_convert_real.py --threads 2
    python benchmarks/bench_convert_real.py --functional  # and rows with convert(functional=True)

Each model is built from a small configuration with random weights (nothing is downloaded),
seeded, and converted (a deep copy); the two must give bit-identical outputs in eval mode. Then
their training steps (Adam, lr 1e-4, loss: mean square of the main output) alternate in one
process: a warm-up step each, then ``--rounds`` rounds of one step each, median kept.
``dropkit bench`` runs the same code (``dropkit.bench.bench_convert_real``). Prints
a markdown table for docs/benchmarks.md, then the median speed-up over the models.
timm's and torchvision's models run where torchvision imports: in the vision environment
(``pip install -r requirements/vision.txt`` in a venv of its own); elsewhere they are
skipped with the reason.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from dropkit.bench import ConvertRow, bench_convert_real, real_convert_models


def table(rows: Sequence[ConvertRow], skipped: dict[str, str]) -> str:
    """The markdown table: one line per model (skipped ones with the reason), then the median
    speed-up over the timed models."""
    lines = [
        "| model | layers convert swapped | torch ms per step | converted ms per step | speed-up |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.swapped} | {row.torch_ms:.1f} | {row.converted_ms:.1f} | "
            f"**{row.speedup:.2f}x** |"
        )
    lines += [f"| {model} | skipped: {reason} | | | |" for model, reason in skipped.items()]
    if rows:
        median = statistics.median(row.speedup for row in rows)
        lines += ["", f"Median speed-up over the {len(rows)} timed: **{median:.2f}x**"]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def _versions() -> str:
    found = [f"torch {torch.__version__}"]
    for package in ("transformers", "timm", "torchvision"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--models",
        default="",
        help=f"comma-separated, some of {','.join(real_convert_models())} (default: all)",
    )
    parser.add_argument(
        "--functional",
        action="store_true",
        help="add a row per model with convert(functional=True)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    load = os.getloadavg()[0]
    rows, skipped = bench_convert_real(
        rounds=args.rounds,
        scale=args.scale,
        models=models,
        threads=args.threads,
        functional=args.functional,
    )
    print(
        f"{_cpu()}, {os.cpu_count()} cores; {_versions()}; {args.threads} thread(s), median of "
        f"{args.rounds} interleaved rounds; load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end\n"
    )
    print(table(rows, skipped), flush=True)


if __name__ == "__main__":
    main()
