"""``dropkit mc`` on checkpoints it cannot use: one line naming the file, exit 2, never a hang."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments import CompareConfig, TrainConfig, build_model
from dropkit.experiments.compare import CHECKPOINT_FORMAT
from dropkit.experiments.mc_eval import CheckpointError, evaluate_checkpoints

runner = CliRunner()
CONFIG = CompareConfig(dataset="synthetic", train=TrainConfig(hidden=(8,)), rates=(0.0, 0.5))


def _payload() -> dict[str, object]:
    torch.manual_seed(0)
    model = build_model("mlp", (40,), 4, hidden=(8,), rate=0.5)
    return {
        "format": CHECKPOINT_FORMAT,
        "experiment": CONFIG.key(),
        "config": CONFIG.to_json(),
        "rate": 0.5,
        "seed": 0,
        "state_dict": model.state_dict(),
    }


def _broken(payload: dict, what: str) -> dict:
    payload = dict(payload)
    if what == "missing config":
        del payload["config"]
    elif what == "unknown model":
        payload["config"] = {**CONFIG.to_json(), "train": {**CONFIG.to_json()["train"]}}
        payload["config"]["train"]["model"] = "transformer"  # type: ignore[index]
    elif what == "config of another shape":
        payload["config"] = {"rates": [0.5]}
    elif what == "rate not a number":
        payload["rate"] = "half"
    elif what == "rate 1.5":
        payload["rate"] = 1.5
    return payload


def test_a_good_checkpoint_is_scored(tmp_path) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save(_payload(), tmp_path / "checkpoints" / "rate-0.5_seed-0.pt")
    rows = evaluate_checkpoints(tmp_path, samples=2)
    assert {r.method for r in rows} == {"deterministic", "MC (2 samples)"}


@pytest.mark.parametrize(
    "what",
    ["missing config", "unknown model", "config of another shape", "rate not a number", "rate 1.5"],
)
def test_unusable_checkpoints_are_refused_in_one_line(tmp_path, what) -> None:
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "rate-0.5_seed-0.pt"
    torch.save(_broken(_payload(), what), path)
    result = runner.invoke(app, ["mc", str(tmp_path), "--samples", "2"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}: ")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_named_like_a_checkpoint_is_refused_not_waited_on(tmp_path) -> None:
    (tmp_path / "checkpoints").mkdir()
    os.mkfifo(tmp_path / "checkpoints" / "rate-0.5_seed-0.pt")
    outcome: list[BaseException] = []

    def score() -> None:
        try:
            evaluate_checkpoints(tmp_path, samples=2)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=score, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "evaluate_checkpoints blocked on a FIFO"
    assert len(outcome) == 1
    assert isinstance(outcome[0], CheckpointError)
    assert "not a regular file" in str(outcome[0])
