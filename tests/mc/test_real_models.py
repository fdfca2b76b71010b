"""Monte Carlo dropout on models as people write them: every stochastic op of train mode on,
nothing else changed, the shared prefix equal to replication, masks fresh for every sample."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as torch_F
from torch import nn

import dropkit.functional as F
from dropkit import mc
from dropkit import nn as dk_nn


def _seeded(make):  # type: ignore[no-untyped-def]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make().eval()


def _both(model: nn.Module, inputs: object, samples: int = 6, **kwargs: object):  # type: ignore[no-untyped-def]
    shared = mc.predict(model, inputs, samples=samples, seed=3, **kwargs)  # type: ignore[arg-type]
    replicated = mc.predict(model, inputs, samples=samples, seed=3, share_prefix=False, **kwargs)  # type: ignore[arg-type]
    return shared, replicated


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- torch.nn models


def _encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def _transformer() -> nn.Module:
    return nn.Transformer(16, 2, 1, 1, 32, dropout=0.1, batch_first=True)


TORCH_MODELS = {
    "TransformerEncoder": (_encoder, lambda g: torch.randn(3, 5, 16, generator=g)),
    "Transformer": (
        _transformer,
        lambda g: (torch.randn(3, 5, 16, generator=g), torch.randn(3, 4, 16, generator=g)),
    ),
    "LSTM": (
        lambda: nn.LSTM(4, 8, 2, dropout=0.3, batch_first=True),
        lambda g: torch.randn(3, 5, 4, generator=g),
    ),
    "GRU": (
        lambda: nn.GRU(4, 8, 2, dropout=0.3, batch_first=True),
        lambda g: torch.randn(3, 5, 4, generator=g),
    ),
}


@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_torch_models_prefix_equals_replication_and_varies(name: str) -> None:
    make, make_input = TORCH_MODELS[name]
    model, x = _seeded(make), make_input(_gen())
    shared, replicated = _both(model, x)
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-4, atol=1e-5)
    assert shared.samples.std(0).min() > 0  # every output element varies
    assert not any(m.training for m in model.modules())


class MHAFirst(nn.Module):
    """Attention dropout inside nn.MultiheadAttention runs before the first dropout module."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attn(x, x, x)
        return self.head(self.drop(h + x)).mean(1)


def test_a_stochastic_op_inside_mha_ends_the_prefix() -> None:
    model, x = _seeded(MHAFirst), torch.randn(4, 6, 8, generator=_gen())
    shared, replicated = _both(model, x)
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-5, atol=1e-6)


def test_lstm_with_batch_first_false_falls_back_and_says_why() -> None:
    class TimeMajor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, 2, dropout=0.3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lstm(x.transpose(0, 1))[0][-1]

    model, x = _seeded(TimeMajor), torch.randn(3, 5, 4, generator=_gen())
    shared, replicated = _both(model, x)
    assert "batch_first=False" in shared.strategy
    torch.testing.assert_close(shared.samples, replicated.samples)
    assert shared.samples.std(0).min() > 0


# --------------------------------------------------------------------------- attention dropout


class SdpaAttention(nn.Module):
    """Hugging Face's pattern: the rate is passed only in train mode."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.qkv, self.out, self.p = nn.Linear(8, 24), nn.Linear(8, 8), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = torch_F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.p if self.training else 0.0
        )
        return self.out(a.transpose(1, 2).reshape(n, length, 8))


class AttentionOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(4, 8), SdpaAttention(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.embed(x)).mean(1))


def test_attention_dropout_gated_by_training_runs_under_mc() -> None:
    model, x = _seeded(AttentionOnly), torch.randn(4, 6, 4, generator=_gen())
    shared, replicated = _both(model, x)
    assert shared.strategy == "shared-prefix"
    assert shared.samples.std(0).min() > 0
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-5, atol=1e-6)
    with mc.mc_mode(model):
        model(x)
        assert model.attn.training
        assert not model.embed.training
        assert not model.training


class Functional(nn.Module):
    """Dropout only as a function call, the way timm heads and many model files write it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc(x)))
        return self.head(torch_F.dropout(h, 0.5, training=self.training))


def test_functional_dropout_models_are_accepted() -> None:
    model, x = _seeded(Functional), torch.randn(5, 6, generator=_gen())
    stats = model.bn.running_mean.clone()
    shared, replicated = _both(model, x)
    assert shared.strategy == "shared-prefix"
    assert shared.samples.std(0).min() > 0
    torch.testing.assert_close(shared.samples, replicated.samples)
    assert torch.equal(model.bn.running_mean, stats)


class InlineBatchNorm(nn.Module):
    """Dropout and batch statistics both follow ``self.training`` in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.register_buffer("mean", torch.zeros(8))
        self.register_buffer("var", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch_F.batch_norm(self.fc(x), self.mean, self.var, training=self.training)
        return torch_F.dropout(h, 0.5, training=self.training)


def test_a_module_whose_training_also_changes_other_things_stays_off_with_a_warning() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block, self.drop = InlineBatchNorm(), nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.block(x))

    model, x = _seeded(Net), torch.randn(5, 6, generator=_gen())
    buffers = [b.clone() for b in model.buffers()]
    with pytest.warns(RuntimeWarning, match="'block' issues dropout in train mode"):
        result = mc.predict(model, x, samples=4, seed=0)
    assert result.samples.std(0).max() > 0  # the other dropout still runs
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    with warnings.catch_warnings(), mc.mc_mode(model):
        warnings.simplefilter("ignore")
        model(x)
        assert not model.block.training
        assert model.drop.training


def test_gated_by_an_ancestor_switches_the_ancestor_on() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.drop = nn.Linear(4, 4), nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.fc(x)
            return self.drop(x) if self.training else x

    model, x = _seeded(Gate), torch.randn(4, 4, generator=_gen())
    result = mc.predict(model, x, samples=8, seed=0)
    assert result.samples.std(0).min() > 0


# --------------------------------------------------------------------------- masks over the batch


class _Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = dk_nn.EmbeddingDropout(nn.Embedding(20, 8), 0.3)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


class _WeightDrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = dk_nn.WeightDrop(nn.Linear(6, 6), "weight", 0.5)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)))


def _after(layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 6), layer, nn.Linear(6, 3))


class _FunctionalBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(self.fc(x), 0.5, self.training, noise_shape=(1, None))
        return self.head(h)


BATCH_SHARED = {
    "EmbeddingDropout": (_Embed, lambda g: torch.randint(0, 20, (4, 5), generator=g)),
    "WeightDrop": (_WeightDrop, lambda g: torch.randn(4, 6, generator=g)),
    "DropPath(mode='batch')": (
        lambda: _after(dk_nn.DropPath(0.5, mode="batch")),
        lambda g: torch.randn(4, 6, generator=g),
    ),
    "Dropout(noise_shape=(1, None))": (
        lambda: _after(dk_nn.Dropout(0.5, noise_shape=(1, None))),
        lambda g: torch.randn(4, 6, generator=g),
    ),
    "F.dropout(noise_shape=(1, None))": (
        _FunctionalBatch,
        lambda g: torch.randn(4, 6, generator=g),
    ),
}


@pytest.mark.parametrize("name", list(BATCH_SHARED))
@pytest.mark.parametrize("share_prefix", [True, False])
def test_masks_shared_over_the_batch_are_fresh_for_every_sample(
    name: str, share_prefix: bool
) -> None:
    make, make_input = BATCH_SHARED[name]
    model, x = _seeded(make), make_input(_gen())
    result = mc.predict(model, x, samples=16, seed=0, share_prefix=share_prefix)
    # With one mask for all samples every sample is equal (std 0). 16 samples at p >= 0.3:
    # all masks equal has probability far below 1e-6.
    assert result.samples.std(0).min() > 0, result.strategy
    # Within one sample the mask is still shared over the batch, as in train mode.
    assert result.samples.shape == (16, 4, 3)


def test_batch_shared_function_calls_keep_the_prefix() -> None:
    model, x = _seeded(_FunctionalBatch), torch.randn(4, 6, generator=_gen())
    shared, replicated = _both(model, x)
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples)


# --------------------------------------------------------------------------- p = 0 costs nothing


def test_rate_zero_ops_do_not_start_the_replication() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.path, self.drop0 = dk_nn.DropPath(0.0), nn.Dropout(0.0)
            self.body, self.drop, self.head = nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(self.drop0(F.dropout(self.path(x), 0.0, self.training)))
            return self.head(self.drop(h))

    model, x = _seeded(Net), torch.randn(5, 6, generator=_gen())
    mc.predict(model, x, samples=4, seed=0)  # first call: finds what to switch on
    rows: list[int] = []
    model.body.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    result = mc.predict(model, x, samples=4, seed=0)
    assert rows == [5]  # the body ran once, on the 5 inputs, not on 4 * 5 rows
    assert result.strategy == "shared-prefix"


# --------------------------------------------------------------------------- inputs and outputs


class KeywordModel(nn.Module):
    """Called with keyword inputs; returns a mapping, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.drop, self.head = nn.Embedding(20, 8), nn.Dropout(0.3), nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> OrderedDict:  # type: ignore[type-arg]
        h = self.drop(self.emb(input_ids)) * attention_mask[..., None]
        pooled = h.sum(1) / attention_mask.sum(1, keepdim=True)
        return OrderedDict(hidden=h, logits=self.head(pooled))


def _keyword_inputs() -> dict[str, torch.Tensor]:
    g = _gen()
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[-1, -2:] = 0
    return {"input_ids": torch.randint(0, 20, (4, 5), generator=g), "attention_mask": mask}


def test_dict_inputs_and_mapping_outputs() -> None:
    model, inputs = _seeded(KeywordModel), _keyword_inputs()
    shared, replicated = _both(model, inputs)
    assert shared.samples.shape == (6, 4, 3)  # logits by default
    torch.testing.assert_close(shared.samples, replicated.samples)
    hidden = mc.predict(model, inputs, samples=2, seed=0, output="hidden")
    assert hidden.samples.shape == (2, 4, 5, 8)
    picked = mc.predict(model, inputs, samples=2, seed=0, output=lambda out: out["logits"][:, 0])
    assert picked.samples.shape == (2, 4)


def test_tuple_inputs_and_outputs() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.drop = nn.Linear(3, 3), nn.Dropout(0.5)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.drop(self.fc(a) + b)
            return h.sum(1), h

    g = _gen()
    model = _seeded(Pair)
    inputs = (torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g))
    assert mc.predict(model, inputs, samples=3, seed=0).samples.shape == (3, 4)
    assert mc.predict(model, inputs, samples=3, seed=0, output=1).samples.shape == (3, 4, 3)


def test_mapping_without_logits_asks_for_output() -> None:
    class NoLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"last_hidden_state": self.drop(x)}

    with pytest.raises(ValueError, match=r"without 'logits'.*output='last_hidden_state'"):
        mc.predict(NoLogits(), torch.randn(2, 3), samples=2)
    with pytest.raises(ValueError, match="output='nope' is not in the model's output"):
        mc.predict(NoLogits(), torch.randn(2, 3), samples=2, output="nope")
