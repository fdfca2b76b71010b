"""A new variant registered in the registry alone is seen by convert, mc, the doctor and the
routing: no other file of dropkit names it.

The toy is channel dropout of (N, C, L) sequences under a name of its own: a "third-party"
function and layer (as a library outside dropkit would write them), and dropkit's function and
layer that replace them, each registered through the registry's API and unregistered after.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as torch_F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_unary

import dropkit
import dropkit.functional as dk_F
from dropkit import _registry as registry
from dropkit import mc
from dropkit.doctor import check

TOY = registry.Variant("toy_channel", "channel", channel_ranks=(3,), element_or_channel=True)


def third_party_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """A library's channel dropout, written on torch (dispatches like torch's functions)."""
    if has_torch_function_unary(input):
        return handle_torch_function(third_party_dropout, (input,), input, p, training)
    return torch_F.dropout1d(input, p, training)


def toy_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """dropkit's version: whole channels of (N, C, L), by dropkit's dropout."""
    if has_torch_function_unary(input):
        return handle_torch_function(toy_dropout, (input,), input, p, training)
    shape = (*input.shape[:2], *[1] * (input.dim() - 2))
    return dk_F.dropout(input, p, training, noise_shape=shape)


class ThirdPartyDropout(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return third_party_dropout(x, self.p, self.training)


class ToyDropout(nn.Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return toy_dropout(x, self.p, self.training)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture
def toy() -> Iterator[None]:
    registry.register_variant(TOY)
    registry.add_function(
        third_party_dropout,
        registry.FunctionSpec(
            "third_party_dropout", TOY.name, 1, "p", 0.5, 2, "training", True, "channel"
        ),
    )
    registry.register_function(TOY.name, replaces=third_party_dropout)(toy_dropout)
    registry.add_layer(
        _qualname(ThirdPartyDropout),
        registry.LayerSpec(TOY.name, "p", "channel", to_dropkit=lambda m: ToyDropout(m.p)),
    )
    registry.register_layer(TOY.name)(ToyDropout)
    try:
        yield
    finally:
        for entry in (ToyDropout, _qualname(ThirdPartyDropout), toy_dropout, third_party_dropout):
            registry.unregister(entry)
        registry.unregister(TOY)
    assert registry.function_spec(toy_dropout) is None
    assert registry.layer_spec(ToyDropout) is None  # no lookup of the test left behind
    assert TOY.name not in registry.variants()


def _whole_channels(y: torch.Tensor, kept: float) -> bool:
    """Every (sample, channel) of ``y`` (computed from ones) is all 0 or all ``kept``."""
    return bool((y.eq(0).all(-1) | y.eq(kept).all(-1)).all())


def test_convert_swaps_the_layer(toy: None) -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), ThirdPartyDropout(0.3))
    converted, report = dropkit.convert(model, return_report=True)
    assert isinstance(converted[1], ToyDropout)
    assert converted[1].p == 0.3
    assert report.count == 1


def test_the_routing_runs_the_replacement_on_its_ranks(toy: None) -> None:
    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return third_party_dropout(x, 0.5, self.training) * 1

    x = torch.ones(2, 64, 5)
    model, report = dropkit.convert(Functional(), x, functional=True, return_report=True)
    assert report.routed == {"third_party_dropout": 1}
    torch.manual_seed(0)
    got = model.train()(x)
    torch.manual_seed(0)
    assert torch.equal(got, toy_dropout(x, 0.5))  # dropkit's toy drew the mask
    # a 2D input is outside the variant's ranks: the call stays the library's
    with pytest.warns(UserWarning, match="no dropout layer to swap"):
        _, report = dropkit.convert(Functional(), x[0], functional=True, return_report=True)
    assert report.routed == {}


def test_mc_sampling_switches_the_layer_on(toy: None) -> None:
    model = nn.Sequential(ToyDropout(0.5)).eval()
    x = torch.ones(4, 32, 6)
    samples = mc.predict(model, x, samples=20, seed=0, method="sampling").samples
    assert samples.shape == (20, 4, 32, 6)
    assert _whole_channels(samples, 2.0)
    # seeded, so these counts are fixed; 20 * 4 * 32 channels at p = 0.5: a two-sided binomial
    # test at the 1e-6 level accepts 1280 +- 5 sigma (sigma = 25.3)
    dropped = int(samples.eq(0).all(-1).sum())
    assert abs(dropped - 1280) < 5 * 25.3
    assert not torch.equal(samples[0], samples[1])  # a new network per sample


def test_mc_sampling_sees_the_function(toy: None) -> None:
    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return toy_dropout(x, 0.5, self.training) + 1

    # in eval mode the call is off; mc sees it and turns it on in every sample
    samples = mc.predict(Functional().eval(), torch.ones(3, 16, 4), samples=8, seed=1).samples
    assert _whole_channels(samples - 1, 2.0)
    assert bool(samples.eq(1).any())
    assert bool(samples.eq(3).any())


def test_mc_moments_uses_its_moment_rule(toy: None) -> None:
    # The moment rule of a variant is registered with mc's moment-rule decorator (the package
    # of issue 28, item 3); until that package is merged there is nothing to register with.
    import dropkit.mc._moments as moments

    if not hasattr(moments, "dropout_rule"):
        pytest.skip("mc's moment rules are not a package with dropout_rule yet (issue 28, item 3)")
    from dropkit.mc._moments import _mode

    def toy_rule(prop: Any, call: Any) -> Any:
        # channel dropout, element by element: the mean is kept, Var = E[x^2] p / (1 - p) + Var
        x = call.input
        if not call.training:
            return call.run()
        prop.dropouts += 1
        var = (prop.zvar(x) + x * x) / (1 - call.rate) - x * x
        return prop.bind(x.clone(), var)

    moments.dropout_rule(TOY.name)(toy_rule)
    try:
        x = torch.randn(4, 8, 5, generator=torch.Generator().manual_seed(0))
        result = mc.predict(nn.Sequential(ToyDropout(0.3)).eval(), x, method="moments", seed=0)
        assert torch.equal(result.mean, x)
        torch.testing.assert_close(result.variance, x * x * 0.3 / 0.7)
    finally:
        _mode.DROPOUT_RULES.pop(TOY.name)  # the moment rules have no unregister of their own


def test_doctor_sees_the_layer_and_the_function(toy: None) -> None:
    # a layer of the variant given a rank outside its channel ranks: DK010
    layer = nn.Sequential(nn.Conv2d(2, 4, 3), ToyDropout(0.2), nn.Conv2d(4, 4, 3))
    assert "DK010" in check(layer, torch.randn(2, 2, 8, 8)).codes()
    right = nn.Sequential(nn.Conv1d(2, 4, 3), ToyDropout(0.2), nn.Conv1d(4, 4, 3))
    assert check(right, torch.randn(2, 2, 8)).codes() == []

    # the function, on in eval mode: DK008; its rate above 0.5 (element or channel): DK017
    class AlwaysOn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3)
            self.head = nn.Conv1d(4, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(toy_dropout(self.conv(x), 0.6, True))

    codes = check(AlwaysOn(), torch.randn(2, 2, 8)).codes()
    assert "DK008" in codes
    assert "DK017" in codes
