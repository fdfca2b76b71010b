"""The run-time guard: DK001 and DK015, each against a planted mistake and a correct model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dropkit import nn as dk_nn
from dropkit.doctor import DropoutWarning, guard
from dropkit.mc import mc_mode


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), dk_nn.Dropout(0.5))


def _codes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message)[:5] for w in caught if issubclass(w.category, DropoutWarning)]


def _run(model: nn.Module, *, grad: bool = False, times: int = 2) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.set_grad_enabled(grad):
            for _ in range(times):
                model(torch.randn(4, 4))
    return _codes(caught)


def test_dk001_and_dk015_on_a_forgotten_eval_once_per_model() -> None:
    model = _model().train()
    with guard(model):
        assert _run(model) == ["DK001", "DK015"]  # twice run, warned once each
        assert _run(model) == []


def test_dk001_alone_when_only_dropout_is_on() -> None:
    model = _model().eval()
    model[3].train()
    with guard(model):
        assert _run(model) == ["DK001"]


def test_correct_inference_and_training_are_silent() -> None:
    model = _model()
    with guard(model):
        assert _run(model.eval()) == []
        assert _run(model.train(), grad=True) == []  # training: gradients on
        with mc_mode(model):
            assert _run(model) == []  # Monte Carlo dropout done right


def test_remove_and_errors() -> None:
    model = _model().train()
    handle = guard(model)
    handle.remove()
    assert _run(model) == []
    with guard(model), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", DropoutWarning)
        with pytest.raises(DropoutWarning, match=r"DK001: Sequential ran under torch\.no_grad"):
            model(torch.randn(4, 4))


def test_the_runner_trains_under_the_guard(monkeypatch) -> None:
    import importlib

    from dropkit.experiments import TrainConfig, load_dataset, train

    # The package re-exports the function train, which hides the module of the same name.
    train_module = importlib.import_module("dropkit.experiments.train")

    installed = []
    real_guard = train_module.guard

    def spy(model):
        installed.append(model)
        return real_guard(model)

    monkeypatch.setattr(train_module, "guard", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DropoutWarning)  # a correct runner never warns
        train(TrainConfig(epochs=1, hidden=(8,)), load_dataset("synthetic"), 0.5, seed=0)
    assert len(installed) == 1
