"""``dropkit mc`` on checkpoints it cannot use: one line naming the file, exit 2, never a hang."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments.mc_eval import CheckpointError, evaluate_checkpoints

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "1", "--seeds", "1", "--rates", "0,0.5", "--hidden", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["compare", *TINY, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _copy(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained output and its checkpoint with dropout (rate 0.5)."""
    out = tmp_path / "runs"
    shutil.copytree(trained, out)
    (checkpoint,) = out.glob("*/checkpoints/rate-0.5_seed-0_*.pt")
    return out, checkpoint


def _broken(payload: dict, what: str) -> dict:
    payload = dict(payload)
    if what == "missing config":
        del payload["config"]
    elif what == "unknown model":
        config = dict(payload["config"])
        config["train"] = {**config["train"], "model": "transformer"}
        payload["config"] = config
    elif what == "config of another shape":
        payload["config"] = {"rates": [0.5]}
    elif what == "rate not a number":
        payload["rate"] = "half"
    elif what == "rate 1.5":
        payload["rate"] = 1.5
    return payload


def test_the_untouched_checkpoints_are_scored(trained) -> None:
    rows = evaluate_checkpoints(trained, samples=2)
    assert {(r.rate, r.method) for r in rows} == {(0.5, "deterministic"), (0.5, "MC (2 samples)")}


@pytest.mark.parametrize(
    "what",
    ["missing config", "unknown model", "config of another shape", "rate not a number", "rate 1.5"],
)
def test_unusable_checkpoints_are_refused_in_one_line(trained, tmp_path, what) -> None:
    out, checkpoint = _copy(trained, tmp_path)
    payload = torch.load(checkpoint, weights_only=True)
    torch.save(_broken(payload, what), checkpoint)
    result = runner.invoke(app, ["mc", str(out), "--samples", "2"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [line for line in errors if line.startswith(f"Error: {checkpoint}: ")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_in_place_of_a_checkpoint_is_refused_not_waited_on(trained, tmp_path) -> None:
    out, checkpoint = _copy(trained, tmp_path)
    checkpoint.unlink()
    os.mkfifo(checkpoint)
    outcome: list[BaseException] = []

    def score() -> None:
        try:
            evaluate_checkpoints(out, samples=2)
        except BaseException as error:  # the outcome is asserted below
            outcome.append(error)

    thread = threading.Thread(target=score, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "evaluate_checkpoints blocked on a FIFO"
    assert len(outcome) == 1
    assert isinstance(outcome[0], CheckpointError)
    assert str(checkpoint) in str(outcome[0])
