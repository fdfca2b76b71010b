"""Output allocation for the kernels: large outputs ask Linux for transparent huge pages.

A fresh large tensor is backed by fresh pages, and touching them for the first time costs a page
fault per 4 KiB: for a 64 MiB output that is ~20 ms on a 2-core machine, several times the
dropout kernel itself. With ``madvise(MADV_HUGEPAGE)`` (what NumPy does for its own large
arrays) the kernel faults once per 2 MiB instead. The tensor stays an ordinary torch tensor;
where the hint is unavailable (not Linux, THP disabled) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

import torch

__all__ = ["empty_like"]

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_HINT_FROM_BYTES = 4 << 20


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """A contiguous uninitialized tensor like ``x``, with the huge-page hint when it is large."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    nbytes = out.nbytes
    if nbytes < _HINT_FROM_BYTES or not out.is_cpu:
        return out
    madvise = _madvise()
    if madvise is not None:
        start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (out.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # a hint: failure changes nothing
    return out
