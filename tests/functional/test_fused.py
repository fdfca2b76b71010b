"""Fused bias-dropout(-add) against the unfused expression, on every backend."""

from __future__ import annotations

import pytest
import torch

import dropkit
import dropkit.functional as F
from dropkit import nn

BACKENDS = ["numba", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_bias_dropout_add_equals_unfused(backend, dtype) -> None:
    x = torch.randn(3, 1000, 24).to(dtype)  # 72,000 elements: several chunks, rows cross them
    b, r = torch.randn(24).to(dtype), torch.randn(3, 1000, 24).to(dtype)
    with dropkit.backend(backend):
        fused = F.bias_dropout_add(x, b, r, 0.3, seed=7)
    keep = F.dropout_mask(x.shape, 0.3, seed=7)
    wide = torch.float64 if dtype == torch.float64 else torch.float32  # half: float32, once
    expected = (
        (x.to(wide) + b.to(wide))
        * torch.where(keep, torch.tensor(1 / 0.7, dtype=wide), torch.zeros((), dtype=wide))
        + r.to(wide)
    ).to(dtype)
    assert torch.equal(fused, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_bias_dropout_equals_unfused(backend, activation) -> None:
    x, b = torch.randn(50, 130), torch.randn(130)
    with dropkit.backend(backend):
        fused = F.bias_dropout(x, b, 0.4, activation=activation, seed=2)
    y = x + b  # rounded to float32 once, on every backend
    if activation != "gelu":
        y = torch.relu(y) if activation == "relu" else y
        assert torch.equal(fused, F.dropout(y, 0.4, seed=2))
        return
    # GELU's erf is computed differently by each backend (numba's in float64, torch's in
    # float32, SIMD variants by CPU): compare with the exact value from y. Each side may be off
    # by a rounding of the result plus erf's float32 error, scaled by the kept values' factor.
    exact = F.dropout(torch.nn.functional.gelu(y.double()), 0.4, seed=2)
    eps = torch.finfo(torch.float32).eps
    allowed = 4 * eps * (exact.abs() + y.double().abs() / 0.6)
    assert ((fused.double() - exact).abs() <= allowed).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_first_and_second_derivatives(backend, activation) -> None:
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    with dropkit.backend(backend):
        assert torch.autograd.gradcheck(
            lambda x, b, r: F.bias_dropout_add(x, b, r, 0.3, seed=4), (x, b, r)
        )
        assert torch.autograd.gradgradcheck(
            lambda x, b, r: F.bias_dropout_add(x, b, r, 0.3, seed=4), (x, b, r)
        )
        assert torch.autograd.gradcheck(
            lambda x, b: F.bias_dropout(x, b, 0.3, activation=activation, seed=4), (x, b)
        )
        assert torch.autograd.gradgradcheck(
            lambda x, b: F.bias_dropout(x, b, 0.3, activation=activation, seed=4), (x, b)
        )


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_second_derivatives_equal_the_unfused_expression(activation) -> None:
    # f = sum(out**2) with a residual that depends on x: the upstream gradient of the fused op
    # then depends on x too, and the second derivative needs every term.
    x = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)

    def fused(x, b):
        if activation is None:
            return F.bias_dropout_add(x, b, x**3, 0.5, seed=1)
        return F.bias_dropout(x, b, 0.5, activation=activation, seed=1) + x**3

    def unfused(x, b):
        y = x + b if activation is None else torch.nn.functional.gelu(x + b)
        return F.dropout(y, 0.5, seed=1) + x**3

    second = []
    for fn in (fused, unfused):
        (gx, gb) = torch.autograd.grad(fn(x, b).square().sum(), (x, b), create_graph=True)
        second.append(torch.autograd.grad((gx.sum(), gb.sum()), (x, b)))
    torch.testing.assert_close(second[0], second[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_bias_gradient_has_the_input_dtype_and_its_precision(dtype) -> None:
    x = torch.randn(300, 64, dtype=torch.float64).to(dtype).requires_grad_()
    b = torch.randn(64, dtype=torch.float64).to(dtype).requires_grad_()
    upstream = torch.randn(300, 64, dtype=torch.float64).to(dtype)
    F.bias_dropout(x, b, 0.3, seed=5).backward(upstream)
    assert b.grad is not None
    assert b.grad.dtype == dtype
    keep = F.dropout_mask(x.shape, 0.3, seed=5)
    exact = torch.where(keep, upstream.double() / 0.7, 0.0).sum(0)
    # Each term and the result are rounded to the dtype once; the sum is accumulated in the
    # input's dtype (float32 for half precision), a few roundings of that.
    magnitude = torch.where(keep, upstream.double() / 0.7, 0.0).abs().sum(0)
    rounding = torch.finfo(dtype).eps * (magnitude + exact.abs())
    accumulation = 16 * torch.finfo(dtype if dtype == torch.float64 else torch.float32).eps
    assert ((b.grad.double() - exact).abs() <= rounding + accumulation * magnitude).all()


def test_complex_inputs_are_right_without_activation_and_rejected_with_one() -> None:
    x = torch.randn(5, 4, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    r = torch.randn(5, 4, dtype=torch.complex128, requires_grad=True)
    keep = F.dropout_mask(x.shape, 0.4, seed=2)
    expected = r + torch.where(keep, (x + b) / 0.6, 0)
    torch.testing.assert_close(F.bias_dropout_add(x, b, r, 0.4, seed=2), expected)
    assert torch.autograd.gradcheck(
        lambda x, b, r: F.bias_dropout_add(x, b, r, 0.4, seed=2), (x, b, r)
    )
    assert torch.autograd.gradcheck(lambda x, b: F.bias_dropout(x, b, 0.4, seed=2), (x, b))
    with pytest.raises(
        TypeError, match="bias_dropout: activation 'relu' is not defined for complex"
    ):
        F.bias_dropout(x, b, 0.4, activation="relu")


def test_backward_without_activation_saves_no_mask() -> None:
    saved: list[int] = []
    x = torch.randn(512, 512, requires_grad=True)
    b = torch.randn(512, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        y = F.bias_dropout_add(x, b, torch.randn(512, 512), 0.5, seed=1)
    y.sum().backward()
    assert sum(saved) < 1024
    # The bias gradient is the column sum of the masked, scaled upstream gradient.
    keep = F.dropout_mask(x.shape, 0.5, seed=1)
    torch.testing.assert_close(b.grad, (keep.float() * 2).sum(0))


def test_edges_and_errors() -> None:
    x, b, r = torch.randn(4, 8), torch.randn(8), torch.randn(4, 8)
    torch.testing.assert_close(F.bias_dropout_add(x, b, r, 0.0), r + x + b)
    torch.testing.assert_close(F.bias_dropout_add(x, b, r, 0.5, training=False), r + x + b)
    torch.testing.assert_close(F.bias_dropout_add(x, b, r, 1.0, seed=0), r)
    torch.testing.assert_close(F.bias_dropout(x, b, 0.5, False, activation="relu"), (x + b).relu())
    with pytest.raises(ValueError, match="bias has 7 entries but x's last dim is 8"):
        F.bias_dropout_add(x, torch.randn(7), r, 0.1)
    with pytest.raises(ValueError, match="residual shape"):
        F.bias_dropout_add(x, b, torch.randn(4, 9), 0.1)
    with pytest.raises(ValueError, match="expected a 1D bias"):
        F.bias_dropout(x, torch.randn(2, 8), 0.1)
    with pytest.raises(ValueError, match="activation None, 'relu' or 'gelu', got 'tanh'"):
        F.bias_dropout(x, b, 0.1, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="share dtype and device"):
        F.bias_dropout_add(x, b.double(), r, 0.1)
    with pytest.raises(ValueError, match="bias_dropout_add: expected p"):
        F.bias_dropout_add(x, b, r, 2.0)


def test_module() -> None:
    layer = nn.BiasDropoutAdd(0.25)
    assert repr(layer) == "BiasDropoutAdd(p=0.25)"
    x, b, r = torch.randn(4, 8), torch.randn(8), torch.randn(4, 8)
    torch.manual_seed(3)
    out = layer(x, b, r)
    torch.manual_seed(3)
    assert torch.equal(out, F.bias_dropout_add(x, b, r, 0.25))
    layer.eval()
    torch.testing.assert_close(layer(x, b, r), r + x + b)
    with pytest.raises(ValueError, match="BiasDropoutAdd: expected p"):
        nn.BiasDropoutAdd(-0.5)
