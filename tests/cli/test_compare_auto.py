"""``dropkit compare --rates ...,auto``: a learned-rate run per seed beside the grid, end to end."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dropkit.cli import app
from dropkit.cli._summary import PlainProgress
from dropkit.experiments import Store
from dropkit.experiments.store import AUTO

compare_module = importlib.import_module("dropkit.experiments.compare")

runner = CliRunner()
TINY = ["-d", "synthetic", "--epochs", "2", "--seeds", "2", "--hidden", "32"]
RUN = "hidden-32_epochs-2"  # TINY's configuration folder


def _key(directory: Path) -> str:
    (configuration,) = Store(directory).configurations()  # the learned runs are not one
    return configuration.key


def _learned(directory: Path) -> list:
    """The learned runs by seed (the store orders by rate, and each run learned its own)."""
    return sorted(Store(directory).results(_key(directory) + AUTO), key=lambda r: r.seed)


def _spy(monkeypatch) -> list[tuple[str, int]]:
    """Record every training call: ("grid", seed count) or ("auto", seed)."""
    calls: list[tuple[str, int]] = []
    real_runs, real_train = compare_module._train_runs, compare_module.train

    def runs(config, data, rate, seeds, *rest):
        calls.append(("grid", len(seeds)))
        return real_runs(config, data, rate, seeds, *rest)

    def train(config, data, rate, seed, **kwargs):
        if kwargs.get("learned"):
            calls.append(("auto", seed))
        return real_train(config, data, rate, seed, **kwargs)

    monkeypatch.setattr(compare_module, "_train_runs", runs)
    monkeypatch.setattr(compare_module, "train", train)
    return calls


def test_auto_end_to_end_then_report_and_mc(tmp_path) -> None:
    result = runner.invoke(app, ["compare", *TINY, "--rates", "0,0.5,auto", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "auto (0.1" in words  # the row, with the final learned rate
    assert "Learned rates (auto) vs rate 0, 95% paired t-intervals over 2 seeds" in words
    assert "vs rate 0.5 (chosen on validation)" in words
    for name in ("test accuracy", "test NLL", "test ECE"):
        assert name in words
    # The grid is stored as without auto, the learned runs apart under the key's +auto.
    store = Store(tmp_path)
    key = _key(tmp_path)
    assert sorted(store.done(key)) == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    learned = _learned(tmp_path)
    assert [r.seed for r in learned] == [0, 1]
    for run in learned:
        assert run.learned
        assert len(run.layer_rates) == 1
        assert [len(e.layer_rates) for e in run.history] == [1, 1]
        assert run.history[-1].layer_rates == run.layer_rates  # no early stopping: the last
        assert 0.0 < run.layer_rates[0] < 1.0
        assert run.layer_rates[0] != pytest.approx(0.1)
    folder = tmp_path / RUN
    with (folder / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 2  # 4 grid runs and 2 learned ones, 2 epochs each
    auto = [r for r in rows if r["rate"] == "auto"]
    assert len(auto) == 4
    assert [float(r["layer_1_p"]) for r in auto] == [
        e.layer_rates[0] for run in learned for e in run.history
    ]
    assert all(r["layer_1_p"] == "" for r in rows if r["rate"] != "auto")
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert 'id="learned"' in html
    assert "chosen on validation" in html
    assert "Every layer starts at p = 0.1" in html  # the figure's caption
    assert (folder / "learned_rates.png").stat().st_size > 0

    (folder / "learned_rates.png").unlink()
    (folder / "report.html").unlink()
    report = runner.invoke(app, ["report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    assert "auto (0.1" in report.output
    assert "Learned rates (auto) vs rate 0" in " ".join(report.output.split())
    assert (folder / "learned_rates.png").is_file()
    assert (folder / "report.html").is_file()

    mc = runner.invoke(app, ["mc", str(tmp_path), "--samples", "2"])
    assert mc.exit_code == 0, mc.output
    assert "deterministic" in mc.output
    assert "Not scored here: the 2 learned-rate (auto) runs" in " ".join(mc.output.split())


def test_auto_reuses_the_grid_resumes_and_fresh_replaces_it(tmp_path, monkeypatch) -> None:
    out = ["-o", str(tmp_path)]
    assert runner.invoke(app, ["compare", *TINY, "--rates", "0", *out]).exit_code == 0
    calls = _spy(monkeypatch)
    # Interrupted after the first epoch of the second learned run (seed 1).
    real_epoch = PlainProgress.epoch

    def interrupt(self, metrics):
        real_epoch(self, metrics)
        if self._where == "rate auto, seed 1":
            raise KeyboardInterrupt

    monkeypatch.setattr(PlainProgress, "epoch", interrupt)
    stopped = runner.invoke(app, ["compare", *TINY, "--rates", "0,auto", *out])
    assert stopped.exit_code == 130, stopped.output
    assert calls == [("auto", 0), ("auto", 1)]  # the grid (rate 0) was done already
    assert [r.seed for r in _learned(tmp_path)] == [0]
    assert list((tmp_path / RUN / "progress").glob("rate-auto_seeds-1.pt"))  # its state
    monkeypatch.setattr(PlainProgress, "epoch", real_epoch)
    calls.clear()
    assert runner.invoke(app, ["compare", *TINY, "--rates", "0,auto", *out]).exit_code == 0
    assert calls == [("auto", 1)]
    resumed = {r.seed: r for r in _learned(tmp_path)}
    assert not (tmp_path / RUN / "progress").exists()

    # The resumed run has the numbers of a run never interrupted (another folder).
    other = tmp_path / "other"
    result = runner.invoke(app, ["compare", *TINY, "--rates", "0,auto", "-o", str(other)])
    assert result.exit_code == 0, result.output
    for run in _learned(other):
        again = resumed[run.seed]
        assert (again.test_acc, again.test_nll, again.layer_rates) == (
            run.test_acc,
            run.test_nll,
            run.layer_rates,
        )
        assert [e.layer_rates for e in again.history] == [e.layer_rates for e in run.history]

    calls.clear()
    assert runner.invoke(app, ["compare", *TINY, "--rates", "0,auto", *out]).exit_code == 0
    assert calls == []  # all done
    fresh = runner.invoke(app, ["compare", *TINY, "--rates", "0,auto", "--fresh", *out])
    assert fresh.exit_code == 0, fresh.output
    assert calls == [("grid", 2), ("auto", 0), ("auto", 1)]
    assert [r.seed for r in _learned(tmp_path)] == [0, 1]  # replaced, not added to
    checkpoints = list((tmp_path / RUN / "checkpoints").glob("rate-auto_*.pt"))
    assert len(checkpoints) == 2


def test_auto_alone_is_the_default_grid_and_the_learned_run(tmp_path) -> None:
    options = ["-d", "synthetic", "--epochs", "1", "--seeds", "1", "--hidden", "16"]
    result = runner.invoke(app, ["compare", *options, "--rates", "auto", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    key = _key(tmp_path)
    assert sorted(Store(tmp_path).done(key)) == [(0.0, 0), (0.2, 0), (0.5, 0)]
    assert [r.seed for r in Store(tmp_path).results(key + AUTO)] == [0]
    assert "no paired comparison: fewer than 2 seeds" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--rates", "0,auto,auto"], "give auto once"),
        (["--rates", "0,auto", "--model", "rescnn"], "DropPath has no learned"),
        (["--rates", "0,auto", "--model", "cnn", "--variant", "block"], "DropBlock"),
        (["--rates", "0,auto", "--schedule", "early", "--schedule-epochs", "1"], "schedule"),
        (["--rates", "0,auto", "--layer-scale", "1,1"], "--layer-scale"),
    ],
)
def test_auto_with_what_it_cannot_honour_is_refused_before_any_work(
    tmp_path, options, needle
) -> None:
    result = runner.invoke(app, ["compare", "-d", "synthetic", *options, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert "--rates" in result.output
    assert needle in result.output
    assert not (tmp_path / "o").exists()


OWN = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(40, 16), nn.Dropout(p), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def sequential(p):
    return nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 4))
"""


def test_own_model_learns_its_rates_or_is_refused_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "own.py").write_text(OWN)
    options = ["-d", "synthetic", "--epochs", "1", "--seeds", "2", "--rates", "0,auto"]
    refused = runner.invoke(app, ["compare", *options, "-m", "own.py:Net", "-o", "a"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1  # one line, no traceback
    assert "cannot tell which layer 'drop'" in refused.output
    assert "inside an nn.Sequential" in refused.output
    assert not (tmp_path / "a").exists()
    ok = runner.invoke(app, ["compare", *options, "-m", "own.py:sequential", "-o", "b"])
    assert ok.exit_code == 0, ok.output
    learned = _learned(tmp_path / "b")
    assert [len(r.layer_rates) for r in learned] == [1, 1]
