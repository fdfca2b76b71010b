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
