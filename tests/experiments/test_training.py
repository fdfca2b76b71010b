"""Models, training runs and the results store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import torch

from dropkit import nn as dk_nn
from dropkit.experiments import ConfigError, Store, TrainConfig, load_dataset, train
from dropkit.experiments.models import build_model, dropout_sites, set_rate


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("shape", [(40,), (1, 40), (1, 8, 8), (3, 16, 16)])
def test_mlp_and_conv_models_build_and_run(shape) -> None:
    names = ["mlp"] if len(shape) == 1 else ["mlp", "cnn", "rescnn"]
    for name in names:
        model = build_model(name, shape, 10, hidden=(32,), rate=0.3)
        assert model(torch.randn(4, *shape)).shape == (4, 10)
        assert dropout_sites(model), name


def test_cnn_uses_channel_dropout_of_the_right_rank() -> None:
    one_d = build_model("cnn", (1, 40), 10, rate=0.2)
    two_d = build_model("cnn", (1, 8, 8), 10, rate=0.2)
    assert any(isinstance(m, dk_nn.Dropout1d) for m in one_d.modules())
    assert any(isinstance(m, dk_nn.Dropout2d) for m in two_d.modules())
    with pytest.raises(ValueError, match="use --model mlp"):
        build_model("cnn", (40,), 10)


def test_rescnn_drop_path_rates_are_linear_up_to_the_rate() -> None:
    model = build_model("rescnn", (1, 8, 8), 10, rate=0.3)
    rates = [m.p for m in model.modules() if isinstance(m, dk_nn.DropPath)]
    assert rates == pytest.approx([0.0, 0.15, 0.3])


def test_layer_scale() -> None:
    model = build_model("mlp", (40,), 10, rate=0.4, layer_scale=[0.5, 1.0])
    assert [m.p for m in dropout_sites(model)] == pytest.approx([0.2, 0.4])
    with pytest.raises(ValueError, match="layer_scale has 3 entries but the model has 2"):
        set_rate(model, 0.4, [1, 1, 1])


# ---------------------------------------------------------------- training


def test_training_is_deterministic_given_the_seed(data) -> None:
    config = TrainConfig(epochs=3, hidden=(32, 16))
    a = train(config, data, 0.3, seed=5)
    b = train(config, data, 0.3, seed=5)
    c = train(config, data, 0.3, seed=6)
    strip = lambda r: [(e.train_loss, e.val_acc) for e in r.history]  # noqa: E731
    assert strip(a) == strip(b)
    assert a.test_acc == b.test_acc
    assert strip(a) != strip(c)


def test_training_learns_and_reports_metrics(data) -> None:
    result = train(TrainConfig(epochs=15, hidden=(64,)), data, 0.0, seed=0)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.test_acc > 0.4  # 4 classes: chance is 0.25
    assert 0.0 <= result.test_ece <= 1.0
    assert result.test_nll > 0
    assert result.gap == pytest.approx(result.train_acc - result.test_acc)


@pytest.mark.parametrize(
    ("schedule", "expected"), [("early", [0.5, 0.5, 0.0, 0.0]), ("late", [0.0, 0.0, 0.5, 0.5])]
)
def test_dropout_schedules(data, schedule, expected) -> None:
    config = TrainConfig(epochs=4, hidden=(16,), schedule=schedule, schedule_epochs=2)
    result = train(config, data, 0.5, seed=0)
    assert [e.rate for e in result.history] == expected


def test_early_stopping_stops_on_validation_loss(data) -> None:
    config = TrainConfig(epochs=200, hidden=(256, 256), lr=1e-2, early_stopping=3)
    result = train(config, data, 0.0, seed=0)
    assert result.epochs_run < 200
    losses = [e.val_loss for e in result.history]
    best = losses.index(min(losses))
    assert result.epochs_run == best + 1 + 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lamb"}, "optimizer"),
        ({"schedule": "cosine"}, "schedule"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"hidden": (0,)}, "hidden"),
    ],
)
def test_bad_config_names_the_field(change, field) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**change).check()
    assert info.value.field == field


# ---------------------------------------------------------------- store


def _result(rate: float, seed: int):
    from dropkit.experiments.train import EpochMetrics, RunResult

    history = [EpochMetrics(1, rate, 1.0, 0.5, 1.1, 0.4, 0.01)]
    return RunResult(rate, seed, 0.9, 0.8, 0.5, 0.05, 0.81, 1, 0.1, history)


def test_store_roundtrip_resume_and_forget(tmp_path) -> None:
    store = Store(tmp_path)
    store.register("k", {"dataset": "synthetic"})
    store.save("k", _result(0.0, 0))
    store.save("k", _result(0.5, 1))
    store.save("k", _result(0.5, 1))  # a second writer of the same run changes nothing
    assert store.done("k") == {(0.0, 0), (0.5, 1)}
    loaded = store.results("k")
    assert [(r.rate, r.seed) for r in loaded] == [(0.0, 0), (0.5, 1)]
    assert loaded[0].history[0].val_acc == 0.4
    assert store.config("k") == {"dataset": "synthetic"}
    store.forget("k")
    assert store.done("k") == set()


_WRITER = """
import sys
from pathlib import Path
from dropkit.experiments.store import Store
from dropkit.experiments.train import EpochMetrics, RunResult

store = Store(Path(sys.argv[1]))
offset = float(sys.argv[2])
for i in range(40):
    rate = i / 100 + offset
    history = [EpochMetrics(1, rate, 1.0, 0.5, 1.1, 0.4, 0.01)]
    store.save("k", RunResult(rate, 0, 0.9, 0.8, 0.5, 0.05, 0.81, 1, 0.1, history))
"""


def test_two_processes_writing_one_database(tmp_path) -> None:
    Store(tmp_path).register("k", {})
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(j / 1000)])
        for j in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    assert len(Store(tmp_path).done("k")) == 80
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(
    ("variant", "layer"),
    [("channel", dk_nn.Dropout2d), ("element", dk_nn.Dropout), ("block", dk_nn.DropBlock2d)],
)
def test_cnn_conv_dropout_variants(variant, layer) -> None:
    model = build_model("cnn", (1, 8, 8), 10, rate=0.2, variant=variant)
    conv_sites = dropout_sites(model)[:2]
    assert all(type(site) is layer for site in conv_sites)
    assert all(site.p == pytest.approx(0.2) for site in conv_sites)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_block_variant_needs_images() -> None:
    with pytest.raises(ValueError, match="needs 2-D inputs"):
        build_model("cnn", (1, 40), 10, variant="block")
    with pytest.raises(ConfigError) as info:
        TrainConfig(variant="gaussian").check()
    assert info.value.field == "variant"
