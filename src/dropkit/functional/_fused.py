"""Fused epilogues: ``residual + dropout(x + bias)`` and ``dropout(activation(x + bias))``.

The transformer block ends with a bias add, dropout and a residual add: three passes over the
activations in eager PyTorch, one here. The mask is the dropkit stream mask of ``x``'s shape,
so ``bias_dropout_add(x, b, r, p, seed=s)`` equals ``r + dropout(x + b, p, seed=s)``; backward
regenerates it from the seed (without an activation nothing input-sized is saved; with one,
``x`` is kept for the activation's derivative, as any activation layer does).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._autograd import ElementMask, apply_noise, inverted_scale
from dropkit.functional._validation import (
    InputError,
    InputTypeError,
    check_input,
    check_p,
    check_training,
    resolve_seed,
)
from dropkit.kernels import compute_dtype, reference_bias_dropout, select, stream_keep_mask

__all__ = ["bias_dropout", "bias_dropout_add"]

Activation = Literal["relu", "gelu"] | None
_ACTIVATIONS = (None, "relu", "gelu")


def _check(name: str, x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None) -> None:
    check_input(name, x)
    if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or x.dim() < 1:
        raise InputError(
            f"{name}: expected a 1D bias of size {x.shape[-1] if x.dim() else '?'} (the last dim "
            f"of x), got {tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias)}"
        )
    if bias.shape[0] != x.shape[-1]:
        raise InputError(
            f"{name}: bias has {bias.shape[0]} entries but x's last dim is {x.shape[-1]}"
        )
    if residual is not None and residual.shape != x.shape:
        raise InputError(
            f"{name}: residual shape {tuple(residual.shape)} differs from x's {tuple(x.shape)}"
        )
    others = (bias,) if residual is None else (bias, residual)
    for t in others:
        if t.dtype != x.dtype or t.device != x.device:
            raise InputTypeError(
                f"{name}: x, bias and residual must share dtype and device; got x {x.dtype} on "
                f"{x.device} and {t.dtype} on {t.device}"
            )


def _act(y: torch.Tensor, activation: Activation) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(y)
    if activation == "gelu":
        return torch_F.gelu(y)
    return y


def _act_grad(y: torch.Tensor, activation: Activation) -> torch.Tensor:
    """d activation / d y (1 for the identity)."""
    if activation == "relu":
        return (y > 0).to(y.dtype)
    if activation == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(y * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * y * y) * (1.0 / math.sqrt(2.0 * math.pi))
        return cdf + y * pdf
    return torch.ones_like(y)


class _BiasDropout(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        bias: torch.Tensor,
        residual: torch.Tensor | None,
        p: float,
        seed: int,
        activation: Activation,
    ) -> torch.Tensor:
        ctx.p, ctx.seed, ctx.activation = p, seed, activation
        ctx.has_residual = residual is not None
        if activation is not None:
            ctx.save_for_backward(x, bias)
        scale = inverted_scale(p)
        return select(x).bias_dropout(x, bias, residual, p, seed, scale, activation)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mask = ElementMask(tuple(grad.shape), ctx.p, ctx.seed, inverted_scale(ctx.p))
        # With create_graph=True (grad mode on here) every step stays differentiable, so second
        # derivatives through the mask, the activation and the bias are kept.
        grad_x = apply_noise(grad, mask, False) if torch.is_grad_enabled() else mask.apply(grad)
        if ctx.activation is not None:
            x, bias = ctx.saved_tensors
            grad_x = grad_x * _act_grad(x + bias, ctx.activation)
        grad_bias = _bias_grad(grad_x)
        grad_residual = grad if ctx.has_residual else None
        return grad_x, grad_bias, grad_residual, None, None, None


def _bias_grad(grad_x: torch.Tensor) -> torch.Tensor:
    """Sum over every dim but the last, accumulated in float32 for half precision and in the
    input's own dtype otherwise (float64 stays float64, complex stays complex)."""
    rows = grad_x.reshape(-1, grad_x.shape[-1])
    return rows.sum(0, dtype=compute_dtype(grad_x.dtype)).to(grad_x.dtype)


def _fused(
    name: str,
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    p: float,
    seed: int | None,
    activation: Activation,
) -> torch.Tensor:
    seed_value = resolve_seed(name, seed)
    if isinstance(seed_value, torch.Tensor):  # in a graph or a transform: torch ops only
        keep = stream_keep_mask(tuple(x.shape), p, seed_value, x.device)
        return reference_bias_dropout(x, bias, residual, keep, inverted_scale(p), activation)
    out: torch.Tensor = _BiasDropout.apply(  # type: ignore[no-untyped-call]
        x, bias, residual, p, seed_value, activation
    )
    return out


@register_function("fused", p_at=3, training_at=4)
def bias_dropout_add(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """``residual + dropout(x + bias, p)`` in one pass: the transformer block's epilogue.

    Args:
        x: ``(*, H)``, e.g. the output of a linear layer without its bias.
        bias: ``(H,)``.
        residual: the same shape as ``x``.
        p: probability of zeroing an element of ``x + bias``, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``residual + x + bias``.
        seed: the mask's seed; the mask equals ``dropout_mask(x.shape, p, seed=seed)``.

    Shape:
        - x, residual: ``(*, H)``; bias: ``(H,)``. Output: ``(*, H)``.

    Example:
        >>> import torch
        >>> from dropkit.functional import bias_dropout_add, dropout
        >>> x, b, r = torch.randn(4, 8), torch.randn(8), torch.randn(4, 8)
        >>> fused = bias_dropout_add(x, b, r, 0.1, seed=3)
        >>> torch.allclose(fused, r + dropout(x + b, 0.1, seed=3))
        True
    """
    if has_torch_function_unary(x):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            bias_dropout_add, (x,), x, bias, residual, p, training, seed=seed
        )
    _check("bias_dropout_add", x, bias, residual)
    p = check_p("bias_dropout_add", p)
    if not check_training("bias_dropout_add", training) or p == 0.0:
        return residual + (x + bias)
    return _fused("bias_dropout_add", x, bias, residual, p, seed, None)


@register_function("fused", p_at=2, training_at=3)
def bias_dropout(
    x: torch.Tensor,
    bias: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    activation: Activation = None,
    seed: int | None = None,
) -> torch.Tensor:
    """``dropout(activation(x + bias), p)`` in one pass; activation None, ``"relu"`` or ``"gelu"``.

    GELU is the exact (erf) form, as :func:`torch.nn.functional.gelu` by default.

    Args:
        x: ``(*, H)``.
        bias: ``(H,)``.
        p: probability of zeroing an element, in [0, 1]. Default: 0.5.
        training: apply dropout if True; otherwise return ``activation(x + bias)``.
        activation: None, ``"relu"`` or ``"gelu"``.
        seed: the mask's seed; the mask equals ``dropout_mask(x.shape, p, seed=seed)``.

    Shape:
        - x: ``(*, H)``; bias: ``(H,)``. Output: ``(*, H)``.

    Example:
        >>> import torch
        >>> from dropkit.functional import bias_dropout, dropout
        >>> x, b = torch.randn(4, 8), torch.randn(8)
        >>> y = bias_dropout(x, b, 0.2, activation="relu", seed=1)
        >>> torch.allclose(y, dropout(torch.relu(x + b), 0.2, seed=1))
        True
    """
    if has_torch_function_unary(x):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            bias_dropout, (x,), x, bias, p, training, activation=activation, seed=seed
        )
    _check("bias_dropout", x, bias, None)
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"bias_dropout: expected activation None, 'relu' or 'gelu', got {activation!r}"
        )
    if activation is not None and x.is_complex():
        raise InputTypeError(
            f"bias_dropout: activation {activation!r} is not defined for complex inputs (got "
            f"{x.dtype}); use activation=None, or apply it to the real and imaginary parts"
        )
    p = check_p("bias_dropout", p)
    if not check_training("bias_dropout", training) or p == 0.0:
        return _act(x + bias, activation)
    return _fused("bias_dropout", x, bias, None, p, seed, activation)
