"""The reference apply step: ``where(keep, x * scale + shift, fill)`` in plain PyTorch."""

from __future__ import annotations

import torch

__all__ = ["ACTIVATION_CODES", "affine", "bias_dropout", "compute_dtype"]

#: The fused ops' activations, as the integer codes the CPU and GPU kernels branch on.
ACTIVATION_CODES = {None: 0, "relu": 1, "gelu": 2}

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are computed in float32 and rounded once, on every backend."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def affine(
    x: torch.Tensor,
    keep: torch.Tensor | None,
    scale: torch.Tensor | float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    """``where(keep, x * scale + shift, fill)``; ``keep`` broadcasts, None keeps everything."""
    dtype = compute_dtype(x.dtype)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(dtype)
    y = x.to(dtype) * scale
    if shift:
        y = y + shift
    if keep is not None:
        # where, not a multiply by the mask: a dropped inf or NaN must become `fill`, not NaN.
        y = torch.where(keep, y, torch.tensor(fill, dtype=y.dtype, device=y.device))
    return y.to(x.dtype)


def bias_dropout(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    keep: torch.Tensor,
    scale: float,
    activation: str | None,
) -> torch.Tensor:
    """``where(keep, activation(x + bias) * scale, 0) (+ residual)``, rounded once."""
    dtype = compute_dtype(x.dtype)
    y = x.to(dtype) + bias.to(dtype)
    if activation == "relu":
        y = torch.relu(y)
    elif activation == "gelu":
        y = torch.nn.functional.gelu(y)
    y = torch.where(keep, y * scale, torch.zeros((), dtype=dtype, device=y.device))
    if residual is not None:
        y = y + residual.to(dtype)
    return y.to(x.dtype)
