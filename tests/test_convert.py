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
    with pytest.warns(UserWarning, match="convert: found no dropout layer to swap"):
        dropkit.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"convert: expected an nn\.Module"):
        dropkit.convert("model")  # type: ignore[type-var]


def test_convert_models_all_hold_torch_dropout_that_convert_swaps() -> None:
    from dropkit.experiments.bench import convert_models

    for make, x in convert_models(scale=1 / 32).values():
        model = make()
        count = sum(type(m) is torch.nn.Dropout for m in model.modules())
        assert count >= 2
        converted = dropkit.convert(model)
        assert not any(type(m) is torch.nn.Dropout for m in converted.modules())
        assert converted(x).shape == model(x).shape


def test_a_reused_instance_is_swapped_everywhere_and_stays_shared() -> None:
    class TwoNames(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.drop = self.drop_again = torch.nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop_again(self.fc(self.drop(x)))

    shared = torch.nn.Dropout(0.3)
    model = torch.nn.Sequential(shared, torch.nn.Linear(4, 4), shared, TwoNames())
    converted, report = dropkit.convert(model, return_report=True)
    assert type(converted[0]) is nn.Dropout
    assert converted[2] is converted[0]
    assert type(converted[3].drop) is nn.Dropout
    assert converted[3].drop_again is converted[3].drop
    assert report.count == 2  # two instances, each counted once
    assert not any(type(m) is torch.nn.Dropout for m in converted.modules())


def test_inplace_converts_a_bare_dropout_layer_itself() -> None:
    layer = torch.nn.Dropout(0.3, inplace=True)
    calls = []
    layer.register_forward_hook(lambda *args: calls.append(1))
    assert type(dropkit.convert(layer)) is nn.Dropout
    assert type(layer) is torch.nn.Dropout  # a copy by default
    same = dropkit.convert(layer, inplace=True)
    assert same is layer
    assert type(layer) is nn.Dropout
    assert layer.p == 0.3
    assert layer.inplace
    x = torch.ones(1000)
    layer.eval()
    assert layer(x) is x
    assert calls == [1]  # the caller's hooks are kept
    layer.train()
    kept = int(layer(torch.ones(10_000)).ne(0).sum())
    assert abs(kept - 7000) < 5 * (10_000 * 0.3 * 0.7) ** 0.5


class HFStyleAttention(torch.nn.Module):
    """As Hugging Face attention does: keep an nn.Dropout, pass its rate to SDPA, never call it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).transpose(1, 3).unbind(2)
        p = self.dropout.p if self.training else 0.0
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return out.transpose(1, 2).flatten(2)


class FunctionalHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop_rate = 0.2
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.dropout(x.mean(1), self.drop_rate, self.training)
        return self.fc(x)


def test_the_report_says_what_stays_torchs_and_why() -> None:
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstm = torch.nn.LSTM(8, 8, dropout=0.2)
    model = torch.nn.Sequential(
        HFStyleAttention(),
        HFStyleAttention(),
        torch.nn.Dropout(0.1),
        FunctionalHead(),
    )
    model.add_module("mha", torch.nn.MultiheadAttention(8, 2, dropout=0.1))
    model.add_module("lstm", lstm)
    model.add_module("custom", CustomDropout(0.4))
    converted, report = dropkit.convert(model, return_report=True)
    assert report.count == 1  # the attention's dropout layers are never called: not swapped
    assert type(converted[0].dropout) is torch.nn.Dropout
    left = "\n".join(report.left)
    assert "2 x attention-dropout rate inside HFStyleAttention stays torch's" in left
    assert "1 x functional dropout rate (drop_rate) inside FunctionalHead" in left
    assert "1 x torch's MultiheadAttention: the dropout runs inside torch's fused attention" in left
    assert "1 x torch's LSTM: the dropout between layers runs inside torch's fused RNN" in left
    assert "'s CustomDropout: a subclass of a dropout layer, whose forward may differ" in left
    assert str(report).startswith("convert: swapped 1 dropout layer\n")


def test_with_an_example_input_the_report_counts_only_layers_that_ran() -> None:
    class Skip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.drop = torch.nn.Dropout(0.1)
            self.unused = torch.nn.Dropout(0.1)  # e.g. a DropPath of a block with no skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.fc(x))

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), Skip()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 4)
    rng = torch.get_rng_state()
    converted, report = dropkit.convert(model, x, return_report=True)
    assert report.count == 1
    assert sum(report.never_ran.values()) == 1
    assert type(converted[1].unused) is nn.Dropout  # swapped all the same
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(m.training for m in model.modules())
    _, report = dropkit.convert(Keywords(), {"ids": torch.tensor([[1, 2]])}, return_report=True)
    assert report.count == 1


class Keywords(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(4, 4)
        self.drop = torch.nn.Dropout(0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.embed(ids))


def test_timm_droppath_and_torchvision_stochastic_depth_keep_their_semantics() -> None:
    zoo_models = pytest.importorskip("zoo_models")
    timm = zoo_models.import_timm()
    torchvision = zoo_models.import_torchvision()
    n = 20_000
    cases = [
        (timm.layers.DropPath(0.3), "row", True),
        (timm.layers.DropPath(0.3, scale_by_keep=False), "row", False),
        (torchvision.ops.StochasticDepth(0.3, "row"), "row", True),
        (torchvision.ops.StochasticDepth(0.3, "batch"), "batch", True),
    ]
    for layer, mode, scale in cases:
        new = dropkit.convert(layer)
        assert type(new) is nn.DropPath
        assert (new.p, new.mode, new.scale_by_keep) == (0.3, mode, scale)
        torch.manual_seed(0)
        y = new(torch.ones(n, 3))
        kept = y.ne(0).all(1)
        assert bool((y.ne(0).any(1) == kept).all())  # whole samples
        assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.7 if scale else 1.0))
        if mode == "row":
            assert abs(int(kept.sum()) - 0.7 * n) < 5 * (n * 0.3 * 0.7) ** 0.5
        else:
            assert int(kept.sum()) in (0, n)  # one draw for the batch
    for block in (
        timm.layers.DropBlock2d(0.1, 3),
        torchvision.ops.DropBlock2d(0.1, 3),
        torchvision.ops.DropBlock3d(0.1, 3),
    ):
        with pytest.warns(UserWarning, match="convert: found no dropout layer to swap.*gamma"):
            assert dropkit.convert(block, inplace=True) is block
