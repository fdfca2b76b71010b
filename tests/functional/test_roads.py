"""The two roads of a recorded dropout (``dropkit.functional._autograd.recorded``): a small mask
is written scaled and multiplied through torch's native autograd, which saves it; a large one
goes through the mask-free op, whose backward regenerates it. Same Philox mask, same bits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import dropkit
import dropkit.functional as F
from dropkit.functional import _autograd
from dropkit.functional._autograd import SAVED_MASK_BELOW

_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def _special(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Seeded values with NaN, +-inf, +-0.0 and negatives sprinkled in."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    pick = torch.randint(0, 8, shape, generator=generator)
    for code, value in enumerate([float("nan"), float("inf"), -float("inf"), 0.0, -0.0]):
        x[pick == code] = value
    return x.to(dtype)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, NaN payloads normalised (torch and the kernels may quiet a NaN differently)."""
    t = torch.where(torch.isnan(t), torch.full_like(t, float("nan")), t)
    return t.contiguous().view(_INT_VIEW[t.dtype])


def _run(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Output, input gradient and bytes saved for backward."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    leaf = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(leaf * 1.0)  # a non-leaf, so that in-place ops are allowed as in a model
        out.backward(grad)
    assert leaf.grad is not None
    return out.detach(), leaf.grad, sum(saved)


@pytest.fixture
def road(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``road("mask-free")`` closes the saved-mask road; ``road("saved")`` opens it for all."""

    def force(name: str) -> None:
        below = {"mask-free": 0, "saved": 2**62, "auto": SAVED_MASK_BELOW}[name]
        monkeypatch.setattr(_autograd, "SAVED_MASK_BELOW", below)

    return force


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numel", [SAVED_MASK_BELOW - 1, SAVED_MASK_BELOW, SAVED_MASK_BELOW + 1])
@pytest.mark.parametrize("inplace", [False, True])
def test_both_roads_give_the_same_bits_on_both_sides_of_the_threshold(
    road, dtype, numel, inplace
) -> None:
    x = _special((numel,), dtype, numel)
    grad = _special((numel,), dtype, numel + 1)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, 0.3, inplace=inplace, seed=11)

    results = {}
    for name in ("auto", "mask-free", "saved"):
        road(name)
        results[name] = _run(fn, x, grad)
    for name in ("mask-free", "saved"):
        assert torch.equal(_bits(results[name][0]), _bits(results["auto"][0])), name
        assert torch.equal(_bits(results[name][1]), _bits(results["auto"][1])), name
    # which road ran: the saved one keeps the scaled mask, the mask-free one nothing input-sized
    assert results["mask-free"][2] < 1024
    assert results["saved"][2] == numel * x.element_size()
    assert results["auto"][2] == (numel * x.element_size() if numel < SAVED_MASK_BELOW else 0)


@pytest.mark.parametrize(
    ("fn", "shape", "mask_numel"),
    [
        (lambda t: F.dropout2d(t, 0.4, seed=3), (8, 16, 9, 9), 8 * 16),
        (lambda t: F.dropout1d(t, 0.4, seed=3), (8, 16, 33), 8 * 16),
        (lambda t: F.locked_dropout(t, 0.4, seed=3), (12, 8, 16), 8 * 16),
        (lambda t: F.drop_path(t, 0.4, seed=3), (8, 5, 7), 8),
        (lambda t: F.dropout(t, 0.4, noise_shape=(1, None), seed=3), (6, 40), 40),
        (lambda t: F.dropout(t, 0.4, seed=3), (37, 23), 37 * 23),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_masks_give_the_same_bits_on_both_roads(road, fn, shape, mask_numel, dtype) -> None:
    x = _special(shape, dtype, 5)
    grad = _special(shape, dtype, 6)
    road("mask-free")
    out_free, grad_free, saved_free = _run(fn, x, grad)
    road("auto")
    out, grad_in, saved = _run(fn, x, grad)
    assert torch.equal(_bits(out), _bits(out_free))
    assert torch.equal(_bits(grad_in), _bits(grad_free))
    assert saved_free < 1024
    assert saved == mask_numel * x.element_size()


def test_a_large_input_with_a_small_shared_mask_saves_only_the_mask() -> None:
    # Channel dropout on a 4M-element map: the mask is N*C values, the input is never saved.
    x = torch.randn(16, 64, 64, 64, requires_grad=True)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = F.dropout2d(x, 0.5, seed=1)
    assert saved == [16 * 64]
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, (y.detach() != 0).float() * 2.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_mask_free(dtype) -> None:
    x = torch.randn(64, 32).to(dtype)
    _, _, saved = _run(lambda t: F.dropout(t, 0.3, seed=2), x, torch.ones_like(x))
    assert saved < 1024


def test_the_reference_backend_takes_the_saved_road_with_the_same_bits() -> None:
    x = _special((70, 50), torch.float32, 9)
    grad = _special((70, 50), torch.float32, 10)
    fn = lambda t: F.dropout(t, 0.6, seed=4)  # noqa: E731
    with dropkit.backend("reference"):
        reference = _run(fn, x, grad)
    default = _run(fn, x, grad)
    assert torch.equal(_bits(reference[0]), _bits(default[0]))
    assert torch.equal(_bits(reference[1]), _bits(default[1]))
    assert reference[2] == default[2] == x.numel() * 4


def test_double_backward_on_the_saved_road() -> None:
    x = torch.randn(20, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: F.dropout(t, 0.4, seed=5) ** 2, (x,))
