"""The numba CPU backend: torch tensors in, the kernels of ``_cpu_*`` run on their memory.

The kernels live beside it: the contiguous stream (:mod:`._cpu_stream`), strided layouts and
broadcast masks (:mod:`._cpu_layouts`), the fused bias (:mod:`._cpu_bias`) and the pointer
entry points (:mod:`._cpu_entry`). This module imports numba; :func:`dropkit.kernels.select`
imports it only when a CPU kernel is about to run.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from dropkit.kernels._cpu_bias import _bias_stream
from dropkit.kernels._cpu_entry import (
    _entry_drawn_mask,
    _entry_float,
    _entry_half,
    _entry_keep,
    _entry_mask,
    _entry_strided,
)
from dropkit.kernels._cpu_layouts import _broadcast_float
from dropkit.kernels._cpu_stream import _SERIAL_BELOW, _key, _threads
from dropkit.kernels._layout import placed, storage_order, strided_plan
from dropkit.kernels._memory import empty_like, reusable_empty
from dropkit.kernels._philox import keep_threshold
from dropkit.kernels._reference import ACTIVATION_CODES, REFERENCE, affine
from dropkit.kernels._uniform_cpu import write_concrete_factor, write_open_uniform

__all__ = ["NUMBA", "NumbaBackend"]


# ------------------------------------------------------------------ torch-facing writers
# One calling convention: ``_write_<step>(inputs..., out, numbers...)`` takes contiguous CPU
# tensors and Python numbers and fills ``out``; the backend below allocates and picks the step.


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
        :func:`~dropkit.kernels.reusable_empty` tensor, with seeds that the kernel reads itself.

        ``cells`` is a contiguous int64 CPU tensor of R seeds (0-dim for one); the output is
        R equal consecutive parts, part r the mask of seed ``cells[r] + offset`` modulo 2**64.
        The path of the stacked runs of ``dropkit compare``: one torch op fewer per seed than
        reading it into Python. (:func:`dropkit.functional._autograd.small_dropout` takes the
        same steps for one seed itself, with the class attributes above.)
        """
        out = reusable_empty(shape, dtype)
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

    def open_uniform(self, out: torch.Tensor, seed: int) -> None:
        """Fill ``out`` (contiguous float32/float64) with the stream's open uniforms
        (``stream_open_uniform`` of ``dropkit.functional._concrete``, bit for bit)."""
        write_open_uniform(out, seed)

    def concrete_factor(
        self, out: torch.Tensor, seed: int, odds_k: float, k: int, scale: float
    ) -> None:
        """Fill ``out`` with the relaxed Concrete factor at temperature ``1 / k`` in one pass
        (see ``_uniform_cpu.write_concrete_factor``)."""
        write_concrete_factor(out, seed, odds_k, k, scale)

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
