"""Output allocation for the kernels: large outputs ask Linux for transparent huge pages, small
masks reuse memory that nothing refers to any more.

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
import threading
from collections.abc import Callable

import torch

__all__ = ["REUSABLE_BYTES", "empty_like", "reusable_empty"]

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
    """``torch.empty_like(x)`` (``x``'s strides where ``x`` is dense: the layout every op's
    output has, see ``_layout``), with the huge-page hint when it is large."""
    out = torch.empty_like(x)
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


#: At most this many bytes of reusable masks are kept per thread.
REUSABLE_BYTES = 8 << 20
_KEPT_PER_SHAPE = 16
_reusable = threading.local()

# A kept tensor: the tensor, its storage's Python object, that storage's address and its use
# count when nothing but these two refers to it.
_Kept = tuple[torch.Tensor, object, int, int]


def _python_refs(kept: list[_Kept]) -> tuple[int, int]:
    """``sys.getrefcount`` of the last kept tensor and of its storage's Python object, seen as
    :func:`reusable_empty`'s loop sees them."""
    for entry in kept[-1:]:
        tensor = entry[0]
        return sys.getrefcount(tensor), sys.getrefcount(entry[1])
    return 0, 0


def _calibrate() -> tuple[int, int]:
    """The Python references to a kept tensor and to its storage's Python object when nothing
    else refers to them, on this interpreter and torch: the kept entry's and the loop's own (an
    argument may or may not count; torch may hold the storage object while its storage is
    shared). (0, 0) where counting is not possible: a torch without use counts, or a
    free-threaded Python.

    Measured with Python-level tracing and profiling off: a tracer that reads ``f_locals`` (a
    debugger) adds a reference on CPython up to 3.12, and a count taken that high would make a
    tensor with one outside reference look free. Under such a tracer later, the counts only
    grow, and the pool allocates instead."""
    if not (hasattr(torch.Tensor, "_use_count") and hasattr(torch._C, "_storage_Use_Count")):
        return 0, 0
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return 0, 0
    trace, profile = sys.gettrace(), sys.getprofile()
    sys.settrace(None)
    sys.setprofile(None)
    try:
        tensor = torch.empty(1)
        kept: list[_Kept] = [(tensor, tensor.untyped_storage(), 0, 0)]
        del tensor  # held by its entry alone, as a kept tensor is
        return _python_refs(kept)
    finally:
        sys.settrace(trace)
        sys.setprofile(profile)


_UNUSED_REFS, _UNUSED_STORAGE_REFS = _calibrate()


def reusable_empty(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized contiguous CPU tensor that nothing else refers to, often an earlier one.

    The saved-mask path writes a small mask on every call; autograd keeps it until backward
    and then drops it. Each thread keeps the masks it made (up to :data:`REUSABLE_BYTES`) and
    hands one out again once nothing refers to it: not to the Python tensor (a saved-tensor
    hook that packed it, ``grad_fn._saved_other``), not to the tensor itself (autograd's saved
    copy, a retained graph), not to its memory (a view, a detached alias) and not to that
    memory's Python object (a hook that packed ``untyped_storage()``). This saves the
    allocation and writes memory that is likely still in cache; inside a training step, where
    each call finds the caches cold, a fresh allocation costs several microseconds, as much as
    the kernel that fills it.

    They are counted as torch's own CUDA-graph trees count them (``sys.getrefcount``,
    ``Tensor._use_count``, ``torch._C._storage_Use_Count``); where one of them is missing or
    unreliable (see :func:`_calibrate`), every call allocates. Callers must not be inside a
    torch dispatch mode (a fake-tensor mode would hand back a tensor without memory).
    """
    pool: dict[tuple[torch.Size, torch.dtype], list[_Kept]] | None
    pool = getattr(_reusable, "pool", None)
    if pool is None:
        pool = _reusable.pool = {}
        _reusable.nbytes = 0
    key = (shape, dtype)
    kept = pool.get(key)
    if kept is not None:
        for entry in kept:
            tensor: torch.Tensor = entry[0]
            if (
                sys.getrefcount(tensor) == _UNUSED_REFS
                and sys.getrefcount(entry[1]) == _UNUSED_STORAGE_REFS
                and tensor._use_count() == 1  # type: ignore[attr-defined]
                and torch._C._storage_Use_Count(entry[2]) == entry[3]
            ):
                return tensor
    out: torch.Tensor = torch.empty(shape, dtype=dtype)
    if not _UNUSED_REFS or _reusable.nbytes + out.nbytes > REUSABLE_BYTES:
        return out
    if kept is None:
        kept = pool[key] = []
    elif len(kept) >= _KEPT_PER_SHAPE:
        return out
    # The storage's Python object is kept with the tensor, so that its own reference to the
    # memory stays counted in the last field, the count when nothing else refers to it.
    storage = out.untyped_storage()
    address = storage._cdata
    kept.append((out, storage, address, torch._C._storage_Use_Count(address)))
    _reusable.nbytes += out.nbytes
    return out
