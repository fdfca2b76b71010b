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
        torch.where(keep, (x.to(wide) + b.to(wide)) * (1 / 0.7), torch.zeros((), dtype=wide))
        + r.to(wide)
    ).to(dtype)
    assert torch.equal(fused, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_bias_dropout_equals_unfused(backend, activation) -> None:
    x, b = torch.randn(50, 130), torch.randn(130)
    with dropkit.backend(backend):
        fused = F.bias_dropout(x, b, 0.4, activation=activation, seed=2)
    y = x + b
    y = {None: y, "relu": torch.relu(y), "gelu": torch.nn.functional.gelu(y)}[activation]
    expected = F.dropout(y, 0.4, seed=2)
    if activation == "gelu":  # numba's erf and torch's may differ in the last bit
        torch.testing.assert_close(fused, expected, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(fused, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_gradients(backend, activation) -> None:
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    with dropkit.backend(backend):
        assert torch.autograd.gradcheck(
            lambda x, b, r: F.bias_dropout_add(x, b, r, 0.3, seed=4), (x, b, r)
        )
        assert torch.autograd.gradcheck(
            lambda x, b: F.bias_dropout(x, b, 0.3, activation=activation, seed=4), (x, b)
        )


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


def test_bench_fused_times_both() -> None:
    from dropkit._bench import bench_fused

    result = bench_fused(shape=(4, 8, 16), rounds=1)
    assert set(result) == {"forward", "forward+backward"}
    assert all(t > 0 for row in result.values() for t in row.values())
