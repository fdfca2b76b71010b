"""CPU kernels in numba, the contiguous stream: Philox words, the per-chunk bodies, the drivers.

Each parallel task takes one chunk of ``CHUNK`` stream elements: one function fills a buffer
with the chunk's Philox words (the loop over lanes vectorizes: AVX2 ``vpmuludq``), another
applies them. The two are compiled separately (``inline="never"``): inlined into one loop
body, LLVM stops vectorizing and the kernel runs about 4x slower.

Half-precision tensors are handled through their bit patterns (numba has no float16 on CPU):
values are widened to float32, computed, and rounded once to nearest-even, exactly as the
reference computes in float32 and rounds.

The layouts (:mod:`._cpu_layouts`), the fused bias (:mod:`._cpu_bias`) and the pointer entry
points (:mod:`._cpu_entry`) build on these; :mod:`._cpu` is the torch-facing backend. Importing
this module imports numba and starts its thread pool.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange, uint16, uint32, uint64

from dropkit.kernels._philox import CHUNK, LANES

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


# ------------------------------------------------------------------ threads and keys


_thread_count = [0]


def _threads() -> None:
    """Follow ``torch.get_num_threads()``; numba's setter is only called when it changes."""
    wanted = torch.get_num_threads()
    if wanted != _thread_count[0]:
        numba.set_num_threads(max(1, min(wanted, numba.config.NUMBA_NUM_THREADS)))
        _thread_count[0] = wanted


def _key(seed: int) -> tuple[np.uint32, np.uint32]:
    return np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32)
