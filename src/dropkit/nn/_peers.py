"""dropkit's layers under a peer's attribute names, for the layers that :func:`dropkit.convert`
swaps in.

Code written for timm schedules stochastic depth by setting ``drop_prob`` on each ``DropPath``
as training goes on; on a converted layer that attribute must still be the rate, read and
written, or the schedule silently does nothing. torchvision's layers already use dropkit's names
(``p``, ``mode``, ``block_size``, ``eps``); timm's rename the rate (``drop_prob``) and describe
DropBlock's normalization as ``scale_by_keep`` and ``with_noise``. Each class here is a subclass
of the dropkit layer that ``convert`` builds, adding only properties over that layer's own
attributes (so its ``state_dict``, its forward and the registry's entry are the dropkit layer's),
and is registered for the peer class it stands in for with the registry's
:func:`~dropkit._registry.keeps_names_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dropkit._registry import keeps_names_of, layer_spec
from dropkit.functional import check_p
from dropkit.nn._dropout import DropBlock2d, DropPath, _DropoutBase

__all__ = ["TimmDropBlock2d", "TimmDropPath", "with_peer_names"]


def with_peer_names(layer: nn.Module, peer: nn.Module) -> nn.Module:
    """``layer`` (built by ``convert`` from ``peer``) with ``peer``'s attribute names: turned
    into the registered subclass of its class, or as it is when none is registered."""
    spec = layer_spec(peer, exact=True)
    cls = spec.peer_names if spec is not None else None
    if cls is None:
        return layer
    adopt: Callable[[nn.Module, nn.Module], None] = cls.adopt  # type: ignore[attr-defined]
    layer.__class__ = cls
    adopt(layer, peer)
    return layer


class _Rate:
    """A peer's name for the layer's rate ``p``: reads it, and sets it after checking it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: _DropoutBase | None, owner: type | None = None) -> Any:
        return self if obj is None else obj.p

    def __set__(self, obj: _DropoutBase, value: object) -> None:
        obj.p = check_p(f"{type(obj).__name__}.{self.name}", value)


@keeps_names_of("timm.layers.drop.DropPath")
class TimmDropPath(DropPath):
    """:class:`dropkit.nn.DropPath` converted from timm's ``DropPath``: ``drop_prob`` is ``p``.

    Example:
        >>> import torch
        >>> import dropkit
        >>> class DropPath(torch.nn.Module):  # stands in for timm.layers.DropPath
        ...     __module__ = "timm.layers.drop"
        ...     def __init__(self, drop_prob=0.0, scale_by_keep=True):
        ...         super().__init__()
        ...         self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep
        >>> layer = dropkit.convert(DropPath(0.1))
        >>> isinstance(layer, dropkit.nn.DropPath), layer.drop_prob
        (True, 0.1)
        >>> layer.drop_prob = 0.25  # how timm's schedules set the rate
        >>> layer.p
        0.25
    """

    drop_prob = _Rate()

    @staticmethod
    def adopt(layer: nn.Module, peer: nn.Module) -> None:
        """Nothing to move: ``drop_prob`` reads ``p``, ``scale_by_keep`` is dropkit's own."""


@keeps_names_of("timm.layers.drop.DropBlock2d")
class TimmDropBlock2d(DropBlock2d):
    """:class:`dropkit.nn.DropBlock2d` converted from timm's ``DropBlock2d``, with its names.

    ``drop_prob`` is ``p``; ``scale_by_keep`` and ``with_noise`` set dropkit's ``rescale`` as
    timm's forward treats them: kept values scaled by the batch's kept fraction when
    ``scale_by_keep`` and not ``with_noise``, not scaled otherwise.

    Example:
        >>> import torch
        >>> import dropkit
        >>> class DropBlock2d(torch.nn.Module):  # stands in for timm.layers.DropBlock2d
        ...     __module__ = "timm.layers.drop"
        ...     def __init__(self, drop_prob=0.1, block_size=7):
        ...         super().__init__()
        ...         self.drop_prob, self.block_size, self.gamma_scale = drop_prob, block_size, 1.0
        ...         self.with_noise, self.inplace, self.couple_channels = False, False, True
        ...         self.scale_by_keep = True
        >>> layer = dropkit.convert(DropBlock2d(0.1, 3))
        >>> layer.drop_prob, layer.scale_by_keep, layer.rescale
        (0.1, True, 'batch')
        >>> layer.scale_by_keep = False
        >>> layer.rescale
        'none'
    """

    drop_prob = _Rate()

    @staticmethod
    def adopt(layer: nn.Module, peer: nn.Module) -> None:
        """Move ``with_noise`` behind its property and take ``scale_by_keep`` from ``peer``."""
        state = vars(layer)
        state["_with_noise"] = bool(state.pop("with_noise", False))
        state["_scale_by_keep"] = bool(peer.scale_by_keep)
        state["rescale"] = _rescale(state["_scale_by_keep"], state["_with_noise"])

    @property
    def scale_by_keep(self) -> bool:
        """timm's flag: scale the kept values by the batch's kept fraction (no noise)."""
        return bool(vars(self)["_scale_by_keep"])

    @scale_by_keep.setter
    def scale_by_keep(self, value: bool) -> None:
        vars(self)["_scale_by_keep"] = bool(value)
        self.rescale = _rescale(self.scale_by_keep, self.with_noise)

    @property
    def with_noise(self) -> bool:
        """Fill the dropped blocks with normal noise (and then scale nothing, as timm does)."""
        return bool(vars(self).get("_with_noise", False))

    @with_noise.setter
    def with_noise(self, value: bool) -> None:
        vars(self)["_with_noise"] = bool(value)
        if "_scale_by_keep" in vars(self):
            self.rescale = _rescale(self.scale_by_keep, self.with_noise)


def _rescale(scale_by_keep: bool, with_noise: bool) -> Any:
    return "batch" if scale_by_keep and not with_noise else "none"
