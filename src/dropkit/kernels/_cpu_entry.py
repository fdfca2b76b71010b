"""The numba entry points of the CPU kernels: data pointers and plain numbers in, no arrays.

The wrappers pass data pointers and plain Python numbers: turning tensors into NumPy arrays
and numbers into NumPy scalars for numba's dispatcher cost more than the kernel on small
tensors (~8 us of ~20 us for 16K elements). A flag (``is64``, ``kind``) picks the dtype, never
a dtype argument: typing a dtype object costs numba's dispatcher ~7 us per call.
"""

from __future__ import annotations

import numpy as np
from numba import carray, float32, float64, njit, types, uint32, uint64
from numba.extending import intrinsic

from dropkit.kernels._cpu_layouts import (
    _strided_float_parallel,
    _strided_float_serial,
    _strided_half,
)
from dropkit.kernels._cpu_stream import (
    _keep_mask_parallel,
    _keep_mask_serial,
    _mask_parallel,
    _mask_serial,
    _stream_float_parallel,
    _stream_float_serial,
    _stream_half,
)


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


@njit(cache=True)
def _entry_keep(op, n, k0, k1, thr, serial):  # type: ignore[no-untyped-def]
    """``op`` (n bools) = the stream keep mask."""
    out = carray(_void_pointer(op), (n,), np.bool_)
    if serial:
        _keep_mask_serial(out, uint32(k0), uint32(k1), uint32(thr))
    else:
        _keep_mask_parallel(out, uint32(k0), uint32(k1), uint32(thr))
