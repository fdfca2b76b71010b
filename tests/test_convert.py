"""dropkit.convert swaps torch's dropout layers and nothing else."""

from __future__ import annotations

import logging

import pytest
import torch

import dropkit
from dropkit import nn


class CustomDropout(torch.nn.Dropout):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * 2


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.Dropout2d(0.1),
        torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(4 * 6 * 6, 8), torch.nn.Dropout(0.3, inplace=True)),
        torch.nn.AlphaDropout(0.2),
        torch.nn.FeatureAlphaDropout(0.15),
        torch.nn.Dropout1d(0.05),
        torch.nn.Dropout3d(0.25),
        CustomDropout(0.4),
    )


def test_convert_swaps_every_torch_dropout_and_keeps_settings(caplog) -> None:
    model = _model()
    model[3].eval()
    with caplog.at_level(logging.INFO, logger="dropkit"):
        converted = dropkit.convert(model)
    assert "swapped 6 dropout layers" in caplog.text
    expected = [
        (1, nn.Dropout2d, 0.1),
        (4, nn.AlphaDropout, 0.2),
        (5, nn.FeatureAlphaDropout, 0.15),
        (6, nn.Dropout1d, 0.05),
        (7, nn.Dropout3d, 0.25),
    ]
    for index, cls, p in expected:
        assert type(converted[index]) is cls
        assert converted[index].p == p
    inner = converted[3][1]
    assert type(inner) is nn.Dropout
    assert inner.p == 0.3
    assert inner.inplace
    assert not inner.training
    assert converted[1].training
    # A subclass with its own forward is left alone.
    assert type(converted[8]) is CustomDropout
    # The original is untouched (deep copy by default) and parameters are equal.
    assert type(model[1]) is torch.nn.Dropout2d
    assert converted[0].weight is not model[0].weight
    torch.testing.assert_close(converted[0].weight, model[0].weight)


def test_convert_inplace_and_eval_equivalence() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Dropout(0.5), torch.nn.Linear(5, 2))
    model.eval()
    x = torch.randn(3, 5)
    before = model(x)
    same = dropkit.convert(model, inplace=True)
    assert same is model
    assert type(model[1]) is nn.Dropout
    assert torch.equal(model(x), before)


def test_convert_a_bare_dropout_and_nothing_to_swap() -> None:
    assert type(dropkit.convert(torch.nn.Dropout(0.1))) is nn.Dropout
    with pytest.warns(UserWarning, match="convert: found no torch dropout layer"):
        dropkit.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"convert: expected an nn\.Module"):
        dropkit.convert("model")  # type: ignore[type-var]


def test_bench_convert_measures_both_models() -> None:
    from dropkit._bench import bench_convert

    rows = bench_convert(rounds=1, scale=1 / 32)
    assert len(rows) == 3
    assert all(r.torch_ms > 0 and r.converted_ms > 0 for r in rows)


def test_convert_models_all_hold_torch_dropout_that_convert_swaps() -> None:
    from dropkit._bench import convert_models

    for make, x in convert_models(scale=1 / 32).values():
        model = make()
        count = sum(type(m) is torch.nn.Dropout for m in model.modules())
        assert count >= 2
        converted = dropkit.convert(model)
        assert not any(type(m) is torch.nn.Dropout for m in converted.modules())
        assert converted(x).shape == model(x).shape
