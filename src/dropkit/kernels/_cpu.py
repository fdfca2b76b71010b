"""CPU kernels in numba: the dropkit stream generated inside one parallel loop, fused with the op.

Each parallel task takes one chunk of ``CHUNK`` stream elements: one function fills a buffer
with the chunk's Philox words (the loop over lanes vectorizes: AVX2 ``vpmuludq``), another
applies them. The two are compiled separately (``inline="never"``): inlined into one loop
body, LLVM stops vectorizing and the kernel runs about 4x slower.

Half-precision tensors are handled through their bit patterns (numba has no float16 on CPU):
values are widened to float32, computed, and rounded once to nearest-even, exactly as the
reference computes in float32 and rounds.

This module imports numba; :func:`dropkit.kernels.select` imports it only when a CPU kernel
is about to run.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
from numba import carray, float32, float64, njit, prange, types, uint16, uint32, uint64
from numba.extending import intrinsic

from dropkit.kernels._layout import placed, storage_order, strided_plan
from dropkit.kernels._memory import empty_like, spare
from dropkit.kernels._philox import CHUNK, LANES, keep_threshold
from dropkit.kernels._reference import ACTIVATION_CODES, REFERENCE, affine

__all__ = ["NUMBA", "NumbaBackend"]

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint32(0x9E3779B9)
_W1 = np.uint32(0xBB67AE85)
_SERIAL_BELOW = 1 << 15  # under this many elements, thread start-up costs more than it saves


def _start_pool_keeping_torch_threads() -> None:
    """Start numba's thread pool now, and give torch back its thread count.

    numba's OpenMP threading layer shares torch's OpenMP runtime, and starting its pool sets
    that runtime's thread count to numba's: a user's ``torch.set_num_threads(1)`` silently
    became 2 at the first dropout call. Started here, at import, the change is undone at once.
    """
    wanted = torch.get_num_threads()
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


_start_pool_keeping_torch_threads()

# ------------------------------------------------------------------ the stream


@njit(cache=True, inline="never")
def _philox_chunk(bits, chunk, k0, k1):  # type: ignore[no-untyped-def]
    """Fill ``bits`` (CHUNK uint32) with stream elements ``chunk*CHUNK .. (chunk+1)*CHUNK-1``."""
    for lane in range(LANES):
        block = chunk * LANES + lane
        c0 = uint32(block & 0xFFFFFFFF)
        c1 = uint32(block >> 32)
        c2 = uint32(0)
        c3 = uint32(0)
        a0 = k0
        a1 = k1
        for _ in range(10):
            p0 = _M0 * uint64(c0)
            p1 = _M1 * uint64(c2)
            c0, c1, c2, c3 = (
                uint32(p1 >> 32) ^ c1 ^ a0,
                uint32(p1),
                uint32(p0 >> 32) ^ c3 ^ a1,
                uint32(p0),
            )
            a0 = uint32(a0 + _W0)
            a1 = uint32(a1 + _W1)
        bits[lane] = c0
        bits[LANES + lane] = c1
        bits[2 * LANES + lane] = c2
        bits[3 * LANES + lane] = c3


# ------------------------------------------------------------------ half precision bits


@njit(cache=True, inline="always")
def _bf16_round(u):  # type: ignore[no-untyped-def]
    """float32 bits -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN."""
    if (u & uint32(0x7FFFFFFF)) > uint32(0x7F800000):
        return uint16((u >> 16) | uint32(0x40))
    return uint16((u + uint32(0x7FFF) + ((u >> 16) & uint32(1))) >> 16)


@njit(cache=True, inline="always")
def _f16_widen(h):  # type: ignore[no-untyped-def]
    """float16 bits -> float32 bits (exact), subnormals included."""
    sign = uint32(h & 0x8000) << 16
    exp = uint32(h >> 10) & uint32(0x1F)
    mant = uint32(h & 0x3FF)
    if exp == 31:
        return sign | uint32(0x7F800000) | (mant << 13)
    if exp != 0:
        return sign | ((exp + uint32(112)) << 23) | (mant << 13)
    if mant == 0:
        return sign
    # Subnormal: shift the mantissa up to its leading 1, lowering the exponent as we go.
    e = uint32(113)
    while (mant & uint32(0x400)) == 0:
        mant <<= 1
        e -= uint32(1)
    return sign | (e << 23) | ((mant & uint32(0x3FF)) << 13)


@njit(cache=True, inline="always")
def _f16_round(u):  # type: ignore[no-untyped-def]
    """float32 bits -> float16 bits, round to nearest even; overflow -> inf, NaN -> quiet NaN."""
    sign = uint16((u >> 16) & uint32(0x8000))
    a = u & uint32(0x7FFFFFFF)
    if a > uint32(0x7F800000):
        return sign | uint16(0x7E00)
    if a >= uint32(0x477FF000):  # rounds to 65520 or more: inf
        return sign | uint16(0x7C00)
    if a >= uint32(0x38800000):  # normal half
        rounded = a + uint32(0xFFF) + ((a >> 13) & uint32(1))
        return sign | uint16((rounded - uint32(0x38000000)) >> 13)
    if a < uint32(0x33000000):  # below half the smallest subnormal: zero
        return sign
    # Subnormal half: shift the full 24-bit significand, then round to nearest even.
    exp = a >> 23
    mant = (a & uint32(0x7FFFFF)) | uint32(0x800000)
    shift = uint32(126) - exp  # 14..24
    half_value = mant >> shift
    rest = mant & ((uint32(1) << shift) - uint32(1))
    halfway = uint32(1) << (shift - uint32(1))
    if rest > halfway or (rest == halfway and (half_value & uint32(1)) == 1):
        half_value += uint32(1)
    return sign | uint16(half_value)


# ------------------------------------------------------------------ per-chunk bodies


@njit(cache=True, inline="never")
def _chunk_float(x, out, bits, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    if shift == 0 and fill == 0:  # a multiply by the scaled mask (see _reference.affine)
        zero = scale - scale
        for j in range(x.size):
            out[j] = x[j] * (scale if bits[j] >= thr else zero)
    elif shift == 0:
        for j in range(x.size):
            out[j] = x[j] * scale if bits[j] >= thr else fill
    else:
        for j in range(x.size):
            out[j] = x[j] * scale + shift if bits[j] >= thr else fill


@njit(cache=True, inline="always")
def _chunk_work(wf, bits, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    """The float32 step of the half-precision chunks, in place on the widened values."""
    if shift == 0 and fill == 0:
        zero = scale - scale
        for j in range(wf.size):
            wf[j] = wf[j] * (scale if bits[j] >= thr else zero)
    else:
        for j in range(wf.size):
            v = wf[j] * scale
            if shift != 0:
                v = v + shift
            wf[j] = v if bits[j] >= thr else fill


@njit(cache=True, inline="never")
def _chunk_bf16(x, out, bits, thr, scale, shift, fill, work):  # type: ignore[no-untyped-def]
    wf = work.view(np.float32)
    n = x.size
    for j in range(n):
        work[j] = uint32(x[j]) << 16
    _chunk_work(wf, bits, thr, scale, shift, fill)
    for j in range(n):
        out[j] = _bf16_round(work[j])


@njit(cache=True, inline="never")
def _chunk_f16(x, out, bits, thr, scale, shift, fill, work):  # type: ignore[no-untyped-def]
    wf = work.view(np.float32)
    n = x.size
    for j in range(n):
        work[j] = _f16_widen(x[j])
    _chunk_work(wf, bits, thr, scale, shift, fill)
    for j in range(n):
        out[j] = _f16_round(work[j])


# ------------------------------------------------------------------ parallel drivers


@njit(cache=True, parallel=True)
def _stream_float_parallel(x, out, k0, k1, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        _chunk_float(x[lo:hi], out[lo:hi], bits, thr, scale, shift, fill)


@njit(cache=True)
def _stream_float_serial(x, out, k0, k1, thr, scale, shift, fill):  # type: ignore[no-untyped-def]
    n = x.size
    bits = np.empty(CHUNK, np.uint32)
    for c in range((n + CHUNK - 1) // CHUNK):
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        _chunk_float(x[lo:hi], out[lo:hi], bits, thr, scale, shift, fill)


@njit(cache=True, parallel=True)
def _stream_half(x, out, k0, k1, thr, scale, shift, fill, is_bf16):  # type: ignore[no-untyped-def]
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        work = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        if is_bf16:
            _chunk_bf16(x[lo:hi], out[lo:hi], bits, thr, scale, shift, fill, work)
        else:
            _chunk_f16(x[lo:hi], out[lo:hi], bits, thr, scale, shift, fill, work)


# ------------------------------------------------------------------ strided layouts
# An input that is not contiguous (channels_last, transposed, a slice, an expanded view) is read
# where it lies, and the output is written in the layout torch.empty_like gives. The mask is
# defined on LOGICAL indices, so each task still takes one chunk of CHUNK consecutive logical
# elements (one Philox chunk): it gathers them into a contiguous buffer, runs the contiguous
# chunk body on it, and scatters the result. The bits are those of a contiguous input, and no
# input-sized copy is made. Tensors arrive collapsed to 4 dims (shape and element strides);
# the memory is a flat array spanning every element the strides reach.


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


@njit(cache=True, inline="never")
def _chunk_mask(out, bits, thr, scale):  # type: ignore[no-untyped-def]
    zero = scale - scale
    for j in range(out.size):
        out[j] = scale if bits[j] >= thr else zero


@njit(cache=True, parallel=True)
def _mask_parallel(out, k0, k1, thr, scale):  # type: ignore[no-untyped-def]
    n = out.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_mask(out[lo : min(n, lo + CHUNK)], bits, thr, scale)


@njit(cache=True)
def _mask_serial(out, k0, k1, thr, scale):  # type: ignore[no-untyped-def]
    n = out.size
    bits = np.empty(CHUNK, np.uint32)
    for c in range((n + CHUNK - 1) // CHUNK):
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_mask(out[lo : min(n, lo + CHUNK)], bits, thr, scale)


@njit(cache=True, inline="never")
def _chunk_keep(out, bits, thr):  # type: ignore[no-untyped-def]
    for j in range(out.size):
        out[j] = bits[j] >= thr


@njit(cache=True, parallel=True)
def _keep_mask_parallel(out, k0, k1, thr):  # type: ignore[no-untyped-def]
    n = out.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        bits = np.empty(CHUNK, np.uint32)
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_keep(out[lo : min(n, lo + CHUNK)], bits, thr)


@njit(cache=True)
def _keep_mask_serial(out, k0, k1, thr):  # type: ignore[no-untyped-def]
    n = out.size
    bits = np.empty(CHUNK, np.uint32)
    for c in range((n + CHUNK - 1) // CHUNK):
        _philox_chunk(bits, c, k0, k1)
        lo = c * CHUNK
        _chunk_keep(out[lo : min(n, lo + CHUNK)], bits, thr)


@njit(cache=True)
def _entry_keep(op, n, k0, k1, thr, serial):  # type: ignore[no-untyped-def]
    """``op`` (n bools) = the stream keep mask."""
    out = carray(_void_pointer(op), (n,), np.bool_)
    if serial:
        _keep_mask_serial(out, uint32(k0), uint32(k1), uint32(thr))
    else:
        _keep_mask_parallel(out, uint32(k0), uint32(k1), uint32(thr))


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


# ------------------------------------------------------------------ fused bias epilogue


# One chunk function per activation: numba unifies a variable's type across branches, and
# GELU's float64 constants would otherwise turn float32 arithmetic into float64 on every path.
# Each walks the chunk's rows in segments so that the bias index advances without a modulo.


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


# ------------------------------------------------------------------ pointer entry points
# The wrappers pass data pointers and plain Python numbers: turning tensors into NumPy arrays
# and numbers into NumPy scalars for numba's dispatcher cost more than the kernel on small
# tensors (~8 us of ~20 us for 16K elements).


@intrinsic
def _void_pointer(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.int64), codegen


@njit(cache=True)
def _run_float(x, out, k0, k1, thr, scale, shift, fill, serial):  # type: ignore[no-untyped-def]
    args = (uint32(k0), uint32(k1), uint32(thr), scale, shift, fill)
    if serial:
        _stream_float_serial(x, out, *args)
    else:
        _stream_float_parallel(x, out, *args)


@njit(cache=True)
def _entry_float(xp, op, n, k0, k1, thr, scale, shift, fill, is64, serial):  # type: ignore[no-untyped-def]
    """float64 if ``is64`` else float32 (a flag, not a dtype argument: typing a dtype object
    costs numba's dispatcher ~7 us per call)."""
    if is64:
        x64 = carray(_void_pointer(xp), (n,), np.float64)
        out64 = carray(_void_pointer(op), (n,), np.float64)
        _run_float(x64, out64, k0, k1, thr, float64(scale), float64(shift), float64(fill), serial)
    else:
        x32 = carray(_void_pointer(xp), (n,), np.float32)
        out32 = carray(_void_pointer(op), (n,), np.float32)
        _run_float(x32, out32, k0, k1, thr, float32(scale), float32(shift), float32(fill), serial)


@njit(cache=True)
def _entry_mask(op, n, k0, k1, thr, scale, is64, serial):  # type: ignore[no-untyped-def]
    """``op`` (n floats, float64 if ``is64``) = ``where(keep, scale, 0)``, keep from the stream."""
    key = (uint32(k0), uint32(k1), uint32(thr))
    if is64:
        out64 = carray(_void_pointer(op), (n,), np.float64)
        if serial:
            _mask_serial(out64, *key, float64(scale))
        else:
            _mask_parallel(out64, *key, float64(scale))
    else:
        out32 = carray(_void_pointer(op), (n,), np.float32)
        if serial:
            _mask_serial(out32, *key, float32(scale))
        else:
            _mask_parallel(out32, *key, float32(scale))


@njit(cache=True)
def _entry_drawn_mask(op, n, cells, runs, offset, thr, scale, is64, serial):  # type: ignore[no-untyped-def]
    """``_entry_mask`` for ``runs`` equal consecutive parts of the ``n`` elements, part ``r``
    with the seed that torch's generator just wrote at ``cells``: the ``r``-th int64 there,
    plus ``offset`` (an int64 with the bits of a uint64), modulo 2**64."""
    seeds = carray(_void_pointer(cells), (runs,), np.int64)
    part = n // runs
    step = part * (8 if is64 else 4)
    low = uint64(0xFFFFFFFF)
    for r in range(runs):
        seed = uint64(seeds[r]) + uint64(offset)
        _entry_mask(op + r * step, part, seed & low, seed >> uint64(32), thr, scale, is64, serial)


@njit(cache=True)
def _entry_strided(  # type: ignore[no-untyped-def]
    xp, x_span, op, o_span, shape, xs, os, n, k0, k1, thr, scale, shift, fill, kind, serial
):
    """The masked affine map of ``n`` elements in the layouts ``xs`` (input) and ``os``
    (output), element strides over the 4-dim ``shape``; ``kind``: 0 float32, 1 float64,
    2 bfloat16, 3 float16. ``x_span``/``o_span``: elements from each data pointer to the last
    one its strides reach, plus one."""
    key = (uint32(k0), uint32(k1), uint32(thr))
    if kind == 0:
        x32 = carray(_void_pointer(xp), (x_span,), np.float32)
        o32 = carray(_void_pointer(op), (o_span,), np.float32)
        floats32 = (float32(scale), float32(shift), float32(fill))
        if serial:
            _strided_float_serial(x32, o32, shape, xs, os, n, *key, *floats32)
        else:
            _strided_float_parallel(x32, o32, shape, xs, os, n, *key, *floats32)
    elif kind == 1:
        x64 = carray(_void_pointer(xp), (x_span,), np.float64)
        o64 = carray(_void_pointer(op), (o_span,), np.float64)
        floats64 = (float64(scale), float64(shift), float64(fill))
        if serial:
            _strided_float_serial(x64, o64, shape, xs, os, n, *key, *floats64)
        else:
            _strided_float_parallel(x64, o64, shape, xs, os, n, *key, *floats64)
    else:
        x16 = carray(_void_pointer(xp), (x_span,), np.uint16)
        o16 = carray(_void_pointer(op), (o_span,), np.uint16)
        floats = (float32(scale), float32(shift), float32(fill))
        _strided_half(x16, o16, shape, xs, os, n, *key, *floats, kind == 2)


@njit(cache=True)
def _entry_half(xp, op, n, k0, k1, thr, scale, shift, fill, is_bf16):  # type: ignore[no-untyped-def]
    x = carray(_void_pointer(xp), (n,), np.uint16)
    out = carray(_void_pointer(op), (n,), np.uint16)
    _stream_half(
        x,
        out,
        uint32(k0),
        uint32(k1),
        uint32(thr),
        float32(scale),
        float32(shift),
        float32(fill),
        is_bf16,
    )


# ------------------------------------------------------------------ torch-facing writers
# One calling convention: ``_write_<step>(inputs..., out, numbers...)`` takes contiguous CPU
# tensors and Python numbers and fills ``out``; the backend below allocates and picks the step.


_thread_count = [0]


def _threads() -> None:
    """Follow ``torch.get_num_threads()``; numba's setter is only called when it changes."""
    wanted = torch.get_num_threads()
    if wanted != _thread_count[0]:
        numba.set_num_threads(max(1, min(wanted, numba.config.NUMBA_NUM_THREADS)))
        _thread_count[0] = wanted


_LOW32 = 0xFFFFFFFF


@functools.lru_cache(maxsize=256)
def _thr(p: float) -> int:
    """The keep threshold of ``p`` as a uint32 value (p = 1 is a fill, never a kernel)."""
    threshold = keep_threshold(p)
    if threshold >= 2**32:
        raise ValueError("dropkit kernels: p = 1 drops everything; the caller fills instead")
    return threshold


_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}
_KINDS = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}


def _write_keep_mask(out: torch.Tensor, p: float, seed: int) -> None:
    """``out`` (bool, contiguous) = the stream keep mask of ``out.numel()`` elements."""
    n = out.numel()
    serial = n < _SERIAL_BELOW
    if not serial:
        _threads()
    _entry_keep(out.data_ptr(), n, seed & _LOW32, seed >> 32, _thr(p), serial)


def _write_broadcast(
    x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor, scale: float, shift: float, fill: float
) -> None:
    """``out`` = the masked affine map of ``x`` (``_reference.affine``) for float32/64 ``x``
    and ``out`` of shape (A, B, C) and a bool ``keep`` of shape (A, C)."""
    _threads()
    dt = _NUMPY_FLOATS[x.dtype]
    _broadcast_float(x.numpy(), out.numpy(), keep.numpy(), dt(scale), dt(shift), dt(fill))


def _write_bias_dropout(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    out: torch.Tensor,
    p: float,
    seed: int,
    scale: float,
    activation: str | None,
) -> None:
    """``out = activation(x + bias) * where(keep, scale, 0) (+ residual)`` for float32/float64;
    element ``i`` kept by stream element ``i``."""
    _threads()
    dt = _NUMPY_FLOATS[x.dtype]
    flat = x.view(-1).numpy()
    res = residual.view(-1).numpy() if residual is not None else flat
    _bias_stream(
        flat,
        out.view(-1).numpy(),
        bias.numpy(),
        res,
        residual is not None,
        *_key(seed),
        np.uint32(_thr(p)),
        dt(scale),
        ACTIVATION_CODES[activation],
    )


def _key(seed: int) -> tuple[np.uint32, np.uint32]:
    return np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32)


def _collapse(shape: tuple[int, ...], noise: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(A, B, C)`` such that the input is ``(A, B, C)`` and the mask ``(A, 1, C)``, if any."""
    runs: list[tuple[bool, int]] = []  # (shared, size) runs of dims, size-1 dims ignored
    for size, n in zip(shape, noise, strict=True):
        if size == 1:
            continue
        shared = n == 1
        if runs and runs[-1][0] == shared:
            runs[-1] = (shared, runs[-1][1] * size)
        else:
            runs.append((shared, size))
    shared_runs = [i for i, (shared, _) in enumerate(runs) if shared]
    if len(shared_runs) != 1:
        return None
    i = shared_runs[0]
    before = runs[i - 1][1] if i > 0 else 1
    after = runs[i + 1][1] if i + 1 < len(runs) else 1
    return before, runs[i][1], after


class NumbaBackend:
    """The CPU kernels: float16, bfloat16, float32 and float64 CPU tensors; the methods and
    arguments of :class:`dropkit.kernels._reference.ReferenceBackend`, the same bits."""

    name = "numba"

    # What dropkit.functional._autograd.small_dropout calls itself, without a method's frame:
    # drawn_scaled_mask's steps.
    entry_drawn_mask = staticmethod(_entry_drawn_mask)
    threshold = staticmethod(_thr)
    follow_threads = staticmethod(_threads)
    serial_below = _SERIAL_BELOW

    def masked_affine(
        self,
        x: torch.Tensor,
        noise_shape: tuple[int, ...],
        p: float,
        seed: int,
        scale: float,
        shift: float = 0.0,
        fill: float = 0.0,
    ) -> torch.Tensor:
        n = x.numel()
        if noise_shape == x.shape and p < 1.0 and n:  # the common case, straight to the kernel
            if not x.is_contiguous():
                return self._strided_affine(x, p, seed, scale, shift, fill)
            small = n < _SERIAL_BELOW  # no huge-page hint below this (and one call less)
            out = (
                torch.empty_like(x, memory_format=torch.contiguous_format)
                if small
                else empty_like(x)
            )
            dtype = x.dtype
            xp, op, k0, k1, thr = x.data_ptr(), out.data_ptr(), seed & _LOW32, seed >> 32, _thr(p)
            if dtype is torch.float32 or dtype is torch.float64:
                if not small:
                    _threads()
                is64 = dtype is torch.float64
                _entry_float(xp, op, n, k0, k1, thr, scale, shift, fill, is64, small)
            else:  # half precision: the driver is always parallel
                _threads()
                _entry_half(xp, op, n, k0, k1, thr, scale, shift, fill, dtype is torch.bfloat16)
            return out
        if p >= 1.0 or not x.numel():
            return REFERENCE.masked_affine(x, noise_shape, p, seed, scale, shift, fill)
        keep = self.keep_mask(noise_shape, p, seed, x.device)
        out = empty_like(x)
        # Walk the input in its memory order: permuted alike, the output is contiguous and the
        # mask keeps its values per logical element (a dense input is then read where it lies).
        order = storage_order(out)
        x_mem = x.permute(order)
        abc = _collapse(tuple(x_mem.shape), tuple(noise_shape[d] for d in order))
        if abc is None or x.dtype not in _NUMPY_FLOATS:
            return placed(x, affine(x, keep, scale, shift, fill))
        a, b, c = abc
        keep_mem = keep.permute(order).contiguous()  # the mask is small: (N, C) for channels
        x3 = x_mem.contiguous().view(a, b, c)  # a view where the input is dense
        out3 = out.permute(order).view(a, b, c)
        _write_broadcast(x3, keep_mem.view(a, c), out3, scale, shift, fill)
        return out

    def _strided_affine(
        self, x: torch.Tensor, p: float, seed: int, scale: float, shift: float, fill: float
    ) -> torch.Tensor:
        """:meth:`masked_affine` of a non-contiguous ``x`` with a full mask, read where it
        lies and written in the layout of ``torch.empty_like(x)`` (``_layout``)."""
        out = empty_like(x)
        plan = strided_plan(x.shape, x.stride(), out.stride())
        if plan is None:  # a layout of more than 4 dims that do not merge: copy
            flat = self.masked_affine(x.contiguous(), tuple(x.shape), p, seed, scale, shift, fill)
            return out.copy_(flat)
        shape, xs, os, x_span, o_span = plan
        n = x.numel()
        kind = _KINDS[x.dtype]
        serial = n < _SERIAL_BELOW and kind < 2  # the half-precision driver is always parallel
        if not serial:
            _threads()
        _entry_strided(
            x.data_ptr(), x_span, out.data_ptr(), o_span, shape, xs, os, n,
            seed & _LOW32, seed >> 32, _thr(p), scale, shift, fill, kind, serial,
        )  # fmt: skip
        return out

    def keep_mask(
        self, shape: tuple[int, ...], p: float, seed: int, device: torch.device
    ) -> torch.Tensor:
        out = torch.empty(shape, dtype=torch.bool)
        if p >= 1.0:
            return out.fill_(False)
        _write_keep_mask(out, p, seed)
        return out

    def scaled_mask(
        self,
        shape: tuple[int, ...],
        p: float,
        seed: int,
        scale: float,
        dtype: torch.dtype,
        device: torch.device,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n = math.prod(shape)
        if p >= 1.0 or not n or (dtype is not torch.float32 and dtype is not torch.float64):
            return REFERENCE.scaled_mask(shape, p, seed, scale, dtype, device, out)
        if out is None:
            out = torch.empty(shape, dtype=dtype)
        elif not (out.is_contiguous() and out.dtype == dtype and out.shape == shape):
            raise ValueError(
                "scaled_mask: out must be a contiguous tensor of the mask's shape and dtype"
            )
        small = n < _SERIAL_BELOW
        if not small:
            _threads()
        thr = _thr(p)
        _entry_mask(
            out.data_ptr(), n, seed & _LOW32, seed >> 32, thr, scale, dtype is torch.float64, small
        )
        return out

    def drawn_scaled_mask(
        self,
        shape: torch.Size,
        n: int,
        p: float,
        cells: torch.Tensor,
        offset: int,
        scale: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """:meth:`scaled_mask` of ``n`` > 0 float32 or float64 elements, 0 < p < 1, in a
        :func:`~dropkit.kernels._memory.spare` tensor, with seeds that the kernel reads itself.

        ``cells`` is a contiguous int64 CPU tensor of R seeds (0-dim for one); the output is
        R equal consecutive parts, part r the mask of seed ``cells[r] + offset`` modulo 2**64.
        The road of the stacked runs of ``dropkit compare``: one torch op fewer per seed than
        reading it into Python. (:func:`dropkit.functional._autograd.small_dropout` takes the
        same steps for one seed itself, with the class attributes above.)
        """
        out = spare(shape, dtype)
        runs = cells.numel()
        serial = n // runs < _SERIAL_BELOW
        if not serial:
            _threads()
        signed = offset - 2**64 if offset >= 2**63 else offset
        is64 = dtype is torch.float64
        _entry_drawn_mask(
            out.data_ptr(), n, cells.data_ptr(), runs, signed, _thr(p), scale, is64, serial
        )
        return out

    def bias_dropout(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        residual: torch.Tensor | None,
        p: float,
        seed: int,
        scale: float,
        activation: str | None,
    ) -> torch.Tensor:
        if p >= 1.0 or not x.numel() or x.dtype not in _NUMPY_FLOATS:
            return REFERENCE.bias_dropout(x, bias, residual, p, seed, scale, activation)
        xc = x.contiguous()
        out = empty_like(xc)
        res = residual.contiguous() if residual is not None else None
        _write_bias_dropout(xc, bias.contiguous(), res, out, p, seed, scale, activation)
        return out if xc is x else placed(x, out)  # a non-contiguous x: copied to its layout


NUMBA = NumbaBackend()
