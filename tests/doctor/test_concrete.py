"""The doctor and Concrete dropout: a learned rate is read like a fixed one, nothing else warns."""

from __future__ import annotations

import torch

import dropkit
from dropkit import nn as dk_nn
from dropkit.doctor import check


def _mlp() -> torch.nn.Module:
    return dropkit.concrete(
        torch.nn.Sequential(
            torch.nn.Linear(4, 32),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(32, 32),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(32, 3),
        )
    )


def _cnn(drop: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        drop,
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )


def test_correct_models_have_no_findings() -> None:
    assert check(_mlp(), torch.randn(4, 4)).findings == []
    cnn = _cnn(dk_nn.ConcreteDropout2d(0.2, weight_regularizer=0))
    assert check(cnn, torch.randn(2, 3, 9, 9)).findings == []


def test_a_learned_rate_above_one_half_is_reported_like_a_fixed_one() -> None:
    model = _mlp()
    with torch.no_grad():
        model[2].p_logit.fill_(2.0)  # p = sigmoid(2) = 0.881
    report = check(model, torch.randn(4, 4))
    assert [(f.code, f.where) for f in report.findings] == [("DK004", "2")]
    assert "ConcreteDropout drops 0.88" in report.findings[0].message
    fixed = check(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.881)))
    assert fixed.codes() == ["DK004"]


def test_planted_mistakes_are_found_for_concrete_layers_too() -> None:
    element_on_maps = _cnn(dk_nn.ConcreteDropout(0.2, weight_regularizer=0))
    assert check(element_on_maps, torch.randn(2, 3, 9, 9)).codes() == ["DK003"]
    on_output = torch.nn.Sequential(
        torch.nn.Linear(4, 3), dk_nn.ConcreteDropout(0.2, weight_regularizer=0)
    )
    assert "DK002" in check(on_output, torch.randn(2, 4)).codes()
