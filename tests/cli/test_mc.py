"""Checkpoints of dropkit compare and ``dropkit mc`` on them."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments.mc_eval import CheckpointError, evaluate_checkpoints, load_checkpoint

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "2", "--seeds", "2", "--rates", "0,0.5", "--hidden", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert runner.invoke(app, ["compare", *TINY, "-o", str(out)]).exit_code == 0
    return out


def test_compare_writes_safe_checkpoints(trained) -> None:
    names = sorted(p.name for p in (trained / "checkpoints").glob("*.pt"))
    assert names == [
        "rate-0.5_seed-0.pt",
        "rate-0.5_seed-1.pt",
        "rate-0_seed-0.pt",
        "rate-0_seed-1.pt",
    ]
    payload = load_checkpoint(trained / "checkpoints" / "rate-0.5_seed-1.pt")
    assert payload["rate"] == 0.5
    assert payload["seed"] == 1
    assert payload["config"]["dataset"] == "synthetic"
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_checkpoint_reproduces_the_stored_test_accuracy(tmp_path, mode) -> None:
    assert runner.invoke(app, ["compare", *TINY, mode, "-o", str(tmp_path)]).exit_code == 0
    rows = evaluate_checkpoints(tmp_path, samples=2)
    import json
    import sqlite3

    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        stored = {
            (rate, seed): json.loads(result)["test_acc"]
            for rate, seed, result in db.execute("SELECT rate, seed, result FROM runs")
        }
    for row in rows:
        if row.method == "deterministic":
            assert row.accuracy == pytest.approx(stored[(row.rate, row.seed)], abs=1e-6)


def test_mc_command_prints_both_inferences(trained) -> None:
    result = runner.invoke(app, ["mc", str(trained), "--samples", "4"])
    assert result.exit_code == 0, result.output
    for needle in ("deterministic", "MC (4", "ECE", "Brier", "error AUROC"):
        assert needle in result.output
    rows = evaluate_checkpoints(trained, samples=4)
    assert {(r.rate, r.method) for r in rows} == {(0.5, "deterministic"), (0.5, "MC (4 samples)")}


def test_corrupt_and_foreign_checkpoints_are_named(trained, tmp_path) -> None:
    (tmp_path / "checkpoints").mkdir()
    bad = tmp_path / "checkpoints" / "rate-0.5_seed-0.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["mc", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a readable checkpoint" in result.output
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not a dropkit compare checkpoint"):
        load_checkpoint(bad)
    empty = runner.invoke(app, ["mc", str(tmp_path / "nothing")])
    assert empty.exit_code == 2
    assert "no checkpoints" in empty.output
