"""``dropkit compare`` and ``dropkit report`` end to end on tiny configurations."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.experiments import Store

# The module, not the function dropkit.experiments.compare that shares its name.
compare_module = importlib.import_module("dropkit.experiments.compare")

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "2", "--seeds", "2", "--rates", "0,0.5", "--hidden", "32"]
RUN = "hidden-32_epochs-2"  # TINY's configuration folder: the settings it changes


def _runs(directory: Path) -> list[tuple[float, int]]:
    """The finished runs of every configuration in ``directory``."""
    store = Store(directory)
    return sorted(run for c in store.configurations() for run in store.done(c.key))


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_compare_end_to_end(tmp_path, mode) -> None:
    result = runner.invoke(app, ["compare", *TINY, mode, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # the verdict wraps at the console's width
    for needle in ("rate", "test accuracy vs rate 0", "gap", "NLL", "ECE"):
        assert needle in words
    assert any(word in words for word in ("helped", "hurt", "No clear effect"))
    folder = tmp_path / (RUN if mode == "--batched" else f"one-at-a-time_{RUN}")
    for name in ("metrics.csv", "loss.png", "accuracy.png", "gap.png", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert _runs(tmp_path) == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    lines = (folder / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 4 * 2  # header, 4 runs x 2 epochs
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "torch" in html  # the versions are in the report


def _spy(monkeypatch, fail_at: int | None = None) -> list[tuple[float, tuple[int, ...]]]:
    """Record (rate, seeds) of every training call; raise KeyboardInterrupt at call ``fail_at``."""
    calls: list[tuple[float, tuple[int, ...]]] = []
    real = compare_module._train_runs

    def spy(config, data, rate, seeds, *rest):
        calls.append((rate, tuple(seeds)))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(config, data, rate, seeds, *rest)

    monkeypatch.setattr(compare_module, "_train_runs", spy)
    return calls


def test_rerun_resumes_and_fresh_starts_over(tmp_path, monkeypatch) -> None:
    assert runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)]).exit_code == 0
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)]).exit_code == 0
    assert calls == []  # everything was done
    more = ["compare", *TINY[:-4], "--rates", "0,0.5,0.2", "--hidden", "32", "-o", str(tmp_path)]
    assert runner.invoke(app, more).exit_code == 0
    assert calls == [(0.2, (0, 1))]  # only the new rate
    calls.clear()
    assert runner.invoke(app, ["compare", *TINY, "--fresh", "-o", str(tmp_path)]).exit_code == 0
    assert calls == [(0.0, (0, 1)), (0.5, (0, 1))]


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_interrupt_keeps_finished_runs_and_resume_completes(tmp_path, monkeypatch, mode) -> None:
    calls = _spy(monkeypatch, fail_at=2)
    result = runner.invoke(app, ["compare", *TINY, mode, "-o", str(tmp_path)])
    assert result.exit_code == 130
    assert "2 of 4 runs are saved" in result.output
    assert _runs(tmp_path) == [(0.0, 0), (0.0, 1)]
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *TINY, mode, "-o", str(tmp_path)]).exit_code == 0
    assert calls == [(0.5, (0, 1))]
    assert len(_runs(tmp_path)) == 4


def test_same_command_same_numbers(tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert runner.invoke(app, ["compare", *TINY, "-o", str(out)]).exit_code == 0
    read = lambda d: [  # noqa: E731
        line.rsplit(",", 1)[0] for line in (d / RUN / "metrics.csv").read_text().splitlines()
    ]
    assert read(first) == read(second)  # everything but the seconds column


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-d", "imagenet"], "--dataset"),
        (["--rates", "0,1.5"], "--rates"),
        (["--rates", "0,x"], "--rates"),
        (["--epochs", "0"], "--epochs"),
        (["--model", "transformer"], "--model"),
        (["--optimizer", "lamb"], "--optimizer"),
        (["--seeds", "0"], "--seeds"),
        (["--label-noise", "1.2"], "--label-noise"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, options, named) -> None:
    result = runner.invoke(app, ["compare", *options, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "out").exists()


def test_report_regenerates_from_the_database(tmp_path) -> None:
    assert runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)]).exit_code == 0
    for name in ("report.html", "loss.png", "gap.png", "metrics.csv"):
        (tmp_path / RUN / name).unlink()
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "test accuracy vs rate 0" in " ".join(result.output.split())
    for name in ("report.html", "loss.png", "gap.png", "metrics.csv"):
        assert (tmp_path / RUN / name).exists()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "run dropkit compare there first" in missing.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# .ci/run sets this: there, a missing browser is a failure, not a skip.
REQUIRE_BROWSER = os.environ.get("DROPKIT_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_BROWSER, reason="needs Debian's chromium (.ci/run installs it)"
)
def test_report_renders_in_a_headless_browser(tmp_path) -> None:
    assert CHROMIUM is not None, "chromium is not installed"
    if REQUIRE_BROWSER:
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    assert runner.invoke(app, ["compare", *TINY, "-o", str(tmp_path)]).exit_code == 0
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto((tmp_path / RUN / "report.html").as_uri())
            rows = page.locator("table#summary tbody tr")
            assert rows.count() == 2
            assert "0.5" in rows.nth(1).inner_text()
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == 3
            assert all(w > 100 for w in widths)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()


def test_variant_option(tmp_path) -> None:
    ok = runner.invoke(
        app,
        [
            "compare",
            "-d",
            "digits",
            "-m",
            "cnn",
            "--variant",
            "block",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--rates",
            "0,0.2",
            "-o",
            str(tmp_path),
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["compare", "--variant", "gaussian", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "--variant" in bad.output


# ---------------------------------------------------------------- one folder per configuration

EARLY = [*TINY, "--schedule", "early", "--schedule-epochs", "1"]
EARLY_RUN = f"{RUN}_schedule-early_schedule-epochs-1"


def _payload_keys(folder: Path) -> set[str]:
    import torch

    return {
        torch.load(p, weights_only=True)["experiment"]
        for p in (folder / "checkpoints").glob("*.pt")
    }


def test_each_configuration_keeps_its_own_report_and_checkpoints(tmp_path, monkeypatch) -> None:
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *TINY, *out]).exit_code == 0
    report_a = (tmp_path / RUN / "report.html").read_bytes()
    result = runner.invoke(app, ["compare", *EARLY, *out])
    assert result.exit_code == 0, result.output
    assert (tmp_path / RUN / "report.html").read_bytes() == report_a  # B did not overwrite A
    assert "schedule" in (tmp_path / EARLY_RUN / "report.html").read_text()
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *TINY, *out]).exit_code == 0  # A again: all done
    assert calls == []
    keys_a, keys_b = _payload_keys(tmp_path / RUN), _payload_keys(tmp_path / EARLY_RUN)
    assert len(keys_a) == len(keys_b) == 1  # each folder holds its own configuration's weights
    assert keys_a != keys_b
    assert len(list((tmp_path / RUN / "checkpoints").glob("*.pt"))) == 4

    # report: names the configuration it shows and the others; --config takes another.
    latest = runner.invoke(app, ["report", str(tmp_path)])
    assert latest.exit_code == 0, latest.output
    assert f"holds 2 configurations; using {RUN}" in latest.output  # A ran last
    assert EARLY_RUN in latest.output
    chosen = runner.invoke(app, ["report", str(tmp_path), "--config", EARLY_RUN])
    assert chosen.exit_code == 0, chosen.output
    assert f"using {EARLY_RUN}" in chosen.output
    assert str(tmp_path / EARLY_RUN / "report.html") in chosen.output.replace("\n", "")
    unknown = runner.invoke(app, ["report", str(tmp_path), "--config", "nope"])
    assert unknown.exit_code == 2
    assert RUN in unknown.output
    assert "Traceback" not in unknown.output


def test_label_noise_is_a_configuration_of_its_own(tmp_path) -> None:
    out = ["-o", str(tmp_path)]
    for extra in ([], ["--label-noise", "0.3"]):
        result = runner.invoke(app, ["compare", *TINY, "--seeds", "1", *extra, *out])
        assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == [RUN, f"label-noise-0.3_{RUN}"]


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_the_thread_count_trains_the_runs_and_is_a_configuration_of_its_own(
    tmp_path, monkeypatch, mode
) -> None:
    # Another count gives other bits (a single run's addmm does), so its runs are stored apart
    # from the default's and never mixed with them; each trains with the count it names.
    seen: list[int] = []
    for name in ("train", "train_batched"):
        real = getattr(compare_module, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(torch.get_num_threads())
            return _real(*args, **kwargs)

        monkeypatch.setattr(compare_module, name, spy)
    out = ["-o", str(tmp_path)]
    for extra in ([], ["--threads", "2"]):
        result = runner.invoke(app, ["compare", *TINY, "--seeds", "1", mode, *extra, *out])
        assert result.exit_code == 0, result.output
    assert seen == [1, 1, 2, 2]  # the two rates of each command
    counts = {c.folder: c.config["threads"] for c in Store(tmp_path).configurations()}
    batched = "" if mode == "--batched" else "one-at-a-time_"
    assert counts == {f"{batched}{RUN}": 1, f"{batched}threads-2_{RUN}": 2}


# ---------------------------------------------------------------- --fresh, durability, processes


def test_fresh_keeps_the_old_runs_until_the_new_set_is_complete(tmp_path, monkeypatch) -> None:
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *TINY, *out]).exit_code == 0
    old = sorted(p.name for p in (tmp_path / RUN / "checkpoints").glob("*.pt"))
    _spy(monkeypatch, fail_at=2)
    interrupted = runner.invoke(app, ["compare", *TINY, "--fresh", *out])
    assert interrupted.exit_code == 130
    assert "--fresh included" in interrupted.output
    # Nothing finished is lost: the old set is whole and still what report shows.
    assert _runs(tmp_path) == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    shown = runner.invoke(app, ["report", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *TINY, "--fresh", *out]).exit_code == 0
    assert calls == [(0.5, (0, 1))]  # the fresh set resumed, not started over
    new = sorted(p.name for p in (tmp_path / RUN / "checkpoints").glob("*.pt"))
    assert len(new) == 4
    assert not set(old) & set(new)  # the old checkpoints went once the new set was complete
    assert _runs(tmp_path) == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]


def test_a_run_whose_checkpoint_is_missing_is_trained_again(tmp_path, monkeypatch) -> None:
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *TINY, *out]).exit_code == 0
    lost = next((tmp_path / RUN / "checkpoints").glob("rate-0.5_seed-1_*.pt"))
    lost.unlink()  # as if killed between the database row and the checkpoint
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *TINY, *out]).exit_code == 0
    assert calls == [(0.5, (1,))]
    assert len(list((tmp_path / RUN / "checkpoints").glob("rate-0.5_seed-1_*.pt"))) == 1
    mc = runner.invoke(app, ["mc", str(tmp_path), "--samples", "2"])
    assert mc.exit_code == 0, mc.output


def test_two_processes_on_one_folder(tmp_path) -> None:
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "dropkit", "compare", *TINY[:-2], "--hidden", "8",
        "--epochs", "1", "--one-at-a-time", "-o", str(tmp_path),
    ]  # fmt: skip
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert len(_runs(tmp_path)) == 4
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(list((folder / "checkpoints").glob("*.pt"))) == 4
    assert not list((folder / "checkpoints").glob("*.part"))


# ---------------------------------------------------------------- your own model and data

EXAMPLE = Path(__file__).parents[2] / "examples" / "own_model.py"
OWN = [
    "--model", f"{EXAMPLE}:make_model", "--dataset", f"{EXAMPLE}:spirals",
    "--epochs", "2", "--seeds", "2", "--rates", "0,0.5",
]  # fmt: skip


def test_own_model_and_data_from_the_example(tmp_path, monkeypatch) -> None:
    out = ["-o", str(tmp_path)]
    result = runner.invoke(app, ["compare", *OWN, *out])
    assert result.exit_code == 0, result.output
    assert "test accuracy vs rate 0" in " ".join(result.output.split())
    folder = tmp_path / "epochs-2"
    for name in ("metrics.csv", "loss.png", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert "own_model.py:make_model" in (folder / "report.html").read_text()
    calls = _spy(monkeypatch)
    assert runner.invoke(app, ["compare", *OWN, *out]).exit_code == 0
    assert calls == []  # stored and resumed like the built-in ones
    report = runner.invoke(app, ["report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    mc = runner.invoke(app, ["mc", str(tmp_path), "--samples", "3"])
    assert mc.exit_code == 0, mc.output
    assert "MC (3" in mc.output


def test_the_example_runs_from_the_repository_root(tmp_path) -> None:
    # The README's command, with a relative path, as a user types it.
    import subprocess
    import sys

    root = EXAMPLE.parents[1]
    spec = "examples/own_model.py"
    command = [
        sys.executable, "-m", "dropkit", "compare", "--model", f"{spec}:make_model",
        "--dataset", f"{spec}:spirals", "--epochs", "1", "--seeds", "1", "--rates", "0,0.5",
        "-o", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "epochs-1" / "report.html").exists()


_NET = """
import torch
def net(p):
    layers = [torch.nn.Linear(2, {width}), torch.nn.Dropout(p), torch.nn.Linear({width}, 2)]
    return torch.nn.Sequential(*layers)
"""


def test_two_own_models_of_one_name_never_share_a_folder(tmp_path, monkeypatch) -> None:
    for name, width in (("a", 4), ("b", 8)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "net.py").write_text(_NET.format(width=width))
    data = f"{EXAMPLE}:spirals"
    out = ["-o", str(tmp_path / "runs"), "--epochs", "1", "--seeds", "1", "--rates", "0,0.5"]
    for name in ("a", "b"):
        model = f"{tmp_path / name / 'net.py'}:net"
        result = runner.invoke(app, ["compare", "--model", model, "--dataset", data, *out])
        assert result.exit_code == 0, result.output
    assert len(_runs(tmp_path / "runs")) == 4  # b's runs were trained, not taken from a
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(folders) == 2
    # A package module works the same way.
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    result = runner.invoke(app, ["compare", "--model", "net:net", "--dataset", data, *out])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("source", "option", "needle"),
    [
        (None, "--model", "no such file"),
        ("x = 1\n", "--model", "is a int, not a callable"),
        ("import sys\nsys.exit(0)\n", "--model", "SystemExit"),
        ("def net(p):\n    return 3\n", "--model", "not an nn.Module"),
        ("def net():\n    return 3\n", "--dataset", "expected (train, test)"),
    ],
)
def test_own_code_errors_are_one_line(tmp_path, source, option, needle) -> None:
    path = tmp_path / "mine.py"
    if source is not None:
        path.write_text(source)
    name = "x" if source == "x = 1\n" else "net"
    spec = f"{path}:{name}"
    model, data = (spec, f"{EXAMPLE}:spirals") if option == "--model" else ("mlp", spec)
    command = ["compare", "--model", model, "--dataset", data, "--epochs", "1", "--seeds", "1"]
    result = runner.invoke(app, [*command, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # refused before any work


def test_own_model_with_a_layer_scale_it_cannot_take_is_refused_before_any_work(tmp_path) -> None:
    own = ["--model", f"{EXAMPLE}:make_model", "--dataset", f"{EXAMPLE}:spirals"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", *own, "--layer-scale", "1,1,1", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "--layer-scale: has 3 entries but" in result.output
    assert not out.exists()


def _stored_numbers(directory: Path) -> dict[str, object]:
    """Every number a comparison stored: the database's results, metrics.csv and the weights.

    Left out, as they are not results: wall-clock times (``seconds``), the time a run finished
    and the checkpoints' random file names (the weights are compared, by (rate, seed)).
    """

    def untimed(value: object) -> object:
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [untimed(v) for v in value]
        return value

    with sqlite3.connect(directory / "results.sqlite") as db:
        rows = db.execute("SELECT experiment, rate, seed, result, checkpoint FROM runs").fetchall()
    numbers: dict[str, object] = {}
    for experiment, rate, seed, result, checkpoint in sorted(rows):
        numbers[f"{experiment}/{rate}/{seed}"] = untimed(json.loads(result))
        state = torch.load(directory / checkpoint, weights_only=True)["state_dict"]
        numbers[f"{experiment}/{rate}/{seed}/weights"] = {
            name: tensor.numpy().tobytes() for name, tensor in state.items()
        }
    for csv_path in sorted(directory.glob("*/metrics.csv")):
        lines = csv_path.read_text().splitlines()
        assert lines[0].endswith(",seconds")
        numbers[csv_path.parent.name] = [line.rsplit(",", 1)[0] for line in lines]
    return numbers


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test (as a busy machine or a user's setting would); the
    count is put back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_the_same_command_stores_the_same_numbers_beside_a_cpu_hog(
    tmp_path, mode, torch_threads
) -> None:
    # Issue 22: two identical runs, one on a busy machine, must store identical numbers. What
    # load changes is the number of threads that really run (OpenMP with OMP_DYNAMIC=true gives
    # a parallel region fewer on a busy machine), and a reduction or a matrix product split
    # among threads sums in another order: mnist1d's standardization and a single run's weight
    # gradient did. So the first run sees 2 threads and the second 1, beside CPU hogs. Rate 0
    # and a dropout rate, 3 seeds (the stacked path), 2 epochs: small, as the test must be fast.
    options = ["compare", "-d", "mnist1d", "--epochs", "2", "--seeds", "3", "--rates", "0,0.5"]
    options += ["--hidden", "32", mode]
    alone, loaded = tmp_path / "alone", tmp_path / "loaded"
    torch_threads(2)
    assert runner.invoke(app, [*options, "-o", str(alone)]).exit_code == 0
    assert torch.get_num_threads() == 2  # the command's own count is not left behind
    torch_threads(1)
    hog = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(hog) for _ in range(os.cpu_count() or 2)]
    try:
        result = runner.invoke(app, [*options, "-o", str(loaded)])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert result.exit_code == 0, result.output
    first, second = _stored_numbers(alone), _stored_numbers(loaded)
    assert len(first) == 2 * 6 + 1  # 6 runs: result and weights each, and one metrics.csv
    assert first == second
