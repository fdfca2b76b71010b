"""Concrete dropout as a function: the relaxed mask, its exact gradient in p, the stream."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import dropkit
from dropkit.functional import (
    concrete_dropout,
    concrete_dropout1d,
    concrete_dropout2d,
    concrete_dropout3d,
)
from dropkit.functional._concrete import concrete_reference, relaxed_moments, stream_open_uniform

OPS = {
    "element": (concrete_dropout, (6, 700)),
    "channel1d": (concrete_dropout1d, (4, 5, 30)),
    "channel2d": (concrete_dropout2d, (3, 6, 7, 7)),
    "channel3d": (concrete_dropout3d, (2, 3, 4, 4, 4)),
}


def _mask_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if name == "element" else (shape[0], shape[1]) + (1,) * (len(shape) - 2)


def test_open_uniforms_are_inside_and_exact() -> None:
    u = stream_open_uniform(50_000, 3, "cpu", torch.float32)
    assert bool((u > 0).all())
    assert bool((u < 1).all())
    # exact in float32: the float64 values are the same numbers
    assert torch.equal(u.double(), stream_open_uniform(50_000, 3, "cpu", torch.float64))
    assert torch.equal(1 - u, (1 - u.double()).float())


@pytest.mark.parametrize("numel", [1, 4095, 4097, 40_000])  # serial and parallel, chunk edges
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernel_matches_the_reference_bit_for_bit(numel: int, dtype: torch.dtype) -> None:
    pytest.importorskip("numba")
    from dropkit.kernels._uniform_cpu import write_open_uniform

    out = torch.empty(numel, dtype=dtype)
    write_open_uniform(out, 2**63 + 11)
    assert torch.equal(out, stream_open_uniform(numel, 2**63 + 11, "cpu", dtype))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("t", [0.1, 0.5, 0.3])  # 1/t = 10 and 2: the kernel without logs; 0.3: logs
def test_fast_road_matches_the_reference(name: str, t: float) -> None:
    op, shape = OPS[name]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    y = op(x, p, seed=5, temperature=t)
    ref = concrete_reference(x, p, _mask_shape(name, shape), 5, t)
    # float64 through the same operations in another order: rounding only
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((y * g).sum(), (x, p))
    expected = torch.autograd.grad((ref * g).sum(), (x, p))
    torch.testing.assert_close(grads[0], expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], expected[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("p0", [0.05, 0.3, 0.8])
def test_gradient_in_p_is_the_finite_difference_with_the_noise_fixed(name: str, p0: float) -> None:
    op, shape = OPS[name]
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn(shape, dtype=torch.float64)
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    # A temperature of 0.5 keeps the relaxed mask smooth enough for a step of 1e-6.
    (grad,) = torch.autograd.grad((op(x, p, seed=9, temperature=0.5) * g).sum(), p)
    h = 1e-6

    def f(value: float) -> float:
        return float((op(x, value, seed=9, temperature=0.5) * g).sum())

    numeric = (f(p0 + h) - f(p0 - h)) / (2 * h)
    # central difference: truncation O(h^2 f''') and rounding O(eps |f| / h)
    assert math.isclose(float(grad), numeric, rel_tol=1e-6, abs_tol=1e-6)


def test_float32_gradients_match_the_float64_reference() -> None:
    x = torch.randn(64, 300)
    g = torch.randn(64, 300)
    p = torch.tensor(0.25, requires_grad=True)
    xd = x.double().requires_grad_()
    pd = p.detach().double().requires_grad_()
    y = concrete_dropout(x.requires_grad_(), p, seed=1)
    ref = concrete_reference(xd, pd, tuple(x.shape), 1, 0.1)
    # float32 logits reach |a| ~ 200 at t = 0.1: a few ulps of that (~1e-5) through the
    # sigmoid (slope <= 1/4) and the scale 1/(1-p)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * x.abs().max().item())
    gx, gp = torch.autograd.grad((y * g).sum(), (x, p))
    rx, rp = torch.autograd.grad((ref * g.double()).sum(), (xd, pd))
    torch.testing.assert_close(gx.double(), rx, rtol=1e-5, atol=1e-5 * g.abs().max().item())
    # p's gradient sums 19200 float32 terms
    assert math.isclose(float(gp), float(rp), rel_tol=1e-3)


def test_only_the_input_is_saved_and_nothing_with_a_fixed_rate() -> None:
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    x = torch.randn(32, 4096, requires_grad=True)
    p = torch.tensor(0.2, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = concrete_dropout(x, p, seed=0)
    assert len(saved) == 1
    assert saved[0].data_ptr() == x.data_ptr()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        concrete_dropout(x, 0.2, seed=0)
    assert saved == []
    y.sum().backward()  # the regenerated mask: the same gradient as the reference
    ref = concrete_reference(x, p, tuple(x.shape), 0, 0.1)
    (rx,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(x.grad, rx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_a_relaxed_factor_is_above_one_half_with_probability_one_minus_p(p: float) -> None:
    n = 200_000
    y = concrete_dropout(torch.ones(n), p, seed=4)
    kept = int((y * (1 - p) > 0.5).sum())
    assert stats.binomtest(kept, n, 1 - p).pvalue > 1e-4


@pytest.mark.parametrize(("p", "t"), [(0.2, 0.1), (0.5, 0.5), (0.7, 1.0)])
def test_mask_moments_match_relaxed_moments(p: float, t: float) -> None:
    n = 400_000
    m = concrete_dropout(torch.ones(n, dtype=torch.float64), p, seed=8, temperature=t)
    mean, second = relaxed_moments(p, t)
    sd = math.sqrt(second - mean**2)
    assert abs(float(m.mean()) - mean) < 5 * sd / math.sqrt(n)
    assert abs(float(m.square().mean()) - second) < 5 * float(m.square().std()) / math.sqrt(n)


def test_channel_masks_are_shared_over_positions() -> None:
    y = concrete_dropout2d(torch.ones(4, 8, 5, 5), 0.5, seed=2)
    flat = y.flatten(2)
    assert torch.equal(flat, flat[..., :1].expand_as(flat))
    assert len(set(flat[..., 0].flatten().tolist())) > 1


def test_seeded_and_reproducible() -> None:
    x = torch.randn(10, 10)
    assert torch.equal(concrete_dropout(x, 0.3, seed=1), concrete_dropout(x, 0.3, seed=1))
    assert not torch.equal(concrete_dropout(x, 0.3, seed=1), concrete_dropout(x, 0.3, seed=2))
    torch.manual_seed(5)
    a = concrete_dropout(x, 0.3)
    torch.manual_seed(5)
    assert torch.equal(a, concrete_dropout(x, 0.3))


def test_off_and_zero_rate_return_the_input() -> None:
    x = torch.randn(3, 4)
    assert concrete_dropout(x, torch.tensor(0.4), training=False) is x
    assert concrete_dropout(x, 0.0) is x


def test_half_precision_computes_in_float32() -> None:
    x = torch.randn(16, 64).bfloat16()
    y = concrete_dropout(x, 0.3, seed=3)
    assert y.dtype == torch.bfloat16
    # computed in float32 and rounded once
    assert torch.equal(y, concrete_dropout(x.float(), 0.3, seed=3).bfloat16())


def test_under_a_transform_the_reference_road_gives_the_same_gradient() -> None:
    x = torch.randn(8, 20, dtype=torch.float64)
    p = torch.tensor(0.3, dtype=torch.float64)
    under = torch.func.grad(lambda q: concrete_dropout(x, q, seed=6).sum())(p)
    eager = p.clone().requires_grad_()
    concrete_dropout(x, eager, seed=6).sum().backward()
    torch.testing.assert_close(under, eager.grad, rtol=1e-9, atol=1e-9)


def test_reference_backend_gives_the_same_values_to_rounding() -> None:
    x = torch.randn(50, 100)
    with dropkit.backend("reference"):
        ref = concrete_dropout(x, 0.3, seed=3)
    # float32 logs on the reference, the float64 power form in the CPU kernel: the reference's
    # rounding of logits up to ~200 (a few 1e-5) through the sigmoid's slope (<= 1/4)
    torch.testing.assert_close(
        concrete_dropout(x, 0.3, seed=3), ref, rtol=1e-5, atol=1e-5 * x.abs().max().item()
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: concrete_dropout(torch.ones(3), 1.0), r"expected p in \(0, 1\)"),
        (lambda: concrete_dropout(torch.ones(3), torch.tensor(0.0)), r"expected p in \(0, 1\)"),
        (lambda: concrete_dropout(torch.ones(3), torch.ones(2) / 2), "one-element"),
        (lambda: concrete_dropout(torch.ones(3), "0.1"), "expected p to be a number"),
        (lambda: concrete_dropout(torch.ones(3), 0.1, temperature=0.0), "temperature > 0"),
        (lambda: concrete_dropout(torch.ones(3), 0.1, training=1), "expected training"),
        (lambda: concrete_dropout2d(torch.ones(3, 4, 5), 0.1), "got 3D; for a single"),
        (lambda: concrete_dropout1d(torch.ones(3, 4, 5, 6), 0.1), r"expected a 3D input"),
        (lambda: concrete_dropout(torch.ones(3, dtype=torch.int64), 0.1), "floating-point"),
    ],
)
def test_bad_arguments_raise_naming_the_problem(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_compiles_as_one_graph_with_the_gradient_in_p() -> None:
    x = torch.randn(8, 20, dtype=torch.float64)
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(
        lambda a, q: concrete_dropout(a, q, seed=6), backend="eager", fullgraph=True
    )
    y = compiled(x, p)
    (grad,) = torch.autograd.grad(y.sum(), p)
    eager = p.detach().clone().requires_grad_()
    expected = concrete_dropout(x, eager, seed=6)
    (expected_grad,) = torch.autograd.grad(expected.sum(), eager)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)
