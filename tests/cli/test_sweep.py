"""``dropkit sweep`` on the SQLite default: search, resume, two workers, bad storage."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments.sweep import SURPLUS

pytest.importorskip("optuna")

runner = CliRunner()
SMALL = ["-d", "synthetic", "--epochs", "2"]


def _trials(directory) -> list[tuple[int, str]]:
    with sqlite3.connect(directory / "sweep.sqlite") as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def _params(directory) -> list[tuple[tuple[str, float], ...]]:
    """Each trial's sampled parameters, in trial order."""
    with sqlite3.connect(directory / "sweep.sqlite") as db:
        rows = db.execute(
            "SELECT trial_id, param_name, param_value FROM trial_params ORDER BY trial_id"
        ).fetchall()
    trials: dict[int, list[tuple[str, float]]] = {}
    for trial, name, value in rows:
        trials.setdefault(trial, []).append((name, value))
    return [tuple(sorted(p)) for _, p in sorted(trials.items())]


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
    # A later worker (here: the same machine again; as well another machine) does not draw
    # the earlier trials' parameters again.
    params = _params(tmp_path)
    assert len(set(params)) == len(params) == 4
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
    assert len(finished) == 4  # none lost, none past the target
    params = _params(tmp_path)
    assert len(set(params)) == len(params)  # no two workers ran the same trial


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
    assert len(finished) == 2  # the killed trial is failed, queued again and finished once


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


def test_the_suggested_command_is_one_line_that_runs_and_optuna_stays_quiet(tmp_path) -> None:
    import shlex
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "dropkit", "sweep", *SMALL, "--n-trials", "3", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Optuna's own INFO lines ("[I 2026-...] A new study created ...") do not leak.
    assert "A new study created" not in done.stderr + done.stdout
    assert "[I " not in done.stderr
    commands = [line.strip() for line in done.stdout.splitlines() if "dropkit compare" in line]
    assert len(commands) == 1
    args = shlex.split(commands[0])
    assert args[:2] == ["dropkit", "compare"]
    assert "--layer-scale" in args  # the last option: nothing was cut off by a wrap
    pasted = runner.invoke(app, [*args[1:], "--seeds", "2", "-o", str(tmp_path / "compare")])
    assert pasted.exit_code == 0, pasted.output


def test_optuna_warnings_come_out_as_dropkit_lines(capsys) -> None:
    import logging

    from dropkit.experiments.sweep import route_optuna_logging

    route_optuna_logging()
    logging.getLogger("optuna.study").info("chatter")
    logging.getLogger("optuna.study").warning("careful")
    err = capsys.readouterr().err
    assert err == "Warning (optuna): careful\n"


def _study_with_a_pruned_leader(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    from dropkit.experiments.sweep import SweepConfig

    config = SweepConfig(dataset="synthetic", epochs=2, study="pruned")
    url = config.storage_url(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="pruned", storage=url, direction="maximize")
    distributions = {
        "rate": FloatDistribution(0.0, 0.7),
        "early_layer_scale": FloatDistribution(0.25, 1.0),
        "schedule": CategoricalDistribution(["constant", "early", "late"]),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    }
    params = {"rate": 0.3, "early_layer_scale": 0.5, "schedule": "constant", "weight_decay": 1e-4}
    for value in (0.6, 0.7):
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, params=params,
                         distributions=distributions)
        )  # fmt: skip
    # Stopped early at a lucky epoch: its last intermediate value becomes its "value".
    study.add_trial(
        create_trial(state=TrialState.PRUNED, params={**params, "rate": 0.6},
                     distributions=distributions, intermediate_values={1: 0.95})
    )  # fmt: skip
    return config, url


def test_only_completed_trials_are_ranked_and_the_page_has_its_own_caption(tmp_path) -> None:
    from dropkit.experiments.report import write_sweep_report
    from dropkit.experiments.sweep import summarize

    config, url = _study_with_a_pruned_leader(tmp_path)
    result = summarize(config, url)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert [t["value"] for t in result.trials] == [0.7, 0.6]
    assert result.best_value == 0.7
    assert "--rates 0,0.300" in result.compare_command
    assert result.states == {"COMPLETE": 2, "PRUNED": 1}
    page = write_sweep_report(tmp_path, "sweep", result, {}, {}, {}).read_text()
    assert "95.0" not in page
    assert "mean ± standard deviation over seeds" not in page  # the compare report's caption
    assert "pruned trials stopped early and are not ranked" in page


def test_a_sweep_over_your_own_model_and_data(tmp_path) -> None:
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "own_model.py"
    model, data = f"{example}:make_model", f"{example}:spirals"
    options = ["--model", model, "--dataset", data, "--epochs", "1", "--n-trials", "2"]
    result = runner.invoke(app, ["sweep", *options, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "(2 complete)" in result.output
    assert f"--model {model}" in result.output  # the suggested compare names your model
    assert len(_trials(tmp_path)) == 2


def _surplus(directory) -> int:
    with sqlite3.connect(directory / "sweep.sqlite") as db:
        return len(
            db.execute("SELECT 1 FROM trial_user_attributes WHERE key = ?", (SURPLUS,)).fetchall()
        )


@pytest.mark.parametrize("workers", [2, 3])
def test_n_trials_is_the_total_over_workers(tmp_path, workers) -> None:
    # Workers that finish at about the same time used to each start one more trial.
    args = ["sweep", *SMALL, "--n-trials", "3", "--workers", str(workers), "-o", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    trials = _trials(tmp_path)
    finished = [n for n, state in trials if state in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3, trials
    # A trial a racing worker started past the target is not run: stored as failed and
    # marked, and the summary does not count it.
    assert len(trials) - len(finished) == _surplus(tmp_path)
    assert "fail" not in result.output
    assert "(optuna)" not in result.output


def test_sweep_help_names_your_own_model_and_data() -> None:
    result = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for option in ("--model", "--dataset"):
        line = text[text.index(option) :][:400]
        assert "FILE.py:NAME" in line, line
        assert "package.module:NAME" in line, line


def test_a_running_trial_that_never_had_a_heartbeat_is_retried_not_waited_for(tmp_path) -> None:
    # A worker killed between creating its trial and its heartbeat thread's first write leaves
    # a running trial that Optuna's stale check never fails. Here ask() makes such a trial, and
    # a later sweep, whose last trial it would wait for, must finish with the count exact.
    import optuna

    from dropkit.experiments.sweep import SweepConfig

    assert (
        runner.invoke(app, ["sweep", *SMALL, "--n-trials", "1", "-o", str(tmp_path)]).exit_code == 0
    )
    url = SweepConfig(dataset="synthetic", epochs=2).storage_url(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.load_study(study_name="dropkit-sweep", storage=url).ask()  # the orphan, no heartbeat
    assert [s for _, s in _trials(tmp_path)] == ["COMPLETE", "RUNNING"]
    result = runner.invoke(app, ["sweep", *SMALL, "--n-trials", "3", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    states = [s for _, s in _trials(tmp_path)]
    assert states[1] == "FAIL"  # the orphan, failed as stale once it had a heartbeat
    assert states.count("RUNNING") == 0
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 3
