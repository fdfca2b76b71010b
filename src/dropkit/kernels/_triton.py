"""GPU kernels in Triton: the dropkit stream from ``tl.randint4x``, fused with the op.

One program handles one chunk of ``4 * LANES`` elements: ``tl.randint4x(seed, block)`` gives the
four words of each block, and word ``w`` of lane ``l`` feeds element ``w * LANES + l`` of the
chunk, which is the stream of :mod:`dropkit.kernels._philox` bit for bit (Triton's Philox is
Philox4x32-10 with the same key and counter layout). Half precision is computed in float32 and
rounded once. ``enable_fp_fusion=False`` keeps ``x * scale + shift`` two roundings, as in the
reference. Float64 stays on the reference: Triton passes Python floats as float32.

The kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter
(``TRITON_INTERPRET=1``, set before Triton is imported), which is how the tests run them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dropkit.kernels._layout import Plan, placed, strided_plan
from dropkit.kernels._memory import empty_like
from dropkit.kernels._philox import CHUNK, LANES, keep_threshold
from dropkit.kernels._reference import ACTIVATION_CODES, REFERENCE, affine, scaled_mask

__all__ = ["DTYPES", "TRITON", "TritonBackend"]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _store(out_ptr, index, y, inside):
    """Store float32 ``y`` in the output's dtype, rounding to nearest even.

    bfloat16 is rounded with integer operations: Triton's interpreter converts by truncation,
    and the result must be the same there as on a GPU.
    """
    if out_ptr.dtype.element_ty == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        quiet_nan = (bits >> 16) | 0x40
        is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
        half = tl.where(is_nan, quiet_nan, rounded).to(tl.uint16)
        tl.store(out_ptr + index, half.to(tl.bfloat16, bitcast=True), mask=inside)
    else:
        tl.store(out_ptr + index, y.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _chunk_words(seed, LANES: tl.constexpr):
    """This program's chunk: the four Philox words of its blocks and the offset of word 0."""
    chunk = tl.program_id(0).to(tl.int64)
    lane = tl.arange(0, LANES)
    return tl.randint4x(seed, chunk * LANES + lane), chunk * 4 * LANES + lane


@triton.jit
def _affine_kernel(
    x_ptr,
    out_ptr,
    n,
    seed,
    threshold,
    scale,
    shift,
    fill,
    LANES: tl.constexpr,
    HAS_SHIFT: tl.constexpr,
    MULTIPLY: tl.constexpr,
):
    words, base = _chunk_words(seed, LANES)
    for w in tl.static_range(4):
        index = base + w * LANES
        inside = index < n
        x = tl.load(x_ptr + index, mask=inside, other=0.0).to(tl.float32)
        keep = words[w] >= threshold
        if MULTIPLY:  # shift and fill 0: a multiply by the scaled mask (_reference.affine)
            y = x * tl.where(keep, scale, 0.0)
        else:
            y = x * scale
            if HAS_SHIFT:
                y = y + shift
            y = tl.where(keep, y, fill)
        _store(out_ptr, index, y, inside)


@triton.jit
def _affine_strided_kernel(
    x_ptr,
    out_ptr,
    n,
    s1,
    s2,
    s3,
    xs0,
    xs1,
    xs2,
    xs3,
    os0,
    os1,
    os2,
    os3,
    seed,
    threshold,
    scale,
    shift,
    fill,
    LANES: tl.constexpr,
    HAS_SHIFT: tl.constexpr,
    MULTIPLY: tl.constexpr,
):
    """``_affine_kernel`` on tensors in any layout, given as 4 dims of (size, element stride)
    (``_layout.strided_plan``): the mask stays on logical indices, each element is loaded and
    stored where its strides put it."""
    words, base = _chunk_words(seed, LANES)
    for w in tl.static_range(4):
        index = base + w * LANES
        inside = index < n
        i3 = index % s3
        rest = index // s3
        i2 = rest % s2
        rest = rest // s2
        i1 = rest % s1
        i0 = rest // s1
        x_at = i0 * xs0 + i1 * xs1 + i2 * xs2 + i3 * xs3
        out_at = i0 * os0 + i1 * os1 + i2 * os2 + i3 * os3
        x = tl.load(x_ptr + x_at, mask=inside, other=0.0).to(tl.float32)
        keep = words[w] >= threshold
        if MULTIPLY:
            y = x * tl.where(keep, scale, 0.0)
        else:
            y = x * scale
            if HAS_SHIFT:
                y = y + shift
            y = tl.where(keep, y, fill)
        _store(out_ptr, out_at, y, inside)


@triton.jit
def _keep_kernel(out_ptr, n, seed, threshold, LANES: tl.constexpr):
    words, base = _chunk_words(seed, LANES)
    for w in tl.static_range(4):
        index = base + w * LANES
        keep = words[w] >= threshold
        tl.store(out_ptr + index, keep.to(tl.int8), mask=index < n)


@triton.jit
def _bias_kernel(
    x_ptr,
    bias_ptr,
    residual_ptr,
    out_ptr,
    n,
    width,
    seed,
    threshold,
    scale,
    LANES: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    words, base = _chunk_words(seed, LANES)
    for w in tl.static_range(4):
        index = base + w * LANES
        inside = index < n
        x = tl.load(x_ptr + index, mask=inside, other=0.0).to(tl.float32)
        b = tl.load(bias_ptr + index % width, mask=inside, other=0.0).to(tl.float32)
        y = x + b
        if ACTIVATION == 1:
            y = tl.where(y < 0, 0.0, y)
        elif ACTIVATION == 2:
            y = y * 0.5 * (1.0 + tl.math.erf(y * 0.7071067811865476))
        y = y * tl.where(words[w] >= threshold, scale, 0.0)
        if HAS_RESIDUAL:
            y = y + tl.load(residual_ptr + index, mask=inside, other=0.0).to(tl.float32)
        _store(out_ptr, index, y, inside)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, CHUNK),)


def _threshold(p: float) -> int:
    threshold = keep_threshold(p)
    if threshold >= 2**32:
        raise ValueError("dropkit triton kernels: p = 1 drops everything; the caller fills instead")
    return threshold


# One calling convention, as in the CPU module: ``_write_<step>(inputs..., out, numbers...)``
# fills ``out`` from contiguous tensors; the backend below allocates and picks the step.


def _write_masked_affine(
    x: torch.Tensor, out: torch.Tensor, p: float, seed: int, scale: float, shift: float, fill: float
) -> None:
    n = x.numel()
    _affine_kernel[_grid(n)](
        x,
        out,
        n,
        seed,
        _threshold(p),
        scale,
        shift,
        fill,
        LANES=LANES,
        HAS_SHIFT=shift != 0.0,
        MULTIPLY=shift == 0.0 and fill == 0.0,
        enable_fp_fusion=False,
    )


def _write_strided_affine(
    x: torch.Tensor,
    out: torch.Tensor,
    plan: Plan,
    p: float,
    seed: int,
    scale: float,
    shift: float,
    fill: float,
) -> None:
    (_, s1, s2, s3), xs, os, _, _ = plan
    n = x.numel()
    _affine_strided_kernel[_grid(n)](
        x,
        out,
        n,
        s1,
        s2,
        s3,
        *xs,
        *os,
        seed,
        _threshold(p),
        scale,
        shift,
        fill,
        LANES=LANES,
        HAS_SHIFT=shift != 0.0,
        MULTIPLY=shift == 0.0 and fill == 0.0,
        enable_fp_fusion=False,
    )


def _write_keep_mask(out: torch.Tensor, p: float, seed: int) -> None:
    n = out.numel()
    _keep_kernel[_grid(n)](out.view(torch.int8), n, seed, _threshold(p), LANES=LANES)


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
    n = x.numel()
    _bias_kernel[_grid(n)](
        x,
        bias,
        residual if residual is not None else x,
        out,
        n,
        bias.numel(),
        seed,
        _threshold(p),
        scale,
        LANES=LANES,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=ACTIVATION_CODES[activation],
        enable_fp_fusion=False,
    )


class TritonBackend:
    """The GPU kernels: float16, bfloat16 and float32 CUDA tensors (CPU tensors in Triton's
    interpreter); the methods and arguments of the reference backend, the same bits."""

    name = "triton"

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
        if p >= 1.0 or not x.numel():
            return REFERENCE.masked_affine(x, noise_shape, p, seed, scale, shift, fill)
        if noise_shape == x.shape:
            # The output in the layout of torch.empty_like(x) (``_layout``); a non-contiguous
            # input is read where it lies.
            out = empty_like(x)
            plan = None if x.is_contiguous() else strided_plan(x.shape, x.stride(), out.stride())
            if plan is not None:
                _write_strided_affine(x, out, plan, p, seed, scale, shift, fill)
            elif out.is_contiguous():
                _write_masked_affine(x.contiguous(), out, p, seed, scale, shift, fill)
            else:  # more than 4 dims that do not merge: through a contiguous copy
                flat = torch.empty_like(x, memory_format=torch.contiguous_format)
                _write_masked_affine(x.contiguous(), flat, p, seed, scale, shift, fill)
                out.copy_(flat)
            return out
        keep = self.keep_mask(noise_shape, p, seed, x.device)
        return placed(x, affine(x, keep, scale, shift, fill))

    def keep_mask(
        self, shape: tuple[int, ...], p: float, seed: int, device: torch.device
    ) -> torch.Tensor:
        out = torch.empty(shape, dtype=torch.bool, device=device)
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
        mask = scaled_mask(self.keep_mask(shape, p, seed, device), scale, dtype)
        return mask if out is None else out.copy_(mask)

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
        if p >= 1.0 or not x.numel():
            return REFERENCE.bias_dropout(x, bias, residual, p, seed, scale, activation)
        xc = x.contiguous()
        out = empty_like(xc)
        res = residual.contiguous() if residual is not None else None
        _write_bias_dropout(xc, bias.contiguous(), res, out, p, seed, scale, activation)
        return out if xc is x else placed(x, out)  # a non-contiguous x: copied to its layout


TRITON = TritonBackend()
