"""The ``dropkit`` command end to end."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import dropkit
from dropkit.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"dropkit {dropkit.__version__}"


def test_info_lists_versions_and_backends() -> None:
    import torch

    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    for needle in (dropkit.__version__, torch.__version__, "python", "backend numba", "reference"):
        assert needle in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dropkit", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"dropkit {dropkit.__version__}"


def test_bench_runs_and_writes_json(tmp_path) -> None:
    import json

    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            "--sizes",
            "4096,5000",
            "--dtypes",
            "float32",
            "--rounds",
            "1",
            "--no-compile",
            "--mlp-epochs",
            "1",
            "--no-convert",
            "--no-fused",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dropkit" in result.output
    assert "MLP" in result.output
    data = json.loads(out.read_text())
    assert {r["numel"] for r in data["kernels"]} == {4096, 5000}
    assert {r["pass"] for r in data["kernels"]} == {"forward", "forward+backward"}
    assert all(v > 0 for r in data["kernels"] for v in r["times_ms"].values())
    variants = [m["variant"] for m in data["mlp"]]
    assert variants[0] == "no dropout"
    assert variants[-2:] == ["torch dropout", "dropkit dropout"]
    assert len(variants) == 5
    assert all(v.startswith("floor: ") for v in variants[1:3])


def test_bench_rejects_bad_sizes() -> None:
    result = runner.invoke(
        app, ["bench", "--sizes", "abc", "--no-mlp", "--no-convert", "--no-fused"]
    )
    assert result.exit_code == 2
    assert "sizes" in result.output
