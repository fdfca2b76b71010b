"""``dropkit active`` end to end on tiny settings, and its usage errors."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app

runner = CliRunner()
TINY = [
    "active", "-d", "digits", "--strategies", "random,bald,batchbald", "--seeds", "2",
    "--rounds", "2", "--initial", "10", "--query", "5", "--samples", "4", "--steps", "5",
    "--pool", "50", "--hidden", "16",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the command sets --threads


def test_active_end_to_end_and_resume(tmp_path):
    result = runner.invoke(app, [*TINY, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(lines) == 3 * 2 * 3  # one progress line per round
    assert "bald seed 1 round 2: 20 labels" in result.output
    for needle in ("labels to target", "area under curve %", "area - random", "report:"):
        assert needle in result.output
    (report,) = tmp_path.rglob("report.html")
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 2
    for needle in ("batchbald", "labels to target", "area - random (pts)", "score s (cpu)"):
        assert needle in html
    assert (report.parent / "learning-curves.png").stat().st_size > 0
    with sqlite3.connect(tmp_path / "active.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 18
    again = runner.invoke(app, [*TINY, "-o", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert again.output.count("(stored)") == 18  # nothing is run twice


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--strategies", "random,bold"], "--strategies"),
        (["--method", "exact"], "--method"),
        (["--method", "moments", "--strategies", "batchbald"], "--method"),
        (["--query", "0"], "--query"),
        (["--initial", "100000"], "--initial"),
        (["--dataset", "nope"], "--dataset"),
        (["--hidden", "a,b"], "--hidden"),
        (["--target", "2"], "--target"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, option):
    result = runner.invoke(app, [*TINY, "-o", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {option}:"), lines[0]
