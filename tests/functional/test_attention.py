"""dropkit's scaled_dot_product_attention: torch's semantics, dropkit's dropout on the weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as torch_F

from dropkit.functional import scaled_dot_product_attention

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _qkv(dtype: torch.dtype, kv_heads: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 8, 16, generator=g).to(dtype)
    k = torch.randn(2, kv_heads, 10, 16, generator=g).to(dtype)
    v = torch.randn(2, kv_heads, 10, 12, generator=g).to(dtype)
    return q, k, v


def _masks() -> dict[str, dict[str, object]]:
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(8, 10, generator=g) > 0.3
    allowed[0] = False  # a row with nothing to attend to: zeros, as torch's
    return {
        "none": {},
        "bool": {"attn_mask": allowed},
        "float": {"attn_mask": torch.randn(2, 1, 8, 10, generator=g)},
        "causal": {"is_causal": True},
        "scale": {"scale": 0.3},
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("case", list(_masks()))
def test_equals_torch_without_dropout(dtype: torch.dtype, gqa: bool, case: str) -> None:
    q, k, v = _qkv(dtype, kv_heads=2 if gqa else 4)
    kwargs = dict(_masks()[case])
    if (
        isinstance(kwargs.get("attn_mask"), torch.Tensor)
        and kwargs["attn_mask"].is_floating_point()
    ):
        kwargs["attn_mask"] = kwargs["attn_mask"].to(dtype)
    got = scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **kwargs)
    expected = torch_F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **kwargs)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected)  # tolerances of the dtype


def test_dropout_on_the_weights_at_its_rate() -> None:
    # Equal scores give weights 1/S; value = identity makes the output the dropped weights.
    p, s = 0.3, 64
    q = torch.zeros(4, 8, 32, 16)
    k = torch.zeros(4, 8, s, 16)
    v = torch.eye(s).expand(4, 8, s, s)
    out = scaled_dot_product_attention(q, k, v, dropout_p=p, seed=0)
    kept = out != 0
    n = kept.numel()
    z = (kept.sum().item() - n * (1 - p)) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 4
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (s * (1 - p))))


def test_seeded_dropout_reproduces_and_has_gradients() -> None:
    q, k, v = (t.requires_grad_() for t in _qkv(torch.float32))
    a = scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=3)
    b = scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=4))
    a.sum().backward()
    assert all(t.grad is not None and t.grad.isfinite().all() for t in (q, k, v))


def test_dropout_p_one_gives_zeros_and_bad_arguments_raise() -> None:
    q, k, v = _qkv(torch.float32)
    assert torch.equal(
        scaled_dot_product_attention(q, k, v, dropout_p=1.0), torch.zeros(2, 4, 8, 12)
    )
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        scaled_dot_product_attention(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        scaled_dot_product_attention(q, k, v, torch.ones(8, 10, dtype=torch.bool), is_causal=True)
    q3, k3, v3 = _qkv(torch.float32, kv_heads=3)
    with pytest.raises(ValueError, match="multiple"):
        scaled_dot_product_attention(q3, k3, v3, enable_gqa=True)
