"""``dropkit sweep`` on the SQLite default: search, resume, two workers, bad storage."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from dropkit.cli import app

pytest.importorskip("optuna")

runner = CliRunner()
SMALL = ["-d", "synthetic", "--epochs", "2"]


def _trials(directory) -> list[tuple[int, str]]:
    with sqlite3.connect(directory / "sweep.sqlite") as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def test_small_search_writes_the_study_and_a_report(tmp_path) -> None:
    result = runner.invoke(app, ["sweep", *SMALL, "--n-trials", "3", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "best trials" in result.output
    assert "dropkit compare --dataset synthetic --model mlp --rates 0," in result.output
    trials = _trials(tmp_path)
    assert [n for n, _ in trials] == [0, 1, 2]
    assert {state for _, state in trials} <= {"COMPLETE", "PRUNED"}
    html = (tmp_path / "sweep.html").read_text()
    assert "history.png" in html
    assert html.count("data:image/png;base64,") >= 1


def test_rerunning_resumes_the_study(tmp_path) -> None:
    assert (
        runner.invoke(app, ["sweep", *SMALL, "--n-trials", "2", "-o", str(tmp_path)]).exit_code == 0
    )
    first = _trials(tmp_path)
    assert (
        runner.invoke(app, ["sweep", *SMALL, "--n-trials", "4", "-o", str(tmp_path)]).exit_code == 0
    )
    second = _trials(tmp_path)
    assert second[:2] == first  # the finished trials are kept, not run again
    assert [n for n, _ in second] == [0, 1, 2, 3]
    assert (
        runner.invoke(app, ["sweep", *SMALL, "--n-trials", "4", "-o", str(tmp_path)]).exit_code == 0
    )
    assert len(_trials(tmp_path)) == 4  # nothing left to do


def test_two_workers_share_one_study(tmp_path) -> None:
    result = runner.invoke(
        app, ["sweep", *SMALL, "--n-trials", "4", "--workers", "2", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    trials = _trials(tmp_path)
    numbers = [n for n, _ in trials]
    assert len(numbers) == len(set(numbers))  # none duplicated
    finished = [n for n, state in trials if state in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4  # none lost (a worker may finish one trial past the target)


def test_unreachable_storage_fails_at_once_naming_it(tmp_path) -> None:
    url = "postgresql://dropkit:secret@127.0.0.1:1/nowhere"
    result = runner.invoke(app, ["sweep", *SMALL, "--storage", url, "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "postgresql://dropkit:***@127.0.0.1:1/nowhere" in result.output
    assert "secret" not in result.output
    bad = runner.invoke(app, ["sweep", *SMALL, "--storage", "nodb://x", "-o", str(tmp_path)])
    assert bad.exit_code == 2
    assert "nodb://x: cannot open the study's storage" in bad.output


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--n-trials", "0"], "--n-trials"),
        (["--workers", "0"], "--workers"),
        (["-d", "imagenet"], "--dataset"),
    ],
)
def test_bad_options(tmp_path, options, named) -> None:
    result = runner.invoke(app, ["sweep", *SMALL, *options, "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert named in result.output


def test_resume_after_the_process_is_killed_mid_trial(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "dropkit", "sweep", "-d", "synthetic", "-o", str(tmp_path)]
    slow = subprocess.Popen(
        [*cmd, "--epochs", "400", "--n-trials", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (tmp_path / "sweep.sqlite").exists():
            try:
                if any(state == "RUNNING" for _, state in _trials(tmp_path)):
                    break
            except sqlite3.OperationalError:  # tables not created yet
                pass
        time.sleep(0.3)
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=30)
    assert [state for _, state in _trials(tmp_path)] == ["RUNNING"]  # killed mid-trial
    result = subprocess.run(
        [*cmd, "--epochs", "2", "--n-trials", "2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    finished = [n for n, s in _trials(tmp_path) if s in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 2


def test_cnn_sweep_searches_the_variant(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "sweep",
            "-d",
            "digits",
            "-m",
            "cnn",
            "--epochs",
            "1",
            "--n-trials",
            "3",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "variant=" in result.output
    assert "--variant " in result.output
