"""CPU kernels in numba for inputs that are not one contiguous run: strided layouts, broadcast
masks.

An input that is not contiguous (channels_last, transposed, a slice, an expanded view) is read
where it lies, and the output is written in the layout torch.empty_like gives. The mask is
defined on LOGICAL indices, so each task still takes one chunk of CHUNK consecutive logical
elements (one Philox chunk): it gathers them into a contiguous buffer, runs the contiguous
chunk body on it, and scatters the result. The bits are those of a contiguous input, and no
input-sized copy is made. Tensors arrive collapsed to 4 dims (shape and element strides);
the memory is a flat array spanning every element the strides reach.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dropkit.kernels._cpu_stream import _chunk_bf16, _chunk_f16, _chunk_float, _philox_chunk
from dropkit.kernels._philox import CHUNK


@njit(cache=True, inline="always")
def _unravel(lo, shape):  # type: ignore[no-untyped-def]
    """The 4-dim index of logical element ``lo``: where a gather or scatter starts."""
    i3 = lo % shape[3]
    rest = lo // shape[3]
    i2 = rest % shape[2]
    rest //= shape[2]
    return rest // shape[1], rest % shape[1], i2, i3


@njit(cache=True, inline="never")
def _gather(src, strides, shape, lo, count, buf):  # type: ignore[no-untyped-def]
    """``buf[:count]`` = the elements of logical indices ``lo .. lo+count-1``."""
    s1, s2, s3 = shape[1], shape[2], shape[3]
    i0, i1, i2, i3 = _unravel(lo, shape)
    step = strides[3]
    j = 0
    while j < count:
        run = min(count - j, s3 - i3)
        at = i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * step
        for t in range(run):
            buf[j + t] = src[at + t * step]
        j += run
        i3 = 0
        i2 += 1
        if i2 == s2:
            i2 = 0
            i1 += 1
            if i1 == s1:
                i1 = 0
                i0 += 1


@njit(cache=True, inline="never")
def _scatter(buf, dst, strides, shape, lo, count):  # type: ignore[no-untyped-def]
    """The elements of logical indices ``lo .. lo+count-1`` = ``buf[:count]``."""
    s1, s2, s3 = shape[1], shape[2], shape[3]
    i0, i1, i2, i3 = _unravel(lo, shape)
    step = strides[3]
    j = 0
    while j < count:
        run = min(count - j, s3 - i3)
        at = i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * step
        for t in range(run):
            dst[at + t * step] = buf[j + t]
        j += run
        i3 = 0
        i2 += 1
        if i2 == s2:
            i2 = 0
            i1 += 1
            if i1 == s1:
                i1 = 0
                i0 += 1


@njit(cache=True, inline="never")
def _strided_float_task(x, out, shape, xs, os, c, n, k0, k1, thr, scale, shift, fill, bits, xb, ob):  # type: ignore[no-untyped-def]
    _philox_chunk(bits, c, k0, k1)
    lo = c * CHUNK
    count = min(n, lo + CHUNK) - lo
    _gather(x, xs, shape, lo, count, xb)
    _chunk_float(xb[:count], ob[:count], bits, thr, scale, shift, fill)
    _scatter(ob, out, os, shape, lo, count)


@njit(cache=True, parallel=True)
def _strided_float_parallel(x, out, shape, xs, os, n, k0, k1, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        xb = np.empty(CHUNK, x.dtype)
        ob = np.empty(CHUNK, x.dtype)
        _strided_float_task(
            x, out, shape, xs, os, c, n, k0, k1, thr, scale, shift, fill, bits, xb, ob
        )  # fmt: skip


@njit(cache=True)
def _strided_float_serial(x, out, shape, xs, os, n, k0, k1, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    bits = np.empty(CHUNK, np.uint32)
    xb = np.empty(CHUNK, x.dtype)
    ob = np.empty(CHUNK, x.dtype)
    for c in range((n + CHUNK - 1) // CHUNK):
        _strided_float_task(
            x, out, shape, xs, os, c, n, k0, k1, thr, scale, shift, fill, bits, xb, ob
        )  # fmt: skip


@njit(cache=True, parallel=True)
def _strided_half(x, out, shape, xs, os, n, k0, k1, thr, scale, shift, fill, is_bf16):  # type: ignore[no-untyped-def]
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        work = np.empty(CHUNK, np.uint32)
        xb = np.empty(CHUNK, np.uint16)
        ob = np.empty(CHUNK, np.uint16)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        count = min(n, lo + CHUNK) - lo
        _gather(x, xs, shape, lo, count, xb)
        if is_bf16:
            _chunk_bf16(xb[:count], ob[:count], bits, thr, scale, shift, fill, work)
        else:
            _chunk_f16(xb[:count], ob[:count], bits, thr, scale, shift, fill, work)
        _scatter(ob, out, os, shape, lo, count)


@njit(cache=True, parallel=True)
def _broadcast_float(x, out, keep, scale, shift, fill):  # type: ignore[no-untyped-def]
    """x, out: (A, B, C); keep: (A, C) -> out[a, b, c] = keep[a, c] ? x*scale+shift : fill
    (x * (keep[a, c] ? scale : 0) when shift and fill are 0)."""
    rows_a, rows_b, cols = x.shape
    if cols == 1:
        multiply = shift == 0 and fill == 0
        for a in prange(rows_a):
            if multiply:
                factor = scale if keep[a, 0] else (scale - scale)
                for b in range(rows_b):
                    out[a, b, 0] = x[a, b, 0] * factor
            elif keep[a, 0]:
                for b in range(rows_b):
                    out[a, b, 0] = x[a, b, 0] * scale + shift if shift != 0 else x[a, b, 0] * scale
            else:
                for b in range(rows_b):
                    out[a, b, 0] = fill
    else:
        for r in prange(rows_a * rows_b):
            a = r // rows_b
            b = r - a * rows_b
            _broadcast_row(x[a, b], out[a, b], keep[a], scale, shift, fill)


@njit(cache=True, inline="never")
def _broadcast_row(x, out, keep, scale, shift, fill):  # type: ignore[no-untyped-def]
    if shift == 0 and fill == 0:
        zero = scale - scale
        for c in range(x.size):
            out[c] = x[c] * (scale if keep[c] else zero)
    elif shift == 0:
        for c in range(x.size):
            out[c] = x[c] * scale if keep[c] else fill
    else:
        for c in range(x.size):
            out[c] = x[c] * scale + shift if keep[c] else fill
