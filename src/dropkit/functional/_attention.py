"""Scaled dot-product attention with dropkit's dropout on the attention weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function

from dropkit._registry import register_function
from dropkit.functional._elementwise import dropout
from dropkit.functional._validation import InputError, check_input, check_p

__all__ = ["scaled_dot_product_attention"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@register_function(
    "attention",
    p_at=4,
    p_name="dropout_p",
    p_default=0.0,
    training_at=None,
    training_name=None,
    training_default=None,
    replaces=torch_F.scaled_dot_product_attention,
)
def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Attention as :func:`torch.nn.functional.scaled_dot_product_attention` computes it, written
    out in plain PyTorch, with :func:`dropout` (dropkit's stream) on the attention weights.

    Same arguments and semantics as torch's: ``scale`` defaults to ``1 / sqrt(E)``; ``is_causal``
    masks with a lower-triangular mask aligned top-left; a boolean ``attn_mask`` is True where
    attention is allowed, a float one is added to the scores; ``enable_gqa`` repeats the key and
    value heads to the query's. Float16 and bfloat16 inputs are computed in float32, and
    a row with every position masked gives zeros, as torch's math reference does. Torch's fused
    kernels draw their dropout with torch's generator (on CPU, its slow bernoulli); this one is
    what :func:`dropkit.convert` with ``functional=True`` runs when ``dropout_p > 0``.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        attn_mask: optional, broadcastable to ``(..., L, S)``.
        dropout_p: the dropout rate on the attention weights. Default: 0.0.
        is_causal: apply a causal mask (with no ``attn_mask``). Default: False.
        scale: the factor on the scores. Default: ``1 / sqrt(E)``.
        enable_gqa: grouped-query attention: ``key`` and ``value`` have fewer heads (dim -3),
            a divisor of the query's. Default: False.
        seed: as in :func:`dropout`.

    Returns:
        ``(..., L, Ev)``.

    Example:
        >>> import torch
        >>> from dropkit.functional import scaled_dot_product_attention
        >>> q = k = v = torch.randn(2, 4, 8, 16)
        >>> torch.testing.assert_close(
        ...     scaled_dot_product_attention(q, k, v, is_causal=True),
        ...     torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        ... )
        >>> scaled_dot_product_attention(q, k, v, dropout_p=0.1, seed=0).shape
        torch.Size([2, 4, 8, 16])
    """
    if has_torch_function((query, key, value)):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            scaled_dot_product_attention,
            (query, key, value),
            query,
            key,
            value,
            attn_mask,
            dropout_p,
            is_causal,
            scale,
            enable_gqa,
            seed=seed,
        )
    name = "scaled_dot_product_attention"
    for tensor in (query, key, value):
        check_input(name, tensor)
    p = check_p(name, dropout_p)
    if is_causal and attn_mask is not None:
        raise ValueError(f"{name}: expected either attn_mask or is_causal=True, got both")
    if enable_gqa and key.dim() >= 3 and key.size(-3) != query.size(-3):
        heads, kv_heads = query.size(-3), key.size(-3)
        if heads % kv_heads:
            raise InputError(
                f"{name}: enable_gqa needs the query's heads ({heads}) to be a multiple of "
                f"the key's ({kv_heads})"
            )
        key = key.repeat_interleave(heads // kv_heads, -3)
        value = value.repeat_interleave(heads // kv_heads, -3)
    factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    dtype = query.dtype
    if dtype in _LOW_PRECISION:  # as torch's math reference: compute in float32
        query, key, value = query.float(), key.float(), value.float()
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.float()
    scores = query @ key.transpose(-2, -1) * factor
    masked: torch.Tensor | None = None
    if is_causal:
        length, source = query.size(-2), key.size(-2)
        allowed = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        masked = ~allowed
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        masked = ~attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask
    if masked is not None:
        scores = scores.masked_fill(masked, -math.inf)
    weights = torch.softmax(scores, -1)
    if masked is not None or attn_mask is not None:
        # A row with nothing to attend to: zeros, not the NaN of softmax over -inf only.
        weights = weights.masked_fill(scores.isneginf().all(-1, keepdim=True), 0.0)
    weights = dropout(weights, p, True, seed=seed)
    return (weights @ value).to(dtype)
