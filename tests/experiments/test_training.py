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
    assert set(store.done("k")) == {(0.0, 0), (0.5, 1)}
    loaded = store.results("k")
    assert [(r.rate, r.seed) for r in loaded] == [(0.0, 0), (0.5, 1)]
    assert loaded[0].history[0].val_acc == 0.4
    assert store.config("k") == {"dataset": "synthetic"}
    store.forget("k")
    assert store.done("k") == {}


def test_store_promotes_a_fresh_set_once(tmp_path) -> None:
    store = Store(tmp_path)
    store.register("k", {})
    store.register("k+new", {}, "k-new")
    for seed in (0, 1):
        assert store.save("k", _result(0.5, seed), f"old-{seed}.pt")
        assert store.save("k+new", _result(0.5, seed), f"new-{seed}.pt")
    assert store.done("k") == {(0.5, 0): "old-0.pt", (0.5, 1): "old-1.pt"}  # kept until promoted
    assert sorted(store.promote("k+new", "k")) == ["old-0.pt", "old-1.pt"]
    assert store.done("k") == {(0.5, 0): "new-0.pt", (0.5, 1): "new-1.pt"}
    # A second process of the same fresh set, finishing later, keeps the promoted set.
    assert store.save("k+new", _result(0.5, 1), "late-1.pt")
    assert store.promote("k+new", "k") == ["late-1.pt"]
    assert store.done("k") == {(0.5, 0): "new-0.pt", (0.5, 1): "new-1.pt"}


def test_store_refuses_a_file_that_is_not_a_database(tmp_path) -> None:
    from dropkit.experiments import StoreError

    (tmp_path / "results.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable dropkit results database"):
        Store(tmp_path).configurations()


# ---------------------------------------------------------------- resuming inside a run


class _Stop(Exception):
    """Stands for Ctrl-C in the middle of a run."""


def _stop_after(epochs: int):
    def on_epoch(metrics) -> None:
        if metrics.epoch == epochs:
            raise _Stop

    return on_epoch


def _curve(result):
    return [
        (e.epoch, e.rate, e.train_loss, e.train_acc, e.val_loss, e.val_acc) for e in result.history
    ]


def _own_model(p):
    return torch.nn.Sequential(
        torch.nn.Linear(40, 32), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(32, 4)
    )


@pytest.mark.parametrize(
    ("config", "model_fn"),
    [
        (TrainConfig(epochs=4, hidden=(32,)), None),
        (TrainConfig(epochs=8, hidden=(64,), lr=1e-2, early_stopping=2), None),
        (TrainConfig(model="mine:net", epochs=4, schedule="late", schedule_epochs=2), _own_model),
    ],
    ids=["mlp", "early-stopping", "own-model"],
)
def test_an_interrupted_run_resumes_with_the_same_numbers(data, tmp_path, config, model_fn) -> None:
    whole = train(config, data, 0.3, seed=2, model_fn=model_fn)
    state = tmp_path / "state.pt"
    with pytest.raises(_Stop):
        train(
            config, data, 0.3, seed=2, model_fn=model_fn, state_path=state, on_epoch=_stop_after(2)
        )
    assert state.is_file()
    seen: list[int] = []
    resumed = train(
        config, data, 0.3, seed=2, model_fn=model_fn, state_path=state,
        on_epoch=lambda m: seen.append(m.epoch),
    )  # fmt: skip
    assert seen[0] == 3  # epochs 1 and 2 were not trained again
    assert _curve(resumed) == _curve(whole)
    assert (resumed.test_acc, resumed.test_nll, resumed.epochs_run) == (
        whole.test_acc,
        whole.test_nll,
        whole.epochs_run,
    )


def test_a_state_of_another_run_is_not_resumed(data, tmp_path) -> None:
    config = TrainConfig(epochs=3, hidden=(16,))
    state = tmp_path / "state.pt"
    with pytest.raises(_Stop):
        train(config, data, 0.3, seed=0, state_path=state, on_epoch=_stop_after(2))
    seen: list[int] = []
    other = train(
        config, data, 0.3, seed=1, state_path=state, on_epoch=lambda m: seen.append(m.epoch)
    )
    assert seen == [1, 2, 3]
    assert _curve(other) == _curve(train(config, data, 0.3, seed=1))


def test_own_model_schedule_and_layer_scale_reach_its_dropout(data) -> None:
    built = []

    def net(p):
        built.append(_own_model(p))
        return built[-1]

    config = TrainConfig(model="mine:net", epochs=3, schedule="early", schedule_epochs=1)
    rates: list[float] = []
    train(config, data, 0.4, seed=0, model_fn=net, on_epoch=lambda m: rates.append(built[-1][2].p))
    assert rates == [0.4, 0.0, 0.0]
    scaled = TrainConfig(model="mine:net", epochs=1, layer_scale=(0.5,))
    train(scaled, data, 0.4, seed=0, model_fn=net)
    assert built[-1][2].p == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="one multiplier per layer"):
        train(
            TrainConfig(model="mine:net", epochs=1, layer_scale=(1, 1)), data, 0.4, 0, model_fn=net
        )


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
