"""CPU kernel in numba: the fused bias epilogue, ``activation(x + bias) * mask (+ residual)``.

One chunk function per activation: numba unifies a variable's type across branches, and
GELU's float64 constants would otherwise turn float32 arithmetic into float64 on every path.
Each walks the chunk's rows in segments so that the bias index advances without a modulo.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dropkit.kernels._cpu_stream import _philox_chunk
from dropkit.kernels._philox import CHUNK


@njit(cache=True, inline="never")
def _chunk_bias_plain(x, out, bits, bias, residual, has_residual, col, thr, scale):  # type: ignore[no-untyped-def]
    j = 0
    while j < x.size:
        seg = min(x.size - j, bias.size - col)
        for t in range(seg):
            y = x[j + t] + bias[col + t]
            # scale - scale: a +0.0 of the array's dtype (scale * 0 would promote to float64).
            d = y * (scale if bits[j + t] >= thr else (scale - scale))
            out[j + t] = d + residual[j + t] if has_residual else d
        j += seg
        col = 0


@njit(cache=True, inline="never")
def _chunk_bias_relu(x, out, bits, bias, residual, has_residual, col, thr, scale):  # type: ignore[no-untyped-def]
    j = 0
    while j < x.size:
        seg = min(x.size - j, bias.size - col)
        for t in range(seg):
            y = x[j + t] + bias[col + t]
            if y < 0:  # NaN stays NaN, and the result is +0.0, as with torch.relu
                y = scale - scale
            d = y * (scale if bits[j + t] >= thr else (scale - scale))
            out[j + t] = d + residual[j + t] if has_residual else d
        j += seg
        col = 0


@njit(cache=True, inline="never")
def _chunk_bias_gelu(x, out, bits, bias, residual, has_residual, col, thr, scale):  # type: ignore[no-untyped-def]
    j = 0
    while j < x.size:
        seg = min(x.size - j, bias.size - col)
        for t in range(seg):
            y = x[j + t] + bias[col + t]
            g = y * 0.5 * (1.0 + math.erf(y * 0.7071067811865476))  # exact GELU, in float64
            d = g * (scale if bits[j + t] >= thr else 0.0)
            out[j + t] = d + residual[j + t] if has_residual else d
        j += seg
        col = 0


@njit(cache=True, parallel=True)
def _bias_stream(x, out, bias, residual, has_residual, k0, k1, thr, scale, act):  # type: ignore[no-untyped-def]
    n = x.size
    width = bias.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        args = (x[lo:hi], out[lo:hi], bits, bias, residual[lo:hi], has_residual, lo % width)
        if act == 0:
            _chunk_bias_plain(*args, thr, scale)
        elif act == 1:
            _chunk_bias_relu(*args, thr, scale)
        else:
            _chunk_bias_gelu(*args, thr, scale)
