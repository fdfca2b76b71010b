"""``dropkit compare --task regression`` and ``dropkit mc`` on it, end to end on tiny runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments import Store

runner = CliRunner()
TINY = ["--task", "regression", "--epochs", "2", "--seeds", "2", "--rates", "0,0.5"]
TINY += ["--hidden", "16"]
RUN = "task-regression_hidden-16_epochs-2"


def test_compare_regression_end_to_end_then_mc_both(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    for needle in ("train RMSE", "test RMSE", "test NLL", "95% cover", "test RMSE vs rate 0"):
        assert needle in words, needle
    folder = tmp_path / RUN
    for name in ("metrics.csv", "loss.png", "rmse.png", "gap.png", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert not (folder / "accuracy.png").exists()
    (config,) = Store(tmp_path).configurations()
    assert config.config["task"] == "regression"
    assert config.config["dataset"] == "diabetes"
    html = (folder / "report.html").read_text()
    assert "targets&#x27; units" in html
    assert html.count("data:image/png;base64,") == 3

    (folder / "report.html").unlink()
    again = runner.invoke(app, ["report", str(tmp_path)])  # from the database alone
    assert again.exit_code == 0, again.output
    assert "test RMSE vs rate 0" in " ".join(again.output.split())
    assert (folder / "report.html").is_file()

    scored = runner.invoke(app, ["mc", str(tmp_path), "--method", "both", "--samples", "20"])
    assert scored.exit_code == 0, scored.output
    words = " ".join(scored.output.split())
    for needle in ("deterministic", "MC (20 samples)", "moments (one pass)", "RMSE", "cover"):
        assert needle in words, needle


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--task", "regression", "--dataset", "digits"], "--dataset"),
        (["--dataset", "diabetes"], "--task"),
        (["--task", "ranking"], "--task"),
        (["--task", "regression", "--rates", "0,auto"], "--rates"),
    ],
)
def test_a_task_that_does_not_fit_exits_2_with_one_line(tmp_path, options, named) -> None:
    result = runner.invoke(app, ["compare", *options, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sweep", "active"])
def test_commands_that_rank_classifiers_refuse_the_regression_data(tmp_path, command) -> None:
    # Their scores are a classifier's (validation accuracy, acquisition by entropy): a
    # regression data set would give NaN or meaningless rankings, so it is refused up front.
    result = runner.invoke(app, [command, "--dataset", "diabetes", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "regression data set" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
