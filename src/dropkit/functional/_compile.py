"""The element-mask op as a ``torch.library`` custom op, so that ``torch.compile`` keeps it.

Under ``torch.compile`` the seed is a 0-dim tensor drawn inside the graph (``torch.randint``
from the default generator, as in eager mode), and the op is registered with a fake (meta)
implementation and an autograd formula, so a compiled model is one graph whose backward
regenerates the mask instead of saving it. Outside compilation the cheaper
``autograd.Function`` path is used: dispatching a custom op costs tens of microseconds per
call, more than the kernel on small tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dropkit.kernels import masked_affine

__all__ = ["compiled_masked_affine"]


@torch.library.custom_op("dropkit::masked_affine", mutates_args=())
def _masked_affine_op(
    x: torch.Tensor,
    noise_shape: Sequence[int],
    p: float,
    seed: torch.Tensor,
    scale: float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    # Seeds of 2**63 and above travel as negative int64.
    return masked_affine(x, tuple(noise_shape), p, int(seed) % 2**64, scale, shift, fill)


@_masked_affine_op.register_fake
def _(
    x: torch.Tensor,
    noise_shape: Sequence[int],
    p: float,
    seed: torch.Tensor,
    scale: float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    return torch.empty_like(x)  # the layout every backend gives (kernels/_layout.py)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, noise_shape, p, seed, scale, _, _ = inputs
    ctx.noise_shape, ctx.p, ctx.scale = noise_shape, p, scale
    ctx.save_for_backward(seed)  # a 0-dim int64 tensor: 8 bytes


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    (seed,) = ctx.saved_tensors
    grad_input = _masked_affine_op(grad, ctx.noise_shape, ctx.p, seed, ctx.scale, 0.0, 0.0)
    return grad_input, None, None, None, None, None, None


_masked_affine_op.register_autograd(_backward, setup_context=_setup_context)


def compiled_masked_affine(
    input: torch.Tensor,
    noise_shape: tuple[int, ...],
    p: float,
    seed: torch.Tensor,
    scale: float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    """The masked affine map (``_reference.affine``) through the custom op (under compile)."""
    out: torch.Tensor = _masked_affine_op(input, list(noise_shape), p, seed, scale, shift, fill)
    return out
