"""The element-mask op as a ``torch.library`` custom op, so that ``torch.compile`` keeps it.

Under ``torch.compile``, the eager path breaks the graph twice per call: the seed is turned
into a Python int, and the kernel is opaque Python. Here the seed stays a 0-dim tensor drawn
inside the graph (``torch.randint`` from the default generator, as in eager mode) and the op
is registered with a fake (meta) implementation and an autograd formula, so a compiled model
is one graph. Outside compilation the cheaper ``autograd.Function`` path is used: dispatching a
custom op costs tens of microseconds per call, more than the kernel on small tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dropkit.functional._validation import _GOLDEN, _rank
from dropkit.kernels._dispatch import masked_affine

__all__ = ["compiled_masked_affine", "draw_seed"]


@torch.library.custom_op("dropkit::masked_affine", mutates_args=())
def _masked_affine_op(
    x: torch.Tensor,
    noise_shape: Sequence[int],
    p: float,
    seed: torch.Tensor,
    rank: int,
    scale: float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    # Seeds of 2**63 and above travel as negative int64; a drawn seed gets the rank folded in
    # (rank 0 for explicit seeds), as resolve_seed does in eager mode.
    value = (int(seed) + rank * _GOLDEN) % 2**64
    return masked_affine(x, tuple(noise_shape), p, value, scale, shift, fill)


@_masked_affine_op.register_fake
def _(
    x: torch.Tensor,
    noise_shape: Sequence[int],
    p: float,
    seed: torch.Tensor,
    rank: int,
    scale: float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, noise_shape, p, seed, rank, scale, _, _ = inputs
    ctx.noise_shape, ctx.p, ctx.rank, ctx.scale = noise_shape, p, rank, scale
    ctx.save_for_backward(seed)  # a 0-dim int64 tensor: 8 bytes


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    (seed,) = ctx.saved_tensors
    grad_input = _masked_affine_op(
        grad, ctx.noise_shape, ctx.p, seed, ctx.rank, ctx.scale, 0.0, 0.0
    )
    return grad_input, None, None, None, None, None, None, None


_masked_affine_op.register_autograd(_backward, setup_context=_setup_context)


def draw_seed(seed: int | None) -> torch.Tensor:
    """The seed as a 0-dim int64 tensor: drawn from the default generator when None."""
    if seed is None:
        return torch.randint(0, 2**62, (), dtype=torch.int64)
    return torch.tensor(seed if seed < 2**63 else seed - 2**64, dtype=torch.int64)


def compiled_masked_affine(
    input: torch.Tensor,
    noise_shape: tuple[int, ...],
    p: float,
    seed: int | None,
    scale: float,
    shift: float,
    fill: float,
    inplace: bool,
) -> torch.Tensor:
    """The element-mask op through the custom op (used while ``torch.compile`` traces)."""
    rank = _rank() if seed is None else 0
    out = _masked_affine_op(input, list(noise_shape), p, draw_seed(seed), rank, scale, shift, fill)
    return input.copy_(out) if inplace else out
