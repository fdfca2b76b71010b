"""mc_mode: eval mode with every dropout on, and everything restored afterwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F
from torch import nn

import dropkit.functional as F
from dropkit import nn as dk_nn
from dropkit.mc import disable_mc, dropout_modules, enable_mc, mc_active, mc_mode


class FunctionalDropout(nn.Module):
    """Dropout written as a function call, the way many model files do it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch_F.dropout(self.bn(self.fc(x)), 0.5, self.training)
        h = torch_F.dropout(h, 0.5, False)  # a constant False: off in eval, on under MC
        return F.dropout(h, 0.5, training=self.training)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), dk_nn.Dropout(0.3)
    )


@pytest.mark.parametrize("train_before", [True, False])
def test_batchnorm_stays_in_eval_and_flags_are_restored(train_before) -> None:
    model = _model().train(train_before)
    flags = {name: m.training for name, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model[1].state_dict().items()}
    x = torch.randn(32, 8)
    with mc_mode(model):
        assert not model.training
        assert not model[1].training
        assert model[3].training
        assert model[4].training
        assert not torch.equal(model(x), model(x))  # dropout is on
    for key, value in model[1].state_dict().items():
        assert torch.equal(value, stats[key]), key  # running statistics untouched
    assert {name: m.training for name, m in model.named_modules()} == flags


def test_functional_dropout_is_on_inside_and_off_outside() -> None:
    model = FunctionalDropout().eval()
    x = torch.randn(16, 8)
    assert torch.equal(model(x), model(x))  # eval: deterministic
    with mc_mode(model, require_dropout=False):
        assert mc_active()
        first, second = model(x), model(x)
        assert not torch.equal(first, second)
        # Every stage is on: about 1/8 of the elements survive three p=0.5 dropouts.
        kept = (first != 0).float().mean().item()
        assert 0.05 < kept < 0.25
    assert not mc_active()
    assert torch.equal(model(x), model(x))


def test_state_is_restored_after_an_exception() -> None:
    model = _model().train()
    with pytest.raises(RuntimeError, match="boom"), mc_mode(model):
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())
    assert not mc_active()
    x = torch.randn(4, 8)
    assert torch.equal(torch_F.dropout(x, 0.5, False), x)


def test_hooks_and_modules_are_untouched() -> None:
    model = _model()
    calls = []
    model[0].register_forward_hook(lambda *args: calls.append(1))
    modules_before = list(model.modules())
    with mc_mode(model):
        model(torch.randn(2, 8))
    assert calls == [1]
    assert list(model.modules()) == modules_before
    assert len(model[0]._forward_hooks) == 1


def test_no_dropout_or_all_zero_rates_is_an_error() -> None:
    with pytest.raises(ValueError, match="it has no dropout module"), mc_mode(nn.Linear(2, 2)):
        pass
    zeros = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))
    with pytest.raises(ValueError, match="all its dropout rates are 0"), mc_mode(zeros):
        pass


def test_rnn_and_attention_dropout_count() -> None:
    model = nn.ModuleDict(
        {"lstm": nn.LSTM(4, 4, num_layers=2, dropout=0.2), "mha": nn.MultiheadAttention(4, 1, 0.1)}
    )
    names = {name for name, _, _ in dropout_modules(model)}
    assert names == {"lstm", "mha"}
    state = enable_mc(model.eval())
    assert model["lstm"].training
    assert model["mha"].training
    assert not model["mha"].out_proj.training
    disable_mc(state)
    assert not model["lstm"].training
