"""Output memory layouts: every op's output has the layout ``torch.empty_like(input)`` gives.

That is torch's own rule for its dropout ops: the input's strides where the input is dense
(non-overlapping and dense: contiguous, ``channels_last``, transposed, any permutation), and
dense strides in the input's dim order otherwise (a slice, an expanded view). A backward does
the same for the gradient (see ``_autograd``). The mask is defined on logical indices, so the
layout never changes a value: only where it lies in memory.

The CPU and GPU kernels take non-contiguous tensors as 4 dims of (size, element stride) after
:func:`strided_plan` has merged the dims that are laid out together, so that a
``channels_last`` image batch ``(N, C, H, W)`` becomes ``(N, C, H*W)`` with strides
``(H*W*C, 1, C)``.
"""

from __future__ import annotations

import torch

__all__ = ["Plan", "placed", "storage_order", "strided_plan"]

#: (shape, input strides, output strides, input span, output span), each tuple of 4 dims; a
#: span is the number of elements from the data pointer to the last one reached, plus one.
Plan = tuple[
    tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int], int, int
]
_DIMS = 4


def strided_plan(
    shape: torch.Size | tuple[int, ...],
    x_strides: tuple[int, ...],
    out_strides: tuple[int, ...],
) -> Plan | None:
    """The 4-dim view of two tensors of ``shape`` that the strided kernels walk, or None when
    their layouts need more than 4 dims (the caller then copies)."""
    dims: list[list[int]] = []  # [size, x stride, out stride], size-1 dims left out
    for size, xs, os in zip(shape, x_strides, out_strides, strict=True):
        if size == 1:
            continue
        if dims and dims[-1][1] == xs * size and dims[-1][2] == os * size:
            dims[-1] = [dims[-1][0] * size, xs, os]  # laid out together: one dim
        else:
            dims.append([size, xs, os])
    if len(dims) > _DIMS:
        return None
    dims = [[1, 0, 0]] * (_DIMS - len(dims)) + dims
    sizes = (dims[0][0], dims[1][0], dims[2][0], dims[3][0])
    xs4 = (dims[0][1], dims[1][1], dims[2][1], dims[3][1])
    os4 = (dims[0][2], dims[1][2], dims[2][2], dims[3][2])
    x_span = 1 + sum((n - 1) * s for n, s in zip(sizes, xs4, strict=True))
    o_span = 1 + sum((n - 1) * s for n, s in zip(sizes, os4, strict=True))
    return sizes, xs4, os4, x_span, o_span


def placed(x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """``result`` (of ``x``'s shape) in the layout ``torch.empty_like(x)`` gives: itself where
    it already is, a copy otherwise."""
    if result.stride() == x.stride() or (result.is_contiguous() and x.is_contiguous()):
        return result  # a dense input's own strides (the common case), or both contiguous
    target = torch.empty_like(x, dtype=result.dtype)
    return result if target.stride() == result.stride() else target.copy_(result)


def storage_order(t: torch.Tensor) -> list[int]:
    """The dims of a dense tensor from the outermost in memory to the innermost, so that
    ``t.permute(storage_order(t))`` is contiguous."""
    strides = t.stride()
    return sorted(range(t.dim()), key=lambda d: (-strides[d], d))
