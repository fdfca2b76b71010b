"""The ``dropkit`` command end to end."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
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


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "--epochs", "abc"], "'--epochs'"),
        (["compar"], "No such command 'compar'"),
        (["compare", "--no-such-option"], "--no-such-option"),
    ],
)
def test_a_usage_error_click_finds_is_one_line_too(args, needle) -> None:
    # The installed command (dropkit.cli.main), not the Typer app that CliRunner drives.
    result = subprocess.run(
        [sys.executable, "-m", "dropkit", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert needle in lines[0], lines[0]


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
            "--no-real",
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
    assert len(variants) == 6  # no dropout, three floors, torch, dropkit
    assert all(v.startswith("floor: ") for v in variants[1:4])
    assert data["convert_real"] == []


def test_bench_rejects_bad_sizes() -> None:
    result = runner.invoke(
        app, ["bench", "--sizes", "abc", "--no-mlp", "--no-convert", "--no-fused"]
    )
    assert result.exit_code == 2
    assert "sizes" in result.output


# ---------------------------------------------------------------- usage errors: one line, exit 2

SMALL = ["-d", "synthetic", "--epochs", "1", "--seeds", "1", "--rates", "0,0.5", "--hidden", "8,8"]


def _one_line_usage_error(result, option: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {option}: "), lines[0]


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (["--layer-scale", "3,3"], "--layer-scale"),  # p = 1.5: refused, not clamped to 0.99
        (["--layer-scale", "nan,1"], "--layer-scale"),
        (["--model", "cnn", "--layer-scale", "0.5,1"], "--layer-scale"),  # the cnn has 3 sites
        (["--schedule", "early"], "--schedule-epochs"),  # 0 epochs of dropout: never applies
        (["--schedule", "late", "--schedule-epochs", "1"], "--schedule-epochs"),  # 1 epoch only
        (["--schedule-epochs", "5"], "--schedule-epochs"),  # with the constant schedule
        (["--split-seed", "-1"], "--split-seed"),
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--variant", "element"], "--variant"),  # the mlp has no variant
        (["--layer-scale", "1,x"], "--layer-scale"),
    ],
)
def test_compare_refuses_bad_options_in_one_line_before_any_work(tmp_path, options, option):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", *SMALL, *options, "-o", str(out)])
    _one_line_usage_error(result, option)
    assert not out.exists()


def test_the_refusal_names_the_fix() -> None:
    result = runner.invoke(app, ["compare", *SMALL, "--layer-scale", "3,3"])
    assert "rate 0.5 x scale 3 gives p = 1.5" in result.output
    result = runner.invoke(app, ["compare", *SMALL, "--schedule", "early"])
    assert "never applies dropout; give --schedule-epochs N" in result.output


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_output_at_or_under_a_file_is_refused(tmp_path, command) -> None:
    pytest.importorskip("optuna")
    file = tmp_path / "file"
    file.write_text("x")
    for out in (file, file / "sub"):
        result = runner.invoke(app, [command, "-d", "synthetic", "--epochs", "1", "-o", str(out)])
        _one_line_usage_error(result, "--output")
        assert file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused(tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for out in (folder, folder / "sub"):
            result = runner.invoke(app, ["compare", *SMALL, "-o", str(out)])
            _one_line_usage_error(result, "--output")
    finally:
        folder.chmod(0o755)


def test_sweep_refuses_bad_label_noise_before_any_work(tmp_path) -> None:
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", "--label-noise", "2", "-o", str(out)])
    _one_line_usage_error(result, "--label-noise")
    assert not out.exists()


def _foreign_databases(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "results.sqlite").write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "results.sqlite") as db:
        db.execute("CREATE TABLE experiments (key TEXT, config TEXT, created TEXT)")
        db.execute("INSERT INTO experiments VALUES ('k', '{\"rates\": [0.5]}', 'now')")
        db.execute(
            "CREATE TABLE runs (experiment TEXT, rate REAL, seed INT, result TEXT, finished TEXT)"
        )
        db.execute("INSERT INTO runs VALUES ('k', 0.5, 0, '{}', 'now')")
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "results.sqlite") as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    return corrupt, foreign, other


def test_compare_and_report_refuse_a_database_that_is_not_dropkits(tmp_path) -> None:
    for folder in _foreign_databases(tmp_path):
        before = (folder / "results.sqlite").read_bytes()
        result = runner.invoke(app, ["compare", *SMALL, "-o", str(folder)])
        _one_line_usage_error(result, "--output")
        assert "results.sqlite" in result.output
        report = runner.invoke(app, ["report", str(folder)])
        assert report.exit_code == 2, report.output
        assert len(report.output.strip().splitlines()) == 1, report.output
        assert report.output.startswith(f"Error: {folder / 'results.sqlite'}")
        assert (folder / "results.sqlite").read_bytes() == before  # left as it was
        assert sorted(p.name for p in folder.iterdir()) == ["results.sqlite"]


def test_doctor_refuses_a_huge_input_shape() -> None:
    result = runner.invoke(
        app, ["doctor", "torch.nn:Identity", "--input-shape", "100000,100000,100000"]
    )
    _one_line_usage_error(result, "--input-shape")


def test_compare_prints_plain_progress_lines_when_not_a_terminal(tmp_path) -> None:
    result = runner.invoke(
        app, ["compare", *SMALL, "--epochs", "2", "--one-at-a-time", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # The first line comes before the data set, the model and the kernels are prepared (seconds).
    assert lines[0] == "preparing the data set synthetic, the model mlp and the kernels ..."
    table = next(i for i, line in enumerate(lines) if "dropout comparison" in line)
    progress = lines[:table]
    for rate in ("0", "0.5"):
        assert f"rate {rate}, seed 0: training for 2 epochs" in progress
        for epoch in (1, 2):
            assert any(
                line.startswith(f"rate {rate}, seed 0: epoch {epoch}/2: train loss ")
                and "val loss" in line
                for line in progress
            )
    assert sum(line.startswith("run ") and " done in " in line for line in progress) == 2


def test_a_torchvision_that_breaks_torchmetrics_stops_compare_before_training(
    tmp_path, monkeypatch
) -> None:
    # PyPI's CUDA torchvision beside the CPU build of torch cannot be imported, and torchmetrics
    # (which scores the runs) imports it: one line naming the fix, before any run trains.
    import sys

    class Broken:  # a finder that fails torchmetrics' import as the broken torchvision does
        @staticmethod
        def find_spec(name, *args, **kwargs):  # type: ignore[no-untyped-def]
            if name.split(".")[0] == "torchmetrics":
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    # Imported already by earlier tests: forget it (restored afterwards), so the import runs.
    for name in [n for n in sys.modules if n.split(".")[0] == "torchmetrics"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.0-test")
    result = CliRunner().invoke(
        app, ["compare", "--epochs", "1", "--seeds", "1", "--output", str(tmp_path / "out")]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("preparing the data set mnist1d")  # progress, on stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "torchvision 0.0-test does not load with torch" in lines[0]
    assert "install the torchvision that matches this torch" in lines[0]
    assert not any(tmp_path.rglob("*.pt"))  # no run trained


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["compare", "-o", ""], "'--output' / '-o'"),
        (["compare", "--output", " "], "'--output' / '-o'"),
        (["sweep", "-o", ""], "'--output' / '-o'"),
        (["sweep", "--storage", ""], "'--storage'"),
        (["report", "somewhere", "-o", ""], "'--output' / '-o'"),
        (["bench", "--output", ""], "'--output'"),
    ],
)
def test_an_empty_output_or_storage_is_a_usage_error(tmp_path, monkeypatch, capsys, args, option):
    # "" is not the current folder (Path("") is ".") nor the default database: one line, exit 2.
    from dropkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dropkit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"Error: Invalid value for {option}: empty; give "), lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder
