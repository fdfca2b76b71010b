"""The reference backend: each apply step in plain PyTorch, the ground truth of the kernels."""

from __future__ import annotations

import torch

from dropkit.kernels._layout import placed
from dropkit.kernels._philox import Seed, stream_keep_mask

__all__ = [
    "ACTIVATION_CODES",
    "REFERENCE",
    "ReferenceBackend",
    "affine",
    "bias_dropout",
    "compute_dtype",
    "scaled_mask",
]

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
    """The masked affine map; ``keep`` broadcasts to ``x``, None keeps everything.

    - ``shift == fill == 0`` (dropout and every mask that only scales): ``x * where(keep,
      scale, 0)``, a multiply by the scaled mask, as torch's dropout computes it: a dropped
      NaN or inf gives NaN and a dropped negative gives -0.0, so a NaN is never hidden by the
      draw.
    - otherwise (alpha dropout): ``where(keep, x * scale + shift, fill)``.
    """
    dtype = compute_dtype(x.dtype)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(dtype)
    if keep is not None and not shift and not fill:
        mask = scaled_mask(keep, scale, dtype)
        return (x.to(dtype) * mask).to(x.dtype)
    y = x.to(dtype) * scale
    if shift:
        y = y + shift
    if keep is not None:
        y = torch.where(keep, y, torch.tensor(fill, dtype=y.dtype, device=y.device))
    return y.to(x.dtype)


def scaled_mask(
    keep: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype
) -> torch.Tensor:
    """``where(keep, scale, 0)`` in ``dtype``: the factor that dropout multiplies by."""
    zero = torch.zeros((), dtype=dtype, device=keep.device)
    if isinstance(scale, torch.Tensor):
        return torch.where(keep, scale.to(dtype), zero)
    return torch.where(keep, torch.tensor(scale, dtype=dtype, device=keep.device), zero)


def bias_dropout(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    keep: torch.Tensor,
    scale: float,
    activation: str | None,
) -> torch.Tensor:
    """``activation(x + bias) * where(keep, scale, 0) (+ residual)``, rounded once."""
    dtype = compute_dtype(x.dtype)
    y = x.to(dtype) + bias.to(dtype)
    if activation == "relu":
        y = torch.relu(y)
    elif activation == "gelu":
        y = torch.nn.functional.gelu(y)
    y = y * scaled_mask(keep, scale, dtype)
    if residual is not None:
        y = y + residual.to(dtype)
    return y.to(x.dtype)


class ReferenceBackend:
    """The ground truth: every op in plain PyTorch, on every device and dtype.

    Every backend has these methods with these arguments; each returns a new tensor.
    """

    name = "reference"

    def masked_affine(
        self,
        x: torch.Tensor,
        noise_shape: tuple[int, ...],
        p: float,
        seed: Seed,
        scale: float,
        shift: float = 0.0,
        fill: float = 0.0,
    ) -> torch.Tensor:
        """:func:`affine` of ``x`` with ``keep`` the stream mask of ``noise_shape``
        broadcast to ``x``, in the layout of ``torch.empty_like(x)``."""
        keep = stream_keep_mask(noise_shape, p, seed, x.device)
        return placed(x, affine(x, keep, scale, shift, fill))

    def keep_mask(
        self, shape: tuple[int, ...], p: float, seed: Seed, device: torch.device
    ) -> torch.Tensor:
        """The stream keep mask of ``shape`` (bool)."""
        return stream_keep_mask(shape, p, seed, device)

    def scaled_mask(
        self,
        shape: tuple[int, ...],
        p: float,
        seed: Seed,
        scale: float,
        dtype: torch.dtype,
        device: torch.device,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``where(keep, scale, 0)`` in ``dtype``, ``keep`` the stream mask of ``shape``: what
        :func:`affine` multiplies by when shift and fill are 0. Written into ``out`` (a
        contiguous tensor of ``shape`` and ``dtype``) if given."""
        mask = scaled_mask(stream_keep_mask(shape, p, seed, device), scale, dtype)
        return mask if out is None else out.copy_(mask)

    def bias_dropout(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        residual: torch.Tensor | None,
        p: float,
        seed: Seed,
        scale: float,
        activation: str | None,
    ) -> torch.Tensor:
        """``activation(x + bias) * where(keep, scale, 0) (+ residual)``, keep of x's shape,
        in the layout of ``torch.empty_like(x)``."""
        keep = stream_keep_mask(tuple(x.shape), p, seed, x.device)
        return placed(x, bias_dropout(x, bias, residual, keep, scale, activation))


REFERENCE = ReferenceBackend()
