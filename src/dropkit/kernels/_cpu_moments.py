"""CPU kernels in numba for moment propagation: the Gaussian moment rules in one pass each.

The plain-PyTorch functions of :mod:`dropkit.mc._moments._gaussian` are the reference; these
compute the same closed forms element by element, with the same care (no variance as a
difference of large second moments, standardized values clamped to [-9, 9], NaN standardized
values set to 0 where the reference does), for float32 CPU tensors. Each function reads its
inputs once and writes two fresh outputs: on CPU the reference's dozen temporaries per rule
(each a fresh allocation, so page faults, and a pass over memory) cost more than its
arithmetic.

The arithmetic is float32, as the reference's, and written without calls, so that LLVM
vectorizes the loops: ``exp`` by range reduction and Cephes' polynomial, ``erfc`` by the
Chebyshev fit of Press et al., "Numerical Recipes" (2nd ed., 1992, section 6.2, ``erfcc``),
whose relative error is below 1.2e-7 everywhere, float32's resolution (so float64 tensors stay
on the reference). Unlike torch's ``ndtr`` (``(1 + erf(z / sqrt 2)) / 2``, exact only to an
absolute 6e-8 in float32), ``Phi`` keeps its relative accuracy in the lower tail.
This module imports numba; :mod:`dropkit.mc._moments._gaussian` imports it on first use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from dropkit.kernels._cpu_stream import _SERIAL_BELOW, _threads

__all__ = ["dropout_moments", "max_moments", "relu_moments"]

_Moments = tuple[torch.Tensor, torch.Tensor]

_F = np.float32
# Constants as float32 scalars: a Python float in a float32 expression would make it float64.
_Z_LIMIT = _F(9.0)  # as the reference's
_ZERO, _HALF, _ONE = _F(0.0), _F(0.5), _F(1.0)
_TINY = _F(np.finfo(np.float32).tiny * 1e8)  # the reference's v + tiny * 1e8
_TINIEST = _F(np.finfo(np.float32).tiny)
_INV_SQRT_2PI = _F(1.0 / math.sqrt(2.0 * math.pi))
_INV_SQRT_2 = _F(1.0 / math.sqrt(2.0))
_LOG_INV_SQRT_2PI = _F(math.log(1.0 / math.sqrt(2.0 * math.pi)))
_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693359375)  # ln 2 in two parts (Cephes' expf): k * _LN2_HI is exact
_LN2_LO = _F(-2.12194440e-4)
_EXP_LO, _EXP_HI = _F(-87.0), _F(88.0)
# Cephes' expf polynomial on |r| <= ln(2) / 2 (relative error about 1 float32 ulp).
_E5, _E4, _E3 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_E2, _E1, _E0 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
# Press et al.'s erfcc: erfc(x) = t exp(-x^2 + P(t)), t = 1 / (1 + x / 2), for x >= 0.
_C9, _C8, _C7 = _F(0.17087277), _F(-0.82215223), _F(1.48851587)
_C6, _C5, _C4 = _F(-1.13520398), _F(0.27886807), _F(-0.18628806)
_C3, _C2, _C1, _C0 = _F(0.09678418), _F(0.37409196), _F(1.00002368), _F(-1.26551223)
_BIAS = np.int32(127)
_CHUNK = 1 << 14  # elements per chunk of a parallel loop


@intrinsic
def _pointer(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.int64), codegen


@intrinsic
def _from_bits(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose bit pattern is the int32 ``bits``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@njit(inline="always")
def _exp(x):  # type: ignore[no-untyped-def]
    """float32 ``exp(x)`` for x in [-87, 88] (clamped there) without a call, so that it
    vectorizes: ``2**k exp(r)`` with Cephes' polynomial for ``exp(r)``."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    k = math.floor(x * _LOG2E + _HALF)
    kf = _F(k)
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = ((((_E5 * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0
    p = p * r * r + r + _ONE
    return p * _from_bits(np.int32((np.int32(k) + _BIAS) << 23))


@njit(inline="always")
def _ndtr(z, e):  # type: ignore[no-untyped-def]
    """``Phi(z)`` given ``e = exp(-z**2 / 2)``: ``erfc(|z| / sqrt 2) / 2`` by Press et al.'s
    fit (relative error < 1.2e-7), reflected for z > 0."""
    t = _ONE / (_ONE + _HALF * _INV_SQRT_2 * abs(z))
    poly = ((((_C9 * t + _C8) * t + _C7) * t + _C6) * t + _C5) * t + _C4
    poly = (((poly * t + _C3) * t + _C2) * t + _C1) * t + _C0
    half_tail = _HALF * t * e * _exp(poly)  # Phi(-|z|)
    return _ONE - half_tail if z > _ZERO else half_tail


@njit(inline="always")
def _clamp_zero(x):  # type: ignore[no-untyped-def]
    """``clamp_min(x, 0)``: NaN stays NaN, as torch's."""
    return x if x > _ZERO else (x if x != x else _ZERO)


# _below: where the standardized value is clamped from below (m / sd < -9), Phi is taken as 0,
# as the reference's float32 ndtr has it there. Phi(-9) = 1.1e-19 is Phi of the clamped z, not
# of the input's: with it, E = m Phi(-9) + sd phi(-9) is negative for a large negative m (the
# mean of a ReLU at -1e30 with v = 0 came out -1.1e11) and Var grows as m**2 Phi(-9) (1.1e21
# for a fixed input of -1e20, inf at -1e30), where the exact moments are about sd * 1e-19 and
# v * 1e-19: below float32's resolution of sd and v, as the clamp intends.

# Each rule: an element body (inlined), a loop over a range of elements, and an entry point
# that takes data pointers (no arrays for numba's dispatcher to type) and runs the loop on one
# thread, or in chunks on numba's threads (as many as torch's) for large tensors.


@njit(inline="always")
def _relu_at(m, v, mean, var, i):  # type: ignore[no-untyped-def]
    mi = m[i]
    vi = v[i]
    raw = mi / math.sqrt(vi + _TINY)  # the reference's: z = 0 where m = v = 0
    z = min(max(raw, -_Z_LIMIT), _Z_LIMIT)  # NaN stays NaN, as the reference's clamp
    e = _exp(-_HALF * z * z)
    cdf = _ndtr(z, e)
    cdf = _ZERO if raw < -_Z_LIMIT else cdf  # see _below (a select: the loop vectorizes)
    b = e * _INV_SQRT_2PI * math.sqrt(vi)  # sd phi(z)
    a = mi * cdf
    upper = _ONE - cdf
    inner = a * upper + b * (upper - cdf)  # a (1 - Phi) + b (1 - 2 Phi)
    mean[i] = a + b
    var[i] = _clamp_zero(cdf * vi + mi * inner - b * b)


@njit(inline="always")
def _dropout_at(m, v, mean, var, i, has_var, copy, k, cv, cs):  # type: ignore[no-untyped-def]
    mi = m[i]
    mean[i] = mi if copy else mi * k
    var[i] = v[i] * cv + mi * mi * cs if has_var else mi * mi * cs


@njit(inline="always")
def _max_at(m1, v1, m2, v2, mean, var, i, absent):  # type: ignore[no-untyped-def]
    a_m, a_v, b_m, b_v = m1[i], v1[i], m2[i], v2[i]
    d = a_m - b_m
    theta = math.sqrt(a_v + b_v)
    raw = d / max(theta, _TINIEST)
    z = min(max(raw, -_Z_LIMIT), _Z_LIMIT)
    z = _ZERO if z != z else z  # 0/0 or inf - inf: the reference's nan_to_num
    e = _exp(-_HALF * z * z)
    cdf = _ndtr(z, e)
    cdf = _ZERO if raw < -_Z_LIMIT else cdf  # see _below (a select: the loop vectorizes)
    b = _exp(-_HALF * z * z + _LOG_INV_SQRT_2PI) * theta  # theta phi(z)
    tail = _ONE - cdf
    dc = d * cdf
    out_m = (b_m + dc) + b
    inner = dc * tail - b * (cdf - tail)
    out_v = _clamp_zero(cdf * a_v + b_v * tail + d * inner - b * b)
    if absent:  # -inf is "no element" (padding): the other operand as it is
        second = b_m == -np.inf
        first = a_m == -np.inf
        out_m = a_m if second else (b_m if first else out_m)
        out_v = a_v if second else (b_v if first else out_v)
    mean[i] = out_m
    var[i] = out_v


@njit(cache=True, error_model="numpy")
def _relu_range(m, v, mean, var, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        _relu_at(m, v, mean, var, i)


@njit(cache=True, error_model="numpy")
def _dropout_range(m, v, mean, var, lo, hi, has_var, copy, k, cv, cs):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        _dropout_at(m, v, mean, var, i, has_var, copy, k, cv, cs)


@njit(cache=True, error_model="numpy")
def _max_range(m1, v1, m2, v2, mean, var, lo, hi, absent):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        _max_at(m1, v1, m2, v2, mean, var, i, absent)


@njit(cache=True, error_model="numpy", parallel=True)
def _relu_chunks(m, v, mean, var, n):  # type: ignore[no-untyped-def]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        _relu_range(m, v, mean, var, c * _CHUNK, min(n, (c + 1) * _CHUNK))


@njit(cache=True, error_model="numpy", parallel=True)
def _dropout_chunks(m, v, mean, var, n, has_var, copy, k, cv, cs):  # type: ignore[no-untyped-def]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        _dropout_range(m, v, mean, var, lo, hi, has_var, copy, k, cv, cs)


@njit(cache=True, error_model="numpy", parallel=True)
def _max_chunks(m1, v1, m2, v2, mean, var, n, absent):  # type: ignore[no-untyped-def]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        _max_range(m1, v1, m2, v2, mean, var, c * _CHUNK, min(n, (c + 1) * _CHUNK), absent)


@njit(cache=True)
def _relu(mp, vp, meanp, varp, n, serial):  # type: ignore[no-untyped-def]
    m = carray(_pointer(mp), (n,), np.float32)
    v = carray(_pointer(vp), (n,), np.float32)
    mean = carray(_pointer(meanp), (n,), np.float32)
    var = carray(_pointer(varp), (n,), np.float32)
    if serial:
        _relu_range(m, v, mean, var, 0, n)
    else:
        _relu_chunks(m, v, mean, var, n)


@njit(cache=True)
def _dropout(mp, vp, meanp, varp, n, has_var, copy, keep, c_var, c_square, serial):  # type: ignore[no-untyped-def]
    m = carray(_pointer(mp), (n,), np.float32)
    v = carray(_pointer(vp), (n if has_var else 0,), np.float32)
    mean = carray(_pointer(meanp), (n,), np.float32)
    var = carray(_pointer(varp), (n,), np.float32)
    k, cv, cs = _F(keep), _F(c_var), _F(c_square)
    if serial:
        _dropout_range(m, v, mean, var, 0, n, has_var, copy, k, cv, cs)
    else:
        _dropout_chunks(m, v, mean, var, n, has_var, copy, k, cv, cs)


@njit(cache=True)
def _max(m1p, v1p, m2p, v2p, meanp, varp, n, absent, serial):  # type: ignore[no-untyped-def]
    m1 = carray(_pointer(m1p), (n,), np.float32)
    v1 = carray(_pointer(v1p), (n,), np.float32)
    m2 = carray(_pointer(m2p), (n,), np.float32)
    v2 = carray(_pointer(v2p), (n,), np.float32)
    mean = carray(_pointer(meanp), (n,), np.float32)
    var = carray(_pointer(varp), (n,), np.float32)
    if serial:
        _max_range(m1, v1, m2, v2, mean, var, 0, n, absent)
    else:
        _max_chunks(m1, v1, m2, v2, mean, var, n, absent)


# ------------------------------------------------------------------ torch-facing


def relu_moments(m: torch.Tensor, v: torch.Tensor) -> _Moments:
    """The reference's ``relu_moments`` for contiguous float32 CPU ``m`` and ``v`` of one
    shape."""
    mean = torch.empty_like(m)
    var = torch.empty_like(m)
    n = m.numel()
    serial = n < _SERIAL_BELOW or torch.get_num_threads() == 1
    if not serial:
        _threads()  # numba's threads follow torch's
    _relu(m.data_ptr(), v.data_ptr(), mean.data_ptr(), var.data_ptr(), n, serial)
    return mean, var


def dropout_moments(m: torch.Tensor, v: torch.Tensor | None, p: float, scale: float) -> _Moments:
    """The reference's ``dropout_moments`` with ``shift = fill = 0`` for contiguous float32
    CPU ``m`` (and ``v``, of its shape, or None)."""
    q = 1.0 - p
    keep = q * scale
    n = m.numel()
    serial = n < _SERIAL_BELOW or torch.get_num_threads() == 1
    if not serial:
        _threads()
    mean = torch.empty_like(m)
    var = torch.empty_like(m)
    _dropout(
        m.data_ptr(),
        m.data_ptr() if v is None else v.data_ptr(),
        mean.data_ptr(),
        var.data_ptr(),
        n,
        v is not None,
        abs(keep - 1.0) < 1e-12,
        keep,
        q * scale * scale,
        q * p * scale * scale,
        serial,
    )
    return mean, var


def max_moments(
    m1: torch.Tensor, v1: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor, absent: bool
) -> _Moments:
    """The reference's ``max_moments`` for float32 CPU tensors of one shape; strided inputs
    (max pooling's window views) are copied first, as the reference's first pass reads them."""
    m1, v1, m2, v2 = (t.contiguous() for t in (m1, v1, m2, v2))
    mean = torch.empty_like(m1)
    var = torch.empty_like(m1)
    pointers = (t.data_ptr() for t in (m1, v1, m2, v2, mean, var))
    n = m1.numel()
    serial = n < _SERIAL_BELOW or torch.get_num_threads() == 1
    if not serial:
        _threads()
    _max(*pointers, n, absent, serial)
    return mean, var
