"""Run a model and put its state back: what convert, the doctor and mc do to probe a model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["state_kept"]


@contextmanager
def state_kept(model: nn.Module) -> Iterator[None]:
    """Inside the block anything may run on ``model``; afterwards every module's training flag
    and every buffer (BatchNorm statistics move in training mode) are as they were, an
    exception included. torch's RNG state is the caller's to keep."""
    flags = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in flags.items():
            module.training = training
