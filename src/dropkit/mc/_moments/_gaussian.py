"""Moments of functions of independent Gaussian inputs: the arithmetic of moment propagation.

Each function takes the mean ``m`` and variance ``v`` of a Gaussian input (element-wise tensors)
and returns the mean and variance of the output. The closed forms are written so that no
variance is computed as a difference of two large second moments: with ``v`` small next to
``m**2`` that difference is all rounding error in float32.

These plain-PyTorch functions are the reference. ``relu_moments``, ``dropout_moments`` and
``max_moments`` run a numba kernel in one pass instead (:mod:`dropkit.kernels._cpu_moments`)
for float32 CPU tensors outside autograd where :func:`dropkit.kernels.select` picks the numba
backend (numba installed; not inside ``dropkit.backend("reference")`` nor with
``DROPKIT_BACKEND=reference``): the reference's temporaries,
each a fresh allocation and a pass over memory, cost more than its arithmetic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

from dropkit.kernels import select

__all__ = [
    "dropout_moments",
    "leaky_relu_moments",
    "max_moments",
    "quadrature_moments",
    "relu_moments",
]

Moments = tuple[torch.Tensor, torch.Tensor]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Standardized values are clamped to [-9, 9]: beyond, the normal density and tail (< 1e-18) only
# add terms below float32's resolution, and smaller ones underflow to subnormal floats, on
# which CPUs are 10-100x slower. Clamping also keeps z finite where the standard deviation is 0.
_Z_LIMIT = 9.0


_loaded: list[ModuleType] = []  # the kernel module, once imported


def _kernels(x: torch.Tensor, *others: torch.Tensor | None) -> ModuleType | None:
    """The numba moment kernels if they run on ``x`` and ``others`` (float32, CPU, of one
    shape, no autograd), else None.

    Every input is checked, not only the first: a variance that requires grad beside a mean
    that does not must take the reference (the kernel's outputs have no gradient), and a
    pointer into another device's memory must never reach the kernel.
    """
    grad = torch.is_grad_enabled()
    for t in (x, *others):
        if t is None:
            continue
        if (
            t.dtype is not torch.float32
            or not t.is_cpu
            or t.shape != x.shape
            or (grad and t.requires_grad)
        ):
            return None
    try:
        chosen = select(x).name  # the CPU kernels' one selection point (backend(), env)
    except RuntimeError:  # a backend forced that does not run on x (triton on CPU)
        return None
    if chosen != "numba":
        return None
    if not _loaded:
        from dropkit.kernels import _cpu_moments  # imports numba

        _loaded.append(_cpu_moments)
    return _loaded[0]


def _pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _standardized(d: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    z = d / sd.clamp_min(torch.finfo(sd.dtype).tiny)
    return torch.nan_to_num(z, nan=0.0).clamp(-_Z_LIMIT, _Z_LIMIT)


def dropout_moments(
    m: torch.Tensor, v: torch.Tensor | None, p: float, scale: float, shift: float, fill: float
) -> Moments:
    """``y = where(keep, scale * x + shift, fill)`` with ``keep ~ Bernoulli(1 - p)``.

    Inverted dropout is ``(1/(1-p), 0, 0)``, which gives Wang & Manning's
    ``Var[y] = (Var[x] + E[x]^2) / (1 - p) - E[x]^2``; alpha dropout is its own constants; Gaussian
    dropout (multiplicative noise of mean 1 and variance ``p/(1-p)``) has the same two moments
    as inverted dropout. By the law of total variance,
    ``Var[y] = q * scale^2 * Var[x] + q * p * (scale * E[x] + shift - fill)^2`` with ``q = 1 - p``.
    ``v=None`` is a fixed input (variance 0).
    """
    q = 1.0 - p
    if shift == 0.0 and fill == 0.0:  # the common case, in two or three passes
        kernels = _kernels(m, v)
        if kernels is not None and m.is_contiguous() and (v is None or v.is_contiguous()):
            return kernels.dropout_moments(m, v, p, scale)  # type: ignore[no-any-return]
        mean = m.clone() if abs(q * scale - 1.0) < 1e-12 else m * (q * scale)
        if v is None:
            return mean, m.square().mul_(q * p * scale**2)
        return mean, (v * (q * scale * scale)).addcmul_(m, m, value=q * p * scale**2)
    if v is None:
        v = torch.zeros_like(m)
    kept = m * scale + shift
    mean = kept * q + p * fill
    var = (kept - fill).square_().mul_(q * p).add_(v, alpha=q * scale * scale)
    return mean, var


# The functions below work in place on their few temporaries: on CPU a fresh tensor costs more
# than the arithmetic (page faults), and these run on every activation.


def relu_moments(m: torch.Tensor, v: torch.Tensor) -> Moments:
    """Mean and variance of ``max(x, 0)`` for ``x ~ N(m, v)``: the rectified Gaussian (exact).

    With ``z = m / sd``, ``a = m Phi(z)`` and ``b = sd phi(z)``: ``E = a + b`` and
    ``Var = v Phi(z) + m (a (1 - Phi(z)) + b (1 - 2 Phi(z))) - b^2``, the expansion of
    ``E[y^2] - E[y]^2`` without its cancelling terms (Frey & Hinton, "Variational learning in
    nonlinear Gaussian belief networks", Neural Computation 1999).
    """
    kernels = _kernels(m, v)
    if kernels is not None and m.is_contiguous() and v.is_contiguous():
        return kernels.relu_moments(m, v)  # type: ignore[no-any-return]
    z = (v + torch.finfo(v.dtype).tiny * 1e8).rsqrt_().mul_(m).clamp_(-_Z_LIMIT, _Z_LIMIT)
    cdf = torch.special.ndtr(z)
    b = z.square_().mul_(-0.5).exp_().mul_(_INV_SQRT_2PI).mul_(v.sqrt())  # sd phi(z)
    a = m * cdf
    mean = a + b
    upper = torch.rsub(cdf, 1.0)
    inner = a.mul_(upper).addcmul_(b, upper.sub_(cdf))  # a (1 - Phi) + b (1 - 2 Phi)
    var = cdf.mul_(v).addcmul_(m, inner).addcmul_(b, b, value=-1.0)
    return mean, var.clamp_min_(0.0)


def leaky_relu_moments(m: torch.Tensor, v: torch.Tensor, slope: float) -> Moments:
    """``y = (1 - a) relu(x) + a x`` (exact): the ReLU moments plus ``Cov(relu(x), x) = v Phi(z)``
    (Stein's lemma)."""
    rm, rv = relu_moments(m, v)
    cdf = torch.special.ndtr(_standardized(m, v.sqrt()))
    a = slope
    mean = rm * (1.0 - a) + m * a
    var = rv * (1.0 - a) ** 2 + v * (a * a) + v * cdf * (2.0 * a * (1.0 - a))
    return mean, var.clamp_min(0.0)


@functools.lru_cache(maxsize=8)
def _hermite(nodes: int) -> tuple[tuple[float, float], ...]:
    t, w = np.polynomial.hermite.hermgauss(nodes)
    return tuple(
        (float(ti) * math.sqrt(2.0), float(wi) / math.sqrt(math.pi))
        for ti, wi in zip(t, w, strict=True)
    )


def quadrature_moments(
    f: Callable[[torch.Tensor], torch.Tensor], m: torch.Tensor, v: torch.Tensor, nodes: int = 32
) -> Moments:
    """Mean and variance of ``f(x)``, ``x ~ N(m, v)``, by Gauss-Hermite quadrature.

    Exact for polynomials of degree < 2 * nodes, and accurate for the smooth activations
    (GELU, SiLU, tanh, sigmoid, ...). Deviations from ``f(m)`` are accumulated, so the
    variance does not cancel catastrophically (Golub & Welsch, "Calculation of Gauss quadrature
    rules", Math. Comp. 1969).
    """
    center = f(m)
    sd = v.sqrt()
    first = torch.zeros_like(center)
    second = torch.zeros_like(center)
    for t, w in _hermite(nodes):
        d = f(m + sd * t) - center
        first += w * d
        second += w * d * d
    return center + first, (second - first * first).clamp_min(0.0)


def max_moments(
    m1: torch.Tensor,
    v1: torch.Tensor,
    m2: torch.Tensor,
    v2: torch.Tensor,
    *,
    absent: bool = False,
) -> Moments:
    """Mean and variance of ``max(x1, x2)`` for independent Gaussians (Clark, "The greatest of a
    finite set of random variables", Operations Research 1961).

    With ``d = m1 - m2``, ``theta = sqrt(v1 + v2)``, ``z = d / theta`` and ``b = theta phi(z)``:
    ``E = m2 + d Phi(z) + b`` and
    ``Var = v1 Phi(z) + v2 Phi(-z) + d (d Phi(z) Phi(-z) - b (Phi(z) - Phi(-z))) - b^2``.
    The result is not Gaussian; chained over a pooling window it is treated as one, the
    approximation of Clark's paper. ``absent=True``: ``-inf`` means
    "no element" (padding), and the other operand is returned as it is.
    """
    kernels = _kernels(m1, v1, m2, v2)
    if kernels is not None:
        return kernels.max_moments(m1, v1, m2, v2, absent)  # type: ignore[no-any-return]
    d = m1 - m2
    theta = (v1 + v2).sqrt_()
    z = torch.div(d, theta.clamp_min(torch.finfo(theta.dtype).tiny))
    z = z.clamp_(-_Z_LIMIT, _Z_LIMIT).nan_to_num_(0.0)
    cdf = torch.special.ndtr(z)
    b = z.square_().mul_(-0.5).add_(math.log(_INV_SQRT_2PI)).exp_().mul_(theta)
    tail = theta.copy_(cdf).neg_().add_(1.0)
    dc = d * cdf
    mean = (m2 + dc).add_(b)
    inner = dc.mul_(tail).addcmul_(b, cdf - tail, value=-1.0)
    var = cdf.mul_(v1).addcmul_(v2, tail).addcmul_(d, inner).addcmul_(b, b, value=-1.0)
    var = var.clamp_min_(0.0)
    if absent:
        first_absent, second_absent = torch.isneginf(m1), torch.isneginf(m2)
        mean = torch.where(second_absent, m1, torch.where(first_absent, m2, mean))
        var = torch.where(second_absent, v1, torch.where(first_absent, v2, var))
    return mean, var
