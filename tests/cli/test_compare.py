"""``dropkit compare`` and ``dropkit report`` end to end on tiny configurations."""

from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dropkit.cli import app

# The module, not the function dropkit.experiments.compare that shares its name.
compare_module = importlib.import_module("dropkit.experiments.compare")

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "2", "--seeds", "2", "--rates", "0,0.5", "--hidden", "32"]
RUN = "hidden-32_epochs-2"  # TINY's configuration folder: the settings it changes


def _runs(directory: Path) -> list[tuple[float, int]]:
    with sqlite3.connect(directory / "results.sqlite") as db:
        return db.execute("SELECT rate, seed FROM runs ORDER BY rate, seed").fetchall()


@pytest.mark.parametrize("mode", ["--batched", "--one-at-a-time"])
def test_compare_end_to_end(tmp_path, mode) -> None:
    result = runner.invoke(app, ["compare", *TINY, mode, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for needle in ("rate", "test acc", "gap", "NLL", "ECE"):
        assert needle in result.output
    assert any(word in result.output for word in ("helped", "hurt", "No effect"))
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
    assert "test acc" in result.output
    for name in ("report.html", "loss.png", "gap.png", "metrics.csv"):
        assert (tmp_path / RUN / name).exists()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "run dropkit compare first" in missing.output


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
