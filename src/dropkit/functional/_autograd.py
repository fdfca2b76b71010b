"""The one autograd op behind every stochastic function, with a mask-free backward.

Each op describes its noise as a small frozen object holding only Python numbers (shape, p,
seed, constants). Forward samples the noise from it; backward samples it again from the same
seed instead of reading a saved mask, so nothing input-sized is kept for backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dropkit.kernels._philox import stream_keep_mask, stream_normal

__all__ = [
    "ElementMask",
    "GaussianNoise",
    "Noise",
    "alpha_constants",
    "apply_noise",
    "inverted_scale",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class Noise(Protocol):
    """``out = where(keep, input * scale + shift, fill)``, with ``keep`` and ``scale`` sampled."""

    @property
    def shift(self) -> float: ...

    @property
    def fill(self) -> float: ...

    def sample(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | float]:
        """``(keep, scale)``: a bool mask broadcastable to the input (None: keep all), a factor."""
        ...


@dataclass(frozen=True)
class ElementMask:
    """A Bernoulli(1-p) keep mask of ``noise_shape`` from the dropkit stream, broadcast on use."""

    noise_shape: tuple[int, ...]
    p: float
    seed: int
    scale: float
    shift: float = 0.0
    fill: float = 0.0

    def sample(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | float]:
        return stream_keep_mask(self.noise_shape, self.p, self.seed, device), self.scale


@dataclass(frozen=True)
class GaussianNoise:
    """Multiplicative noise ``1 + sigma * z`` with ``z ~ N(0, 1)`` from the dropkit stream."""

    noise_shape: tuple[int, ...]
    sigma: float
    seed: int
    shift: float = 0.0
    fill: float = 0.0

    def sample(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | float]:
        return None, 1.0 + self.sigma * stream_normal(self.noise_shape, self.seed, device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs are computed in float32 and rounded once, as the kernels do.
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _affine(
    x: torch.Tensor,
    keep: torch.Tensor | None,
    scale: torch.Tensor | float,
    shift: float,
    fill: float,
) -> torch.Tensor:
    dtype = _compute_dtype(x.dtype)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(dtype)
    y = x.to(dtype) * scale
    if shift:
        y = y + shift
    if keep is not None:
        # where, not a multiply by the mask: a dropped inf or NaN must become `fill`, not NaN.
        y = torch.where(keep, y, torch.tensor(fill, dtype=y.dtype, device=y.device))
    return y.to(x.dtype)


class _NoiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, noise: Noise, inplace: bool) -> torch.Tensor:
        keep, scale = noise.sample(input.device)
        out = _affine(input, keep, scale, noise.shift, noise.fill)
        ctx.noise = noise
        if inplace:
            ctx.mark_dirty(input)
            return input.copy_(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        keep, scale = ctx.noise.sample(grad_output.device)
        return _affine(grad_output, keep, scale, 0.0, 0.0), None, None


def apply_noise(input: torch.Tensor, noise: Noise, inplace: bool) -> torch.Tensor:
    """Apply ``noise`` to ``input`` through the mask-free autograd op."""
    out: torch.Tensor = _NoiseFunction.apply(input, noise, inplace)  # type: ignore[no-untyped-call]
    return out


def inverted_scale(p: float) -> float:
    """``1 / (1 - p)``, the factor that keeps the expectation; 0 at p = 1 (all dropped)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def alpha_constants(p: float) -> tuple[float, float, float]:
    """``(scale, shift, fill)`` of alpha dropout (Klambauer et al. 2017, arXiv:1706.02515).

    Dropped units are set to SELU's negative saturation ``alpha' = -lambda * alpha`` and the
    result is transformed by ``a * y + b`` so that zero mean and unit variance are kept.
    """
    alpha_prime = -1.7580993408473766
    if p >= 1.0:
        return 0.0, 0.0, 0.0
    a = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * alpha_prime**2))
    b = -a * alpha_prime * p
    return a, b, a * alpha_prime + b
