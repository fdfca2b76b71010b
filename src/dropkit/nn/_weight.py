"""Layers that drop weights: EmbeddingDropout (whole words) and WeightDrop (DropConnect)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn
from torch.func import functional_call

from dropkit import functional as F
from dropkit.functional._validation import check_p
from dropkit.nn._dropout import not_scriptable

__all__ = ["EmbeddingDropout", "WeightDrop"]


class EmbeddingDropout(nn.Module):
    """An :class:`torch.nn.Embedding` whose rows (words) are dropped during training.

    Every occurrence of a dropped word in the batch reads a zero vector; kept rows are scaled
    by ``1/(1-p)``. See :func:`dropkit.functional.embedding_dropout`. The wrapped embedding's
    parameters stay where they are (``state_dict`` keys gain an ``embedding.`` prefix).

    Args:
        embedding: the embedding to wrap.
        p: probability of dropping a word. Default: 0.5.

    Shape:
        - Input: integer indices of any shape. Output: ``(*, embedding_dim)``.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> emb = nn.EmbeddingDropout(torch.nn.Embedding(100, 8), p=0.1)
        >>> emb(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 8])
    """

    p: float

    def __init__(self, embedding: nn.Embedding, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                f"EmbeddingDropout: expected an nn.Embedding, got {type(embedding).__name__}"
            )
        self.embedding = embedding
        self.p = check_p("EmbeddingDropout", p)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        emb = self.embedding
        weight = F.embedding_dropout(emb.weight, self.p, self.training)
        return torch_F.embedding(
            input,
            weight,
            emb.padding_idx,
            emb.max_norm,
            emb.norm_type,
            emb.scale_grad_by_freq,
            emb.sparse,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def __prepare_scriptable__(self) -> nn.Module:
        raise not_scriptable(self)


class WeightDrop(nn.Module):
    """DropConnect on named weights of a wrapped module, e.g. an LSTM's ``weight_hh_l0``.

    Each training forward calls the module with freshly dropped copies of the named weights
    through :func:`torch.func.functional_call`; the parameters themselves are never modified,
    so gradients reach them and recurrent modules keep their flattened weights consistent
    (the older approach of deleting and re-assigning parameters breaks on current PyTorch).
    See :func:`dropkit.functional.dropconnect` (Wan et al. 2013; Merity et al. 2017,
    https://arxiv.org/abs/1708.02182).

    Args:
        module: the module whose weights to drop.
        weights: the parameter name or names, as in ``module.named_parameters()``.
        p: probability of dropping a weight. Default: 0.5.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> lstm = nn.WeightDrop(torch.nn.LSTM(4, 8), ["weight_hh_l0"], p=0.3)
        >>> out, _ = lstm(torch.randn(5, 2, 4))
        >>> out.shape
        torch.Size([5, 2, 8])
    """

    p: float

    def __init__(self, module: nn.Module, weights: str | Sequence[str], p: float = 0.5) -> None:
        super().__init__()
        self.p = check_p("WeightDrop", p)
        names = [weights] if isinstance(weights, str) else list(weights)
        params = dict(module.named_parameters())
        missing = [n for n in names if n not in params]
        if not names or missing:
            raise ValueError(
                f"WeightDrop: {type(module).__name__} has no parameter named {missing or names!r}; "
                f"expected some of {sorted(params)}"
            )
        self.module = module
        self.weights = tuple(names)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        params = self.module.get_parameter
        dropped = {name: F.dropconnect(params(name), self.p, True) for name in self.weights}
        return functional_call(self.module, dropped, args, kwargs, strict=False)

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}, p={self.p}"

    def __prepare_scriptable__(self) -> nn.Module:
        raise not_scriptable(self)
