"""The small-tensor road: below 2**16 elements (documented in docs/design.md), a float32 or
float64 dropout that records grad on the CPU kernels runs as torch's native ops on the kept
mask. It must give the bits of the mask-free road, for outputs and gradients, on both sides of
the threshold and at it; the same Philox mask; and save the mask only below the threshold."""

from __future__ import annotations

import sys

import pytest
import torch

import dropkit
from dropkit.functional import dropout, dropout_mask

THRESHOLD = 1 << 16  # the documented size threshold
SEED = 2**40 + 7
INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(INT_VIEW[t.element_size()])


def _hostile(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Normal values with NaN, +inf, -inf, -0.0 and negatives among the first 80 elements."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 3
    x[0:80:5] = float("nan")
    x[1:80:5] = float("inf")
    x[2:80:5] = -float("inf")
    x[3:80:5] = -0.0
    x[4:80:5] = -2.5
    return x.to(dtype)


def _run(x: torch.Tensor, grad: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_()
    out = dropout(leaf, p, seed=SEED)
    out.backward(grad)
    assert leaf.grad is not None
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_both_sides_of_the_threshold_give_the_same_bits(dtype: torch.dtype, p: float) -> None:
    # Stream element i drives element i at every size, so the first n elements of a call on
    # THRESHOLD + 1 elements (mask-free road) must equal, bit for bit, a call on n elements.
    big = THRESHOLD + 1
    x = _hostile(big, dtype, 1)
    grad = _hostile(big, dtype, 2)
    out_big, grad_big = _run(x, grad, p)
    for n in (1000, THRESHOLD - 1, THRESHOLD):
        out, g = _run(x[:n], grad[:n], p)
        assert torch.equal(_bits(out), _bits(out_big[:n])), n
        assert torch.equal(_bits(g), _bits(grad_big[:n])), n
    # A 2-D input is the same stream, row-major.
    out, g = _run(x[: 64 * 256].view(64, 256), grad[: 64 * 256].view(64, 256), p)
    assert torch.equal(_bits(out).flatten(), _bits(out_big[: 64 * 256]))
    assert torch.equal(_bits(g).flatten(), _bits(grad_big[: 64 * 256]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1000, THRESHOLD - 1, THRESHOLD])
def test_small_road_matches_the_reference_backend(dtype: torch.dtype, n: int) -> None:
    x = _hostile(n, dtype, 3)
    grad = _hostile(n, dtype, 4)
    out, g = _run(x, grad, 0.3)
    with dropkit.backend("reference"):
        ref_out, ref_g = _run(x, grad, 0.3)
    assert torch.equal(_bits(out), _bits(ref_out))
    assert torch.equal(_bits(g), _bits(ref_g))
    # The mask is the stream's, and a dropped NaN, inf or negative is +0.0 (bits all zero).
    keep = dropout_mask((n,), 0.3, seed=SEED)
    assert torch.equal(_bits(out)[~keep], torch.zeros_like(_bits(out)[~keep]))
    assert torch.equal(_bits(g)[~keep], torch.zeros_like(_bits(g)[~keep]))
    assert torch.equal(_bits(out)[keep], _bits(x[keep] * (1 / 0.7)))


def _saved_bytes(x: torch.Tensor) -> int:
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dropout(x, 0.5, seed=1).sum().backward()
    return sum(saved)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_mask_is_saved_below_the_threshold_only(dtype: torch.dtype) -> None:
    below = torch.randn(THRESHOLD - 1, dtype=dtype, requires_grad=True)
    assert _saved_bytes(below) == below.numel() * below.element_size()
    at = torch.randn(THRESHOLD, dtype=dtype, requires_grad=True)
    assert _saved_bytes(at) < 1024


def _dropkit_frames_in_backward(n: int) -> int:
    x = torch.randn(n, requires_grad=True)
    out = dropout(x, 0.5, seed=3)
    frames: list[str] = []

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and "dropkit" in frame.f_code.co_filename:
            frames.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        out.backward(torch.ones_like(out))
    finally:
        sys.setprofile(None)
    return len(frames)


def test_small_backward_runs_no_dropkit_python() -> None:
    assert _dropkit_frames_in_backward(64 * 256) == 0
    assert _dropkit_frames_in_backward(THRESHOLD) > 0  # the mask-free road's Python backward


def test_small_road_double_backward() -> None:
    x = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: dropout(t, 0.4, seed=9), (x,))
