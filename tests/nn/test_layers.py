"""The layers: thin over the functions, drop-in for torch's, p checked at construction."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import dropkit.functional as F
from dropkit import nn

LAYERS = [
    (nn.Dropout, F.dropout, (6, 8), {}),
    (nn.Dropout1d, F.dropout1d, (6, 8, 5), {}),
    (nn.Dropout2d, F.dropout2d, (6, 8, 3, 3), {}),
    (nn.Dropout3d, F.dropout3d, (6, 8, 2, 2, 2), {}),
    (nn.AlphaDropout, F.alpha_dropout, (6, 8), {}),
    (nn.FeatureAlphaDropout, F.feature_alpha_dropout, (6, 8, 4), {}),
    (nn.GaussianDropout, F.gaussian_dropout, (6, 8), {}),
    (nn.DropPath, F.drop_path, (6, 8), {}),
    (nn.DropBlock2d, F.drop_block2d, (6, 8, 9, 9), {"block_size": 3}),
    (nn.DropBlock3d, F.drop_block3d, (6, 8, 4, 4, 4), {"block_size": 2}),
    # timm's and torchvision's settings (what convert maps them to)
    (
        nn.DropBlock2d,
        F.drop_block2d,
        (6, 8, 9, 9),
        {
            "block_size": 5,
            "gamma": "paper",
            "gamma_scale": 0.25,
            "placement": "centered",
            "couple_channels": True,
            "rescale": "batch",
            "eps": 1e-7,
            "with_noise": True,
        },
    ),
    (
        nn.DropBlock3d,
        F.drop_block3d,
        (6, 8, 4, 5, 4),
        {"block_size": 3, "gamma": "paper", "block_clip": "square", "rescale": "batch"},
    ),
    (nn.LockedDropout, F.locked_dropout, (5, 6, 8), {}),
]
IDS = [layer.__name__ + ("-options" if len(kw) > 1 else "") for layer, _, _, kw in LAYERS]


@pytest.mark.parametrize(("layer", "fn", "shape", "kwargs"), LAYERS, ids=IDS)
def test_forward_calls_the_function_with_self_training(layer, fn, shape, kwargs) -> None:
    module = layer(0.3, **kwargs)
    x = torch.randn(shape)
    torch.manual_seed(1)
    out = module(x)
    torch.manual_seed(1)
    assert torch.equal(out, fn(x, 0.3, True, **kwargs))
    assert not torch.equal(out, x)
    module.eval()
    assert module(x) is x


class _Seen(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_layers_own_road_gives_the_functions_bits_and_is_seen_by_modes(dtype) -> None:
    # Dropout.forward takes F.dropout's small path itself (a recorded small input); the output,
    # the gradient and the generator's next draw are those of the function.
    module = nn.Dropout(0.3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 24, dtype=dtype, generator=generator).requires_grad_()
    results = []
    for call in (module, lambda t: F.dropout(t, 0.3)):
        torch.manual_seed(3)
        out = call(x)
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        results.append((out, grad, torch.rand(())))
    for ours, theirs in zip(*results, strict=True):
        assert torch.equal(ours, theirs)
    assert not torch.equal(results[0][0], x)
    with _Seen() as mode:  # a mode still sees the function, as Monte Carlo and convert need
        module(x)
    assert "dropout" in mode.seen
    module.p = 1  # an int set after construction: the function's checks
    assert torch.equal(module(x), torch.zeros_like(x))
    module.p = 0.0
    assert module(x) is x


@pytest.mark.parametrize(("layer", "fn", "shape", "kwargs"), LAYERS, ids=IDS)
def test_p_is_checked_at_construction(layer, fn, shape, kwargs) -> None:
    with pytest.raises(ValueError, match=rf"^{layer.__name__}: expected p"):
        layer(1.5, **kwargs)
    with pytest.raises(ValueError, match=layer.__name__):
        layer(float("nan"), **kwargs)


@pytest.mark.parametrize(("layer", "fn", "shape", "kwargs"), LAYERS, ids=IDS)
def test_extra_repr_and_no_state(layer, fn, shape, kwargs) -> None:
    module = layer(0.25, True, **kwargs)
    assert repr(module).startswith(f"{layer.__name__}(p=0.25, inplace=True")
    assert module.state_dict() == {}
    assert list(module.parameters()) == []


@pytest.mark.parametrize(("layer", "fn", "shape", "kwargs"), LAYERS, ids=IDS)
def test_inplace_layer(layer, fn, shape, kwargs) -> None:
    x = torch.randn(shape)
    torch.manual_seed(3)
    expected = layer(0.3, **kwargs)(x)
    torch.manual_seed(3)
    y = x.clone()
    assert layer(0.3, True, **kwargs)(y) is y
    assert torch.equal(y, expected)


@pytest.mark.parametrize(
    ("ours", "theirs", "rank"),
    [
        (nn.Dropout, torch.nn.Dropout, 2),
        (nn.Dropout1d, torch.nn.Dropout1d, 3),
        (nn.Dropout2d, torch.nn.Dropout2d, 4),
        (nn.Dropout3d, torch.nn.Dropout3d, 5),
        (nn.AlphaDropout, torch.nn.AlphaDropout, 2),
        (nn.FeatureAlphaDropout, torch.nn.FeatureAlphaDropout, 3),
    ],
)
def test_drop_in_for_torch(ours, theirs, rank) -> None:
    a, b = ours(0.2, inplace=False), theirs(0.2, inplace=False)
    assert repr(a) == repr(b)
    assert a.state_dict() == b.state_dict()
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), b)
    state = model.state_dict()
    swapped = torch.nn.Sequential(torch.nn.Linear(3, 3), a)
    swapped.load_state_dict(state)
    x = torch.randn((2,) + (3,) * (rank - 1))
    model.eval()
    swapped.eval()
    assert torch.equal(model(x), swapped(x))


def test_module_options_reach_the_function() -> None:
    x = torch.ones(4, 6, 3)
    y = nn.LockedDropout(0.5, batch_first=True)(x)
    assert torch.equal(y, y[:, :1].expand_as(y))
    y = nn.Dropout2d(0.5, channels_last=True)(torch.ones(2, 3, 3, 8))
    assert torch.equal(y, y[:, :1, :1].expand_as(y))
    y = nn.DropPath(0.5, mode="batch")(torch.ones(16, 3))
    assert y.unique().numel() == 1
    y = nn.Dropout(0.5, noise_shape=(4, 1, 3))(x)
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert "noise_shape=(4, 1, 3)" in repr(nn.Dropout(0.5, noise_shape=(4, 1, 3)))


def test_drop_path_and_drop_block_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="DropPath: expected mode"):
        nn.DropPath(0.1, mode="rows")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DropBlock2d: expected block_size"):
        nn.DropBlock2d(0.1, block_size=0)
    with pytest.raises(ValueError, match="DropBlock3d: expected rescale to be one of"):
        nn.DropBlock3d(0.1, rescale="kept")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"DropBlock2d: gamma_scale=0\.5 scales the paper's gamma"):
        nn.DropBlock2d(0.1, gamma_scale=0.5)
    with pytest.raises(ValueError, match="GaussianDropout: expected p in"):
        nn.GaussianDropout(1.0)


def test_drop_path_rates_is_exported() -> None:
    assert nn.drop_path_rates(0.1, 3) == pytest.approx([0.0, 0.05, 0.1])


# ---------------------------------------------------------------- EmbeddingDropout


def test_embedding_dropout_drops_whole_words_and_matches_eval() -> None:
    emb = torch.nn.Embedding(50, 4, padding_idx=0)
    layer = nn.EmbeddingDropout(emb, p=0.5)
    tokens = torch.arange(50).repeat(3, 1)
    out = layer(tokens)
    # A word is dropped everywhere it occurs in the batch.
    dropped = (out == 0).all(-1)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))
    assert 5 < int(dropped[0].sum()) < 45
    layer.eval()
    assert torch.equal(layer(tokens), emb(tokens))
    assert set(layer.state_dict()) == {"embedding.weight"}
    assert "p=0.5" in repr(layer)


def test_embedding_dropout_gradient_reaches_the_weight() -> None:
    emb = torch.nn.Embedding(20, 3)
    nn.EmbeddingDropout(emb, 0.3)(torch.arange(20)).sum().backward()
    grad_rows = (emb.weight.grad != 0).all(1)
    assert 0 < int(grad_rows.sum()) < 20


def test_embedding_dropout_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match=r"EmbeddingDropout: expected an nn\.Embedding"):
        nn.EmbeddingDropout(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- WeightDrop


def test_weight_drop_on_lstm_hidden_weights() -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 8, num_layers=2)
    layer = nn.WeightDrop(lstm, ["weight_hh_l0", "weight_hh_l1"], p=0.5)
    x = torch.randn(6, 3, 4)
    out1, _ = layer(x)
    out2, _ = layer(x)
    assert not torch.allclose(out1, out2)  # a new mask every call
    reference, _ = lstm(x)
    assert not torch.allclose(out1, reference)
    out1.sum().backward()
    assert lstm.weight_hh_l0.grad is not None
    assert lstm.weight_ih_l1.grad is not None
    # The raw weights and the LSTM's flattened view of them are untouched.
    assert lstm._flat_weights[1] is lstm.weight_hh_l0
    layer.eval()
    evaluated, _ = layer(x)
    assert torch.equal(evaluated, lstm(x)[0])


def test_weight_drop_gradient_is_masked() -> None:
    linear = torch.nn.Linear(30, 20, bias=False)
    layer = nn.WeightDrop(linear, "weight", p=0.5)
    torch.manual_seed(4)
    layer(torch.ones(1, 30)).sum().backward()
    grad = linear.weight.grad
    assert set(grad.unique().tolist()) == {0.0, 2.0}


def test_weight_drop_names_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"WeightDrop: LSTM has no parameter named \['weight_hh'\]"
    ):
        nn.WeightDrop(torch.nn.LSTM(2, 2), ["weight_hh"], p=0.5)
    with pytest.raises(ValueError, match="WeightDrop: expected p"):
        nn.WeightDrop(torch.nn.Linear(2, 2), "weight", p=-1)
    assert "weights=['weight'], p=0.2" in repr(nn.WeightDrop(torch.nn.Linear(2, 2), "weight", 0.2))
