"""The routing takes a channel-dropout call to dropkit's function on the ranks the registry
gives its variant, and leaves the others to torch."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as torch_F

import dropkit
import dropkit.functional as dk_F
from dropkit.doctor import check


class ChannelNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch_F.dropout1d(x, 0.5, self.training) + 0


def test_unbatched_dropout1d_is_routed_and_drops_whole_channels() -> None:
    # torch's dropout1d takes an unbatched (C, L); so does dropkit's: the call is routed
    x = torch.ones(64, 5)
    model, report = dropkit.convert(ChannelNet(), x, functional=True, return_report=True)
    assert report.routed == {"torch.nn.functional.dropout1d": 1}
    model.train()
    torch.manual_seed(0)
    got = model(x)
    torch.manual_seed(0)
    assert torch.equal(got, dk_F.dropout1d(x, 0.5) + 0)  # dropkit's function drew the mask
    rows = got.eq(0).all(1) | got.eq(2).all(1)
    assert bool(rows.all())  # each channel kept or dropped whole, along L
    assert 0 < int(got[:, 0].eq(0).sum()) < 64


def test_batched_dropout1d_is_routed_too() -> None:
    x = torch.ones(2, 8, 5)
    _, report = dropkit.convert(ChannelNet(), x, functional=True, return_report=True)
    assert report.routed == {"torch.nn.functional.dropout1d": 1}


def test_dropout2d_of_a_3d_input_stays_torchs() -> None:
    # torch treats a 3D input to dropout2d as (N, C, L) with a warning; dropkit's refuses it,
    # so the call is left to torch (and the doctor names the mistake)
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch_F.dropout2d(x, 0.5, self.training) + 0

    x = torch.ones(2, 8, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = dropkit.convert(Net(), x, functional=True, return_report=True)
        assert report.routed == {}
        assert "DK010" in check(Net(), x).codes()


def test_doctor_takes_the_same_ranks_for_dropout1d() -> None:
    for x in (torch.randn(8, 5), torch.randn(2, 8, 5)):
        assert "DK010" not in check(torch.nn.Sequential(torch.nn.Dropout1d(0.2)), x).codes()


def _takes(func: object, rank: int) -> bool:
    try:
        func(torch.ones([2] * rank), 0.5)  # type: ignore[operator]
    except ValueError:
        return False
    return True


def test_the_registry_ranks_are_those_dropkits_functions_take() -> None:
    # The functions that replace torch's take exactly their variant's ranks (the routing sends
    # them those); the concrete ones may take fewer (concrete_dropout1d: batched only), never
    # more, so that no rank the doctor calls wrong is taken silently.
    from dropkit import _registry as registry

    replacing = {registry.replacement(f) for f in registry.function_specs()} - {None}
    exact = 0
    for func, spec in registry.function_specs().items():
        ranks = registry.variant(spec.variant).channel_ranks
        if ranks is None or not spec.name.startswith("dropkit.functional."):
            continue
        taken = tuple(rank for rank in range(1, 7) if _takes(func, rank))
        assert taken, spec.name
        assert set(taken) <= set(ranks), spec.name
        if func in replacing:
            assert taken == ranks, spec.name
            exact += 1
    assert exact == 3  # dropout1d, dropout2d, dropout3d
