"""The fused transformer epilogue as a layer."""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit._registry import register_layer
from dropkit.nn._dropout import _DropoutBase

__all__ = ["BiasDropoutAdd"]


@register_layer("fused")
class BiasDropoutAdd(_DropoutBase):
    """``residual + dropout(x + bias)`` in one pass.

    See :func:`dropkit.functional.bias_dropout_add`.

    The layer holds no bias: pass the bias of the preceding linear layer, created with
    ``bias=False`` so that it is added here, fused with the dropout.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> proj = torch.nn.Linear(16, 16, bias=False)
        >>> bias = torch.nn.Parameter(torch.zeros(16))
        >>> epilogue = nn.BiasDropoutAdd(0.1)
        >>> x = torch.randn(2, 5, 16)
        >>> epilogue(proj(x), bias, x).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p, False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return F.bias_dropout_add(x, bias, residual, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
