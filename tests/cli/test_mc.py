"""Checkpoints of dropkit compare and ``dropkit mc`` on them."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments.mc_eval import CheckpointError, evaluate_checkpoints, load_checkpoint

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "2", "--seeds", "2", "--rates", "0,0.5", "--hidden", "32"]
RUN = "hidden-32_epochs-2"  # TINY's configuration folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert runner.invoke(app, ["compare", *TINY, "-o", str(out)]).exit_code == 0
    return out


def _checkpoints(folder):
    """Checkpoint files by (rate, seed) part of their name (the rest tells runs apart)."""
    return {p.name.rsplit("_", 1)[0]: p for p in (folder / "checkpoints").glob("*.pt")}


def test_compare_writes_safe_checkpoints(trained) -> None:
    names = sorted(_checkpoints(trained / RUN))
    assert names == ["rate-0.5_seed-0", "rate-0.5_seed-1", "rate-0_seed-0", "rate-0_seed-1"]
    payload = load_checkpoint(_checkpoints(trained / RUN)["rate-0.5_seed-1"])
    assert payload["rate"] == 0.5
    assert payload["seed"] == 1
    assert payload["config"]["dataset"] == "synthetic"
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    # As readable as any file the user writes (mkstemp's 0600 hid them from a colleague's mc).
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in (trained / RUN / "checkpoints").glob("*.pt"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


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


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path) -> None:
    assert runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)]).exit_code == 0
    bad = _checkpoints(tmp_path / RUN)["rate-0.5_seed-0"]
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["mc", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a readable checkpoint" in result.output
    # One line naming the file and the fix; never torch's advice to unpickle it anyway.
    lines = result.output.strip().splitlines()
    assert len(lines) == 2, result.output  # the configuration line, then the error
    assert lines[1].startswith(f"Error: {bad}: ")
    assert "--fresh" in lines[1]
    assert "weights_only" not in result.output
    # report reads only the database: it warns about the file and writes the report.
    report = runner.invoke(app, ["report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    assert f"Warning: {bad}: not a readable checkpoint" in report.output
    bad.write_bytes(b"")  # cut short
    with pytest.raises(CheckpointError, match="damaged or cut short") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not a dropkit compare checkpoint"):
        load_checkpoint(bad)
    empty = runner.invoke(app, ["mc", str(tmp_path / "nothing")])
    assert empty.exit_code == 2
    assert "run dropkit compare there first" in empty.output


def test_mc_takes_one_configuration_and_never_mixes(tmp_path) -> None:
    one = ["-d", "synthetic", "--epochs", "1", "--seeds", "1", "--rates", "0.5", "--hidden", "16"]
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *one, *out]).exit_code == 0
    assert runner.invoke(app, ["compare", *one, "--label-noise", "0.3", *out]).exit_code == 0
    result = runner.invoke(app, ["mc", str(tmp_path), "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "holds 2 configurations; using label-noise-0.3_hidden-16_epochs-1" in result.output
    rows = evaluate_checkpoints(tmp_path, samples=2)
    assert len(rows) == 2  # one run, two inferences: not the other configuration's run too
    chosen = runner.invoke(app, ["mc", str(tmp_path), "--config", "hidden-16_epochs-1"])
    assert chosen.exit_code == 0, chosen.output
    assert "using hidden-16_epochs-1." in chosen.output
    # A configuration's folder works as the directory, too.
    folder = runner.invoke(app, ["mc", str(tmp_path / "hidden-16_epochs-1"), "--samples", "2"])
    assert folder.exit_code == 0, folder.output
    assert "using hidden-16_epochs-1." in folder.output


def test_mc_refuses_a_checkpoint_of_another_configuration(tmp_path) -> None:
    one = ["-d", "synthetic", "--epochs", "1", "--seeds", "1", "--rates", "0.5", "--hidden", "16"]
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *one, *out]).exit_code == 0
    assert runner.invoke(app, ["compare", *one, "--label-noise", "0.3", *out]).exit_code == 0
    (a,) = (tmp_path / "hidden-16_epochs-1" / "checkpoints").glob("*.pt")
    (b,) = (tmp_path / "label-noise-0.3_hidden-16_epochs-1" / "checkpoints").glob("*.pt")
    a.write_bytes(b.read_bytes())  # B's weights where A's should be
    result = runner.invoke(app, ["mc", str(tmp_path), "--config", "hidden-16_epochs-1"])
    assert result.exit_code == 2
    assert "belongs to another configuration" in result.output


def _stored_config_changed(folder, change) -> object:
    """Rewrite one checkpoint of ``folder`` with ``change`` applied to its stored configuration."""
    path = sorted((folder / "checkpoints").glob("rate-0.5_seed-0_*.pt"))[0]
    payload = torch.load(path, weights_only=True)
    change(payload["config"])
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        (lambda c: c.update(dataset="digits"), "dataset = 'digits' in the checkpoint, 'synthetic'"),
        (lambda c: c["train"].update(hidden=[64, 64]), "hidden = [64, 64] in the checkpoint, [32]"),
    ],
)
def test_a_checkpoint_that_disagrees_with_its_row_is_refused(
    trained, tmp_path, change, shown
) -> None:
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(trained, out)
    path = _stored_config_changed(out / RUN, change)
    (out / RUN / "report.html").unlink()
    for command in (["mc", str(out), "--samples", "2"], ["report", str(out)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(error) == 1, result.output
        assert str(path) in error[0]
        assert str(out / "results.sqlite") in error[0]
        assert shown in error[0]
    assert not (out / RUN / "report.html").exists()  # refused before writing anything


def _refuse_writes_under(monkeypatch, folder) -> None:
    """Writing under ``folder`` fails as in a read-only folder (root writes anywhere)."""
    import errno
    import tempfile
    from pathlib import Path

    real = tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)


def test_report_on_a_folder_it_cannot_write_says_so_or_writes_where_told(
    trained, tmp_path, monkeypatch
) -> None:
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(trained, out)
    before = {p: p.read_bytes() for p in (out / RUN).glob("*.*")}
    _refuse_writes_under(monkeypatch, out)
    refused = runner.invoke(app, ["report", str(out)])
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip().splitlines() == [
        f"Error: cannot write into {out / RUN} (Permission denied); give a writable folder "
        "with --output DIR"
    ]
    elsewhere = tmp_path / "elsewhere"
    written = runner.invoke(app, ["report", str(out), "-o", str(elsewhere)])
    assert written.exit_code == 0, written.output
    assert f"The report is in {elsewhere}; {out / RUN} was not changed." in written.output
    assert {p.name for p in elsewhere.iterdir()} >= {"metrics.csv", "report.html", "loss.png"}
    assert {p: p.read_bytes() for p in (out / RUN).glob("*.*")} == before
    inside = runner.invoke(app, ["report", str(out), "-o", str(out / "mine")])
    assert inside.exit_code == 2
    assert inside.output.startswith("Error: --output: cannot write into ")


def test_report_whose_write_fails_half_way_is_one_line(trained, tmp_path, monkeypatch) -> None:
    import errno
    import shutil

    from dropkit.experiments import report as report_module

    out = tmp_path / "runs"
    shutil.copytree(trained, out)

    def fails(directory, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(directory / "metrics.csv"))

    monkeypatch.setattr(report_module, "write_report", fails)
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: cannot write the report: {out / RUN / 'metrics.csv'} (Permission denied); "
        "give a writable folder with --output DIR"
    )


def _dropkit_as(user_id: int, args: list[str]) -> tuple[int, str]:
    """``dropkit ARGS`` in a forked child that runs as ``user_id`` (the test runs as root).

    The child cannot import anything new (this interpreter lives in root's home), so the
    caller runs the same command once before, as root, to import what it needs. Commands that
    compute with torch's thread pool (``mc``) may hang in a forked child: only ``report``.
    """
    import os
    import signal
    import sys

    from dropkit.cli import main

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            signal.alarm(120)  # a lock another thread held at the fork would hang it
            os.close(read)
            sys.stdout = sys.stderr = os.fdopen(write, "w")  # not pytest's capture
            os.setgroups([])
            os.setgid(user_id)
            os.setuid(user_id)
            sys.argv = ["dropkit", *args]
            main()
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def test_report_on_a_folder_it_cannot_write_as_an_unprivileged_user(trained) -> None:
    # The same as above without a mock: the kernel refuses the writes of user nobody.
    import os
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0 or not hasattr(os, "fork"):
        pytest.skip("needs root, to run the command as user nobody")
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user nobody")
    root = Path(tempfile.mkdtemp(prefix="dropkit-ro-"))  # pytest's tmp_path is root's only
    try:
        root.chmod(0o755)
        out, scratch = root / "runs", root / "scratch"
        shutil.copytree(trained, out)
        for folder in (out, *(p for p in out.rglob("*") if p.is_dir())):
            folder.chmod(0o555)  # readable by all, writable by none but root
        scratch.mkdir()
        scratch.chmod(0o777)
        for args in (["report", str(out)], ["report", str(out), "-o", str(scratch / "warm")]):
            warm = root / "warm-runs"
            shutil.copytree(trained, warm, dirs_exist_ok=True)
            runner.invoke(app, [args[0], str(warm), *args[2:]])  # imports, as root
        before = {p: p.read_bytes() for p in (out / RUN).glob("*.*")}
        code, output = _dropkit_as(nobody, ["report", str(out)])
        assert code == 2, output
        assert output.strip().splitlines() == [
            f"Error: cannot write into {out / RUN} (Permission denied); give a writable folder "
            "with --output DIR"
        ]
        code, output = _dropkit_as(nobody, ["report", str(out), "-o", str(scratch / "report")])
        assert code == 0, output
        assert (scratch / "report" / "report.html").stat().st_uid == nobody
        assert {p: p.read_bytes() for p in (out / RUN).glob("*.*")} == before
    finally:
        shutil.rmtree(root, ignore_errors=True)
