"""Dropout on weights rather than activations: DropConnect and embedding (word) dropout."""

from __future__ import annotations

import torch
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._elementwise import inverted_dropout
from dropkit.functional._validation import check_input, check_rank

__all__ = ["dropconnect", "embedding_dropout"]


@register_function("embedding")
def embedding_dropout(
    weight: torch.Tensor, p: float = 0.5, training: bool = True, *, seed: int | None = None
) -> torch.Tensor:
    """Drop whole rows (words) of an embedding matrix, scaling the kept rows by ``1/(1-p)``.

    Every occurrence of a dropped word in the batch then reads a zero vector. From Gal &
    Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent Neural Networks"
    (NeurIPS 2016, https://arxiv.org/abs/1512.05287), as used by Merity et al. (AWD-LSTM,
    https://arxiv.org/abs/1708.02182).

    Args:
        weight: the ``(num_embeddings, embedding_dim)`` matrix.
        p: probability of dropping a row, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``weight`` itself. Default: True.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Weight: ``(V, D)``. Output: the same shape, differentiable with respect to ``weight``.

    Example:
        >>> import torch
        >>> from dropkit.functional import embedding_dropout
        >>> w = embedding_dropout(torch.ones(6, 3), 0.5, seed=0)
        >>> bool(((w == 0).all(1) | (w == 2).all(1)).all())
        True
    """
    if has_torch_function_unary(weight):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(embedding_dropout, (weight,), weight, p, training, seed=seed)
    check_input("embedding_dropout", weight)
    check_rank("embedding_dropout", weight, (2,), "(num_embeddings, embedding_dim)")
    return inverted_dropout(
        "embedding_dropout", weight, p, training, False, (weight.shape[0], 1), seed
    )


@register_function("dropconnect")
def dropconnect(
    weight: torch.Tensor, p: float = 0.5, training: bool = True, *, seed: int | None = None
) -> torch.Tensor:
    """DropConnect: drop individual weights with probability ``p``, scale the rest by ``1/(1-p)``.

    From Wan et al., "Regularization of Neural Networks using DropConnect" (ICML 2013,
    https://proceedings.mlr.press/v28/wan13.html). Kept weights are rescaled (inverted
    dropout), so at inference the weights are used as they are.

    Args:
        weight: a weight tensor of any shape.
        p: probability of dropping a weight, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``weight`` itself. Default: True.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Weight: any shape. Output: the same shape, differentiable with respect to ``weight``.

    Example:
        >>> import torch
        >>> from dropkit.functional import dropconnect
        >>> sorted(set(dropconnect(torch.ones(4, 4), 0.5, seed=1).flatten().tolist()))
        [0.0, 2.0]
    """
    if has_torch_function_unary(weight):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(dropconnect, (weight,), weight, p, training, seed=seed)
    return inverted_dropout("dropconnect", weight, p, training, False, None, seed)
