"""What mc.predict knows of a model is forgotten when the registry changes."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from dropkit import mc
from dropkit._registry import register_layer, unregister


class _OwnDropout(nn.Module):
    """A third-party-style layer: its mask is a raw draw, not a dropout function."""

    def __init__(self) -> None:
        super().__init__()
        self.p = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * torch.bernoulli(torch.full_like(x, 1 - self.p)) / (1 - self.p)


def _warnings_of(model: nn.Module, x: torch.Tensor) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mc.predict(model, x, 4, seed=0)
    return [str(w.message) for w in seen]


def test_a_layer_registered_after_a_first_predict_is_known_to_the_next() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), _OwnDropout(), nn.Linear(8, 2)).eval()
    x = torch.randn(5, 4)
    first = _warnings_of(model, x)
    assert any("outside any dropout function dropkit knows" in w for w in first)
    register_layer("element")(_OwnDropout)
    try:
        # the same model as a new one would be: a registered layer, nothing to warn about
        assert _warnings_of(model, x) == []
    finally:
        unregister(_OwnDropout)
    assert any("outside any dropout function dropkit knows" in w for w in _warnings_of(model, x))
