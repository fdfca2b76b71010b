"""``predict``'s inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs,
turned into a call, its batch size, and its batched tensors mapped (sliced, replicated)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["Inputs"]

Inputs = torch.Tensor | Sequence[Any] | Mapping[str, Any]


def _as_call(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, list | tuple):
        return tuple(inputs), {}
    raise TypeError(
        "predict: expected inputs to be a tensor, a tuple of positional inputs or a dict of "
        f"keyword inputs, got {type(inputs).__name__}"
    )


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for leaf in tree_flatten((args, kwargs))[0]:
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0:
            return int(leaf.shape[0])
    raise ValueError("predict: expected inputs with at least one tensor with the batch in dim 0")


def _batch_map(
    args: tuple[Any, ...], kwargs: dict[str, Any], n: int, fn: Callable[[torch.Tensor], Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Apply ``fn`` to every input tensor whose dim 0 is the batch ``n``."""

    def one(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0 and leaf.shape[0] == n:
            return fn(leaf)
        return leaf

    mapped: tuple[tuple[Any, ...], dict[str, Any]] = tree_map(one, (args, kwargs))
    return mapped
