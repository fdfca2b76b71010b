"""torch.nn.functional's dropouts as the doctor's tracer read them, now derived from
:mod:`dropkit._registry` (the one table). Kept only until the doctor reads the registry itself;
delete this module then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch.nn.functional as torch_F

from dropkit._registry import function_spec

__all__ = ["TORCH_DROPOUTS", "DropoutSignature"]


class DropoutSignature(NamedTuple):
    p_at: int
    training_at: int
    variant: str
    default_training: bool


def _signature(func: Callable[..., Any]) -> DropoutSignature:
    spec = function_spec(func)
    assert spec is not None
    assert spec.training_at is not None
    return DropoutSignature(spec.p_at, spec.training_at, spec.variant, bool(spec.training_default))


TORCH_DROPOUTS: dict[Callable[..., Any], DropoutSignature] = {
    func: _signature(func)
    for func in (
        torch_F.dropout,
        torch_F.dropout1d,
        torch_F.dropout2d,
        torch_F.dropout3d,
        torch_F.alpha_dropout,
        torch_F.feature_alpha_dropout,
    )
}
