"""torchvision's positional calls on dropkit's equivalents (issue 23, item 7).

``StochasticDepth(p, mode)`` is ``nn.DropPath(p, mode)``, ``stochastic_depth(input, p, mode,
training)`` is ``F.stochastic_depth``, and ``DropBlock2d/3d(p, block_size, inplace, eps)`` is
``nn.DropBlock2d/3d`` with the same arguments. The tests are torchvision's own
(``test/test_ops.py``: ``TestStochasticDepth``, ``TestDropBlock``), with its keyword calls
written positionally. dropkit's DropBlock keeps its exact block-origin rate (README,
compatibility): torchvision's dropped-fraction tolerance holds for it too.
"""

from __future__ import annotations

from itertools import product

import pytest
import torch
from scipy import stats

import dropkit.functional as F
from dropkit import nn


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("mode", ["batch", "row"])
@pytest.mark.parametrize("call", ["layer", "function"])
def test_stochastic_depth_random(seed: int, mode: str, p: float, call: str) -> None:
    torch.manual_seed(seed)
    batch_size = 5
    x = torch.ones(size=(batch_size, 3, 4, 4))
    layer = nn.DropPath(p, mode)  # torchvision: ops.StochasticDepth(p, mode)
    layer.__repr__()
    trials = 250
    num_samples = 0
    counts = 0
    for _ in range(trials):
        out = layer(x) if call == "layer" else F.stochastic_depth(x, p, mode)
        non_zero_count = out.sum(dim=(1, 2, 3)).nonzero().size(0)
        if mode == "batch":
            if non_zero_count == 0:
                counts += 1
            num_samples += 1
        elif mode == "row":
            counts += batch_size - non_zero_count
            num_samples += batch_size
    p_value = stats.binomtest(counts, num_samples, p=p).pvalue
    assert p_value > 0.01


@pytest.mark.parametrize("p", [0.0, 1.0])
@pytest.mark.parametrize("mode", ["batch", "row"])
def test_stochastic_depth(mode: str, p: float) -> None:
    x = torch.ones(size=(5, 3, 4, 4))
    layer = nn.DropPath(p, mode)
    assert layer.mode == mode
    assert not layer.inplace  # the string is the mode, not a truthy inplace
    out = layer(x)
    if p == 0:
        assert out.equal(x)
    elif p == 1:
        assert out.equal(torch.zeros_like(x))
    assert F.stochastic_depth(x, p, mode, False) is x  # training, fourth as in torchvision


def test_drop_path_named_with_torchvisions_order_says_which_call_to_use() -> None:
    with pytest.raises(TypeError, match="stochastic_depth"):
        F.drop_path(torch.ones(4, 3), 0.5, "row")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        F.stochastic_depth(torch.ones(4, 3), 0.5, "column")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("p", [0.0, 0.5])
@pytest.mark.parametrize("block_size", [5, 11])
@pytest.mark.parametrize("inplace", [True, False])
def test_drop_block(seed: int, dim: int, p: float, block_size: int, inplace: bool) -> None:
    torch.random.manual_seed(seed)
    batch_size, channels, height = 5, 3, 11
    if dim == 2:
        x = torch.ones(size=(batch_size, channels, height, height))
        layer: torch.nn.Module = nn.DropBlock2d(p, block_size, inplace)
        feature_size = height * height
    else:
        x = torch.ones(size=(batch_size, channels, height, height, height))
        layer = nn.DropBlock3d(p, block_size, inplace)
        feature_size = height**3
    layer.__repr__()
    assert (layer.block_size, layer.inplace) == (block_size, inplace)
    out = layer(x)
    if p == 0:
        assert out.equal(x), f"{out}, {x}"
    if block_size == height:
        for b, c in product(range(batch_size), range(channels)):
            assert out[b, c].count_nonzero() in (0, feature_size)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("p", [0.1, 0.2])
def test_drop_block_random(seed: int, dim: int, p: float) -> None:
    torch.random.manual_seed(seed)
    shape = (5, 3, 11, 11) if dim == 2 else (5, 3, 11, 11, 11)
    x = torch.ones(size=shape)
    layer = nn.DropBlock2d(p, 3, False) if dim == 2 else nn.DropBlock3d(p, 3, False)
    trials = 250 if dim == 2 else 40
    num_samples = 0
    counts = 0
    cell_numel = x.numel()
    for _ in range(trials):
        with torch.no_grad():
            out = layer(x)
        counts += cell_numel - out.nonzero().size(0)
        num_samples += cell_numel
    assert abs(p - counts / num_samples) / p < 0.15


def test_drop_block_positional_arguments_mean_torchvisions() -> None:
    layer = nn.DropBlock2d(0.1, 3, True, 1e-5)
    assert (layer.p, layer.block_size, layer.inplace, layer.eps) == (0.1, 3, True, 1e-5)
    # dropkit's own (p, inplace) and keyword calls are unchanged.
    assert nn.DropBlock2d(0.1, True).inplace
    assert nn.DropBlock2d(0.1, True).block_size == 7
    keyword = nn.DropBlock2d(p=0.1, block_size=3, inplace=True)
    assert (keyword.block_size, keyword.inplace) == (3, True)
    # Documented (README, compatibility): the positional form keeps dropkit's exact rate.
    assert nn.DropBlock2d(0.1, 3).gamma == "exact"
    with pytest.raises(TypeError, match="twice"):
        nn.DropBlock2d(0.1, 3, block_size=5)
    with pytest.raises(TypeError, match="block_size=3 as a keyword"):
        F.drop_block2d(torch.ones(2, 3, 8, 8), 0.1, 3)  # type: ignore[arg-type]


@pytest.mark.vision
def test_positional_calls_match_torchvisions_layers() -> None:
    import zoo_models

    ops = zoo_models.import_torchvision().ops
    for theirs, ours in [
        (ops.StochasticDepth(0.2, "batch"), nn.DropPath(0.2, "batch")),
        (ops.DropBlock2d(0.1, 3, True, 1e-5), nn.DropBlock2d(0.1, 3, True, 1e-5)),
        (ops.DropBlock3d(0.1, 5), nn.DropBlock3d(0.1, 5)),
    ]:
        for name in ("p", "mode", "block_size", "inplace", "eps"):
            if hasattr(theirs, name):
                assert getattr(ours, name) == getattr(theirs, name), (theirs, name)
    x = torch.randn(6, 3, 4, 4)
    assert ops.stochastic_depth(x, 0.3, "row", False) is x
    assert F.stochastic_depth(x, 0.3, "row", False) is x
