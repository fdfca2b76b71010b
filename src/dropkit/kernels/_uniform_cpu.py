"""CPU kernel in numba: open uniforms of the dropkit stream, for the relaxed (Concrete) masks.

Element ``i`` is ``((bits_i >> 9) + 0.5) * 2**-23`` with ``bits_i`` stream element ``i``: 23
random bits, centred in their interval, so every value lies strictly inside (0, 1), is exact in
float32, and ``1 - u`` is exact too (the logit of the relaxed mask needs both). The plain-PyTorch
reference is :func:`dropkit.functional._concrete.stream_open_uniform`; this kernel is tested
against it bit for bit.

This module imports numba; it is imported only when a concrete mask is drawn on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import float64, njit, prange, uint32

from dropkit.kernels._cpu_stream import _SERIAL_BELOW, _key, _philox_chunk, _threads
from dropkit.kernels._philox import CHUNK

__all__ = ["write_concrete_factor", "write_open_uniform"]

_STEP = 2.0**-23


@njit(cache=True, inline="never")
def _chunk_uniform(out, bits):  # type: ignore[no-untyped-def]
    for j in range(out.size):
        out[j] = (float64(bits[j] >> uint32(9)) + 0.5) * _STEP


@njit(cache=True, parallel=True)
def _uniform_parallel(out, k0, k1):  # type: ignore[no-untyped-def]
    n = out.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_uniform(out[lo : min(n, lo + CHUNK)], bits)


@njit(cache=True)
def _uniform_serial(out, k0, k1):  # type: ignore[no-untyped-def]
    n = out.size
    bits = np.empty(CHUNK, np.uint32)
    for c in range((n + CHUNK - 1) // CHUNK):
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_uniform(out[lo : min(n, lo + CHUNK)], bits)


def write_open_uniform(out: torch.Tensor, seed: int) -> None:
    """Fill ``out`` (a contiguous float32 or float64 CPU tensor) with the open uniforms of
    stream elements ``0 .. out.numel()-1``."""
    flat = out.view(-1).numpy()
    k0, k1 = _key(seed)
    if flat.size < _SERIAL_BELOW:
        _uniform_serial(flat, k0, k1)
    else:
        _threads()
        _uniform_parallel(flat, k0, k1)


@njit(cache=True, inline="never")
def _chunk_factor(out, bits, c, k, scale):  # type: ignore[no-untyped-def]
    for j in range(out.size):
        u = (float64(bits[j] >> uint32(9)) + 0.5) * _STEP
        r = u / (1.0 - u)
        power = 1.0
        for _ in range(k):
            power *= r
        out[j] = scale / (1.0 + c * power)


@njit(cache=True, parallel=True)
def _factor_parallel(out, k0, k1, c, k, scale):  # type: ignore[no-untyped-def]
    n = out.size
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, chunk, k0, k1)
        lo = chunk * CHUNK
        _chunk_factor(out[lo : min(n, lo + CHUNK)], bits, c, k, scale)


@njit(cache=True)
def _factor_serial(out, k0, k1, c, k, scale):  # type: ignore[no-untyped-def]
    n = out.size
    bits = np.empty(CHUNK, np.uint32)
    for chunk in range((n + CHUNK - 1) // CHUNK):
        _philox_chunk(bits, chunk, k0, k1)
        lo = chunk * CHUNK
        _chunk_factor(out[lo : min(n, lo + CHUNK)], bits, c, k, scale)


def write_concrete_factor(out: torch.Tensor, seed: int, c: float, k: int, scale: float) -> None:
    """Fill ``out`` (contiguous float32/float64 CPU) with ``scale / (1 + c * (u / (1 - u))**k)``
    for the open uniforms ``u`` of the stream: the relaxed factor ``m = z / (1 - p)`` of concrete
    dropout at temperature ``1 / k`` with ``c = (p / (1 - p))**k``, since
    ``sigmoid(-(logit p + logit u) / t) = 1 / (1 + exp(k logit p) (u / (1 - u))**k)``.

    No logarithm or exponential per element, and in float64 (``(u / (1 - u))**k`` stays below
    2**(24k), inside float64's range for ``k <= 16``), so it vectorizes and never overflows.
    """
    flat = out.view(-1).numpy()
    k0, k1 = _key(seed)
    if flat.size < _SERIAL_BELOW:
        _factor_serial(flat, k0, k1, float64(c), k, float64(scale))
    else:
        _threads()
        _factor_parallel(flat, k0, k1, float64(c), k, float64(scale))
