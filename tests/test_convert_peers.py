"""A converted layer keeps the attribute names of the peer layer it replaced, read and written.

timm's DropPath and DropBlock2d call their rate ``drop_prob`` (and timm's code and its users'
schedule stochastic depth by setting it); torchvision's layers use ``p``, ``mode``,
``block_size``, ``eps``. These are timm's own ``tests/test_layers_drop.py`` and torchvision's
``test_ops.py`` calls, made on the converted layer.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from typing import Any

import pytest
import torch

import dropkit
from dropkit import nn


def _timm() -> Any:
    return pytest.importorskip("zoo_models").import_timm()


def _torchvision() -> Any:
    return pytest.importorskip("zoo_models").import_torchvision()


# ------------------------------------------------------------- without timm or torchvision


class DropPath(torch.nn.Module):
    """Stands in for timm's DropPath (matched by its qualified name)."""

    __module__ = "timm.layers.drop"

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep


def test_drop_prob_reads_and_sets_the_rate_of_a_converted_drop_path() -> None:
    new = dropkit.convert(DropPath(0.1))
    assert isinstance(new, nn.DropPath)
    assert new.drop_prob == new.p == 0.1
    new.drop_prob = 0.3
    assert new.p == 0.3
    new.p = 0.2
    assert new.drop_prob == 0.2


def test_setting_drop_prob_changes_the_rate_used() -> None:
    new = dropkit.convert(DropPath(0.1)).train()
    x = torch.ones(64, 3)
    new.drop_prob = 1.0
    assert torch.equal(new(x), torch.zeros_like(x))
    new.drop_prob = 0.0
    assert torch.equal(new(x), x)


def test_a_bad_drop_prob_raises_naming_the_attribute() -> None:
    new = dropkit.convert(DropPath(0.1))
    with pytest.raises(ValueError, match=r"drop_prob: expected p in \[0, 1\], got 1.5"):
        new.drop_prob = 1.5
    assert new.p == 0.1


def test_the_report_names_dropkits_public_class() -> None:
    _, report = dropkit.convert(torch.nn.Sequential(DropPath(0.1)), return_report=True)
    assert report.swapped == {"timm's DropPath -> dropkit's DropPath": 1}


def test_a_layer_with_peer_names_survives_copy_pickle_and_torch_save() -> None:
    new = dropkit.convert(DropPath(0.1))
    buffer = io.BytesIO()
    torch.save(new, buffer)
    buffer.seek(0)
    for again in (copy.deepcopy(new), pickle.loads(pickle.dumps(new)),
                  torch.load(buffer, weights_only=False)):  # fmt: skip
        assert type(again) is type(new)
        again.drop_prob = 0.4
        assert again.p == 0.4


def test_an_attribute_the_converted_layer_does_not_keep_warns() -> None:
    peer = DropPath(0.1)
    peer.drop_schedule = "linear"  # a setting a newer timm might add
    with pytest.warns(RuntimeWarning, match="'drop_schedule', which dropkit's DropPath does not"):
        dropkit.convert(peer)


def test_layers_that_keep_every_name_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dropkit.convert(torch.nn.Sequential(DropPath(0.1), torch.nn.Dropout(0.2)))


# ------------------------------------------------------------- timm and torchvision


def _public(layer: torch.nn.Module) -> dict[str, object]:
    return {k: v for k, v in vars(layer).items() if not k.startswith("_") and k != "training"}


def _stock_layers() -> list[torch.nn.Module]:
    timm, torchvision = _timm(), _torchvision()
    return [
        timm.layers.DropPath(0.1),
        timm.layers.DropPath(0.2, scale_by_keep=False),
        timm.layers.DropBlock2d(0.1, 3),
        timm.layers.DropBlock2d(0.1, 5, gamma_scale=0.5, couple_channels=False),
        timm.layers.DropBlock2d(0.1, 3, with_noise=True),
        timm.layers.DropBlock2d(0.1, 3, scale_by_keep=False),
        torchvision.ops.StochasticDepth(0.2, "row"),
        torchvision.ops.StochasticDepth(0.2, "batch"),
        torchvision.ops.DropBlock2d(0.1, 3, eps=1e-3),
        torchvision.ops.DropBlock3d(0.1, 3),
    ]


@pytest.mark.vision
def test_every_attribute_of_a_stock_layer_reads_the_same_on_its_conversion() -> None:
    for stock in _stock_layers():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing lost
            new = dropkit.convert(stock)
        assert {k: getattr(new, k) for k in _public(stock)} == _public(stock), type(stock)


@pytest.mark.vision
def test_timm_drop_path_schedule_by_drop_prob_reaches_the_converted_layers() -> None:
    """timm's pattern: a schedule sets ``drop_prob`` on every block's DropPath."""
    timm = _timm()
    model = dropkit.convert(timm.create_model("test_vit", drop_path_rate=0.2))
    layers = [m for m in model.modules() if isinstance(m, nn.DropPath)]
    assert {type(m).__name__ for m in layers} == {"TimmDropPath"}
    assert not any(isinstance(m, timm.layers.DropPath) for m in layers)  # as for any convert
    assert layers
    assert all(hasattr(m, "drop_prob") for m in layers)
    for i, layer in enumerate(layers):
        layer.drop_prob = 0.01 * i
    assert [m.p for m in layers] == [0.01 * i for i in range(len(layers))]
    for layer in layers:
        layer.drop_prob = 1.0  # every residual branch they hold dropped: those blocks do nothing
    blocks = [i for i, b in enumerate(model.blocks) if isinstance(b.drop_path1, nn.DropPath)]
    assert blocks == list(range(blocks[0], len(model.blocks)))  # the first has rate 0: none
    model.train()
    x = torch.randn(2, 3, *model.default_cfg["input_size"][1:])
    with_drop = model.forward_features(x)
    model.blocks = model.blocks[: blocks[0]]
    torch.testing.assert_close(with_drop, model.forward_features(x))


@pytest.mark.vision
def test_timm_drop_path_drop_prob_as_in_timms_test() -> None:
    """timm's ``test_drop_path``: the dropped fraction of whole samples follows ``drop_prob``."""
    timm = _timm()
    layer = dropkit.convert(timm.layers.DropPath(0.0)).train()
    n = 20_000
    for rate in (0.1, 0.5):
        layer.drop_prob = rate
        torch.manual_seed(0)
        kept = layer(torch.ones(n, 4)).ne(0).all(1)
        assert abs(int(kept.sum()) - (1 - rate) * n) < 5 * (n * rate * (1 - rate)) ** 0.5


@pytest.mark.vision
def test_timm_drop_block_scale_by_keep_and_with_noise_write_through() -> None:
    timm = _timm()
    new = dropkit.convert(timm.layers.DropBlock2d(0.2, 3)).train()
    assert (new.drop_prob, new.scale_by_keep, new.with_noise) == (0.2, True, False)
    x = torch.ones(8, 4, 10, 10)
    torch.manual_seed(0)
    assert (new(x) > 1).any()  # kept values scaled up
    new.scale_by_keep = False
    torch.manual_seed(0)
    y = new(x)
    assert set(y.unique().tolist()) == {0.0, 1.0}  # dropped or kept as they are
    new.scale_by_keep, new.with_noise = True, True
    assert new.rescale == "none"  # timm scales nothing when it fills with noise
    new.with_noise = False
    assert new.rescale == "batch"
    new.drop_prob = 0.0
    assert torch.equal(new(x), x)


@pytest.mark.vision
def test_torchvision_stochastic_depth_p_and_mode_write_through() -> None:
    """torchvision's ``test_stochastic_depth`` pattern: ``mode="batch"`` keeps or drops the
    whole batch; ``p`` sets the rate."""
    torchvision = _torchvision()
    new = dropkit.convert(torchvision.ops.StochasticDepth(0.5, "row")).train()
    new.mode = "batch"
    x = torch.ones(16, 3)
    torch.manual_seed(0)
    outcomes = {bool(y.ne(0).all()) - bool(y.eq(0).all()) for y in (new(x) for _ in range(50))}
    assert outcomes == {-1, 1}  # the whole batch kept (1) or dropped (-1), never mixed (0)
    new.p = 1.0
    assert torch.equal(new(x), torch.zeros_like(x))


@pytest.mark.vision
def test_torchvision_drop_block_settings_write_through() -> None:
    torchvision = _torchvision()
    new = dropkit.convert(torchvision.ops.DropBlock2d(0.1, 3)).train()
    assert (new.p, new.block_size, new.inplace, new.eps) == (0.1, 3, False, 1e-6)
    new.p = 0.0
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(new(x), x)
