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
        h = torch_F.dropout(h, 0.5, False)  # a constant False: off in train mode, so off under MC
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
        # The two training-gated stages are on, the constant-False one is not: about 1/4 of
        # the elements survive (1/8 if it were on). 128 elements: 6 sigma apart.
        kept = (first != 0).float().mean().item()
        assert 0.16 < kept < 0.36
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
    assert calls
    assert list(model.modules()) == modules_before
    assert len(model[0]._forward_hooks) == 1
    assert not model._forward_pre_hooks


@pytest.mark.parametrize(
    "model", [nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))], ids=["none", "p0"]
)
def test_nothing_stochastic_is_an_error_naming_the_model(model: nn.Module) -> None:
    name = type(model).__name__
    with (
        pytest.raises(ValueError, match=rf"nothing stochastic ran .* of {name}") as error,
        mc_mode(model),
    ):
        model(torch.randn(3, 2))
    assert "require_dropout" not in str(error.value)  # not a hint to an argument predict lacks
    assert not mc_active()
    with mc_mode(model, require_dropout=False):
        model(torch.randn(3, 2))


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


def test_nested_blocks_left_out_of_order_leave_no_state() -> None:
    a, b = _model().train(), FunctionalDropout().eval()
    x = torch.randn(16, 8)
    state_a, state_b = enable_mc(a), enable_mc(b)
    b(x)
    disable_mc(state_a)
    disable_mc(state_b)
    assert not mc_active()
    assert all(m.training for m in a.modules())
    assert not any(m.training for m in b.modules())
    assert torch.equal(b(x), b(x))
    assert torch.equal(torch_F.dropout(x, 0.5, training=False), x)
    assert torch.equal(F.dropout(x, 0.5, training=False), x)


def test_the_same_model_nested_out_of_order_gets_its_flags_back() -> None:
    model = _model().train()
    outer = enable_mc(model)
    inner = enable_mc(model)
    disable_mc(outer)
    assert not model[1].training  # the inner block is still open: still in MC mode
    assert model[3].training
    disable_mc(inner)
    assert all(m.training for m in model.modules())


def test_dropout_outside_the_model_is_untouched_inside_the_block() -> None:
    """MC mode is the model's flags, not a global switch: other calls keep their ``training``."""
    x = torch.randn(64)
    with mc_mode(_model()):
        assert torch.equal(F.dropout(x, 0.5, training=False), x)
        assert torch.equal(torch_F.dropout(x, 0.5, training=False), x)


class DropkitFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.fc(x), 0.5, training=self.training)


def test_compiled_model_runs_dropkit_functional_dropout() -> None:
    torch.manual_seed(0)
    model = torch.compile(DropkitFunctional().eval(), backend="eager")
    x = torch.randn(4, 8)
    with mc_mode(model):
        outs = torch.stack([model(x) for _ in range(4)])
    assert outs.std(0).max() > 0
    assert torch.equal(model(x), model(x))  # eval again afterwards
