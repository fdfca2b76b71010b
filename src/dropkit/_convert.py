"""Swap torch's dropout layers in a model for dropkit's."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from dropkit import nn as dk_nn

__all__ = ["convert"]

_logger = logging.getLogger("dropkit")

ModuleT = TypeVar("ModuleT", bound=nn.Module)

# Exact types only: a user's subclass of nn.Dropout may override forward, and swapping it would
# silently drop that behaviour.
_SWAPS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    nn.Dropout: lambda m: dk_nn.Dropout(m.p, m.inplace),  # type: ignore[arg-type]
    nn.Dropout1d: lambda m: dk_nn.Dropout1d(m.p, m.inplace),  # type: ignore[arg-type]
    nn.Dropout2d: lambda m: dk_nn.Dropout2d(m.p, m.inplace),  # type: ignore[arg-type]
    nn.Dropout3d: lambda m: dk_nn.Dropout3d(m.p, m.inplace),  # type: ignore[arg-type]
    nn.AlphaDropout: lambda m: dk_nn.AlphaDropout(m.p, m.inplace),  # type: ignore[arg-type]
    nn.FeatureAlphaDropout: lambda m: dk_nn.FeatureAlphaDropout(m.p, m.inplace),  # type: ignore[arg-type]
}


def _swapped(module: nn.Module) -> nn.Module | None:
    make = _SWAPS.get(type(module))
    if make is None:
        return None
    new = make(module)
    new.train(module.training)
    return new


def convert(model: ModuleT, *, inplace: bool = False) -> ModuleT:
    """Replace every torch dropout layer in ``model`` by its dropkit equivalent.

    ``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout`` become the
    dropkit layers with the same ``p``, ``inplace`` and training flag. Subclasses of them are
    left alone (their ``forward`` may differ). The number swapped is logged on the ``dropkit``
    logger at INFO level; a model with nothing to swap gives a warning.

    Note that :class:`torch.nn.Dropout2d` treats a 3D input as ``(N, C, L)`` with a warning;
    the dropkit layer raises instead, naming :class:`dropkit.nn.Dropout1d`.

    Args:
        model: the model to convert.
        inplace: modify ``model`` itself; otherwise convert a deep copy. Default: False.

    Returns:
        The converted model (``model`` itself when ``inplace=True``).

    Example:
        >>> import torch
        >>> import dropkit
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2))
        >>> dropkit.convert(model)[1]
        Dropout(p=0.2, inplace=False)
        >>> type(model[1]).__module__  # the original is untouched
        'torch.nn.modules.dropout'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    root = _swapped(model)
    if root is not None:
        _logger.info("convert: swapped 1 dropout layer")
        return root  # type: ignore[return-value]
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _swapped(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    if count == 0:
        warnings.warn(
            "convert: found no torch dropout layer to swap (nn.Dropout, Dropout1d/2d/3d, "
            "AlphaDropout, FeatureAlphaDropout); the model is returned unchanged",
            stacklevel=2,
        )
    else:
        _logger.info("convert: swapped %d dropout layer%s", count, "" if count == 1 else "s")
    return model
