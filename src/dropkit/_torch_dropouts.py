"""torch.nn.functional's dropout functions and where their arguments are, in one table.

Used by :mod:`dropkit.mc` (to force ``training=True``) and by the doctor's tracer (to read the
rate and whether the call is active).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch.nn.functional as torch_F

__all__ = ["TORCH_DROPOUTS", "DropoutSignature"]


class DropoutSignature(NamedTuple):
    p_at: int  # position of ``p``
    training_at: int  # position of ``training``
    variant: str
    default_training: bool  # torch's alpha variants default to False


TORCH_DROPOUTS: dict[Callable[..., Any], DropoutSignature] = {
    torch_F.dropout: DropoutSignature(1, 2, "element", True),
    torch_F.dropout1d: DropoutSignature(1, 2, "channel1d", True),
    torch_F.dropout2d: DropoutSignature(1, 2, "channel2d", True),
    torch_F.dropout3d: DropoutSignature(1, 2, "channel3d", True),
    torch_F.alpha_dropout: DropoutSignature(1, 2, "alpha", False),
    torch_F.feature_alpha_dropout: DropoutSignature(1, 2, "feature_alpha", False),
}
