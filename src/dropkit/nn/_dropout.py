"""Dropout layers over :mod:`dropkit.functional`: each ``forward`` calls its function."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from dropkit import functional as F
from dropkit._registry import register_layer
from dropkit.functional import (
    BlockClip,
    Gamma,
    Placement,
    Rescale,
    check_block_options,
    check_p,
    small_dropout,
)

__all__ = [
    "AlphaDropout",
    "DropBlock2d",
    "DropBlock3d",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
]


class _DropoutBase(nn.Module):
    """Base of the dropout layers: ``p`` checked at construction, shown by ``extra_repr``.

    Like torch's dropout layers these hold no parameters or buffers, so their ``state_dict`` is
    the same as torch's, and ``eval()`` turns them into the identity.
    """

    __constants__: ClassVar[list[str]] = ["inplace", "p"]
    p: float
    inplace: bool
    _allow_one = True

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_p(type(self).__name__, p, allow_one=self._allow_one)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def __prepare_scriptable__(self) -> nn.Module:
        raise not_scriptable(self)


def not_scriptable(module: nn.Module) -> RuntimeError:
    """The error ``torch.jit.script`` raises on a dropkit layer (asked via the module's
    ``__prepare_scriptable__`` hook, before TorchScript reads a line of it)."""
    return RuntimeError(
        f"{type(module).__name__}: torch.jit.script cannot compile dropkit layers (their masks "
        "come from Python kernels); use torch.jit.trace, torch.compile or torch.export instead, "
        "or script the model in eval mode with torch's dropout layers"
    )


@register_layer("element", batch_when=("noise_shape", "batch"))
class Dropout(_DropoutBase):
    """Inverted dropout, a drop-in for :class:`torch.nn.Dropout`.

    See :func:`dropkit.functional.dropout`.

    Args:
        p: probability of zeroing an element. Default: 0.5.
        inplace: do the operation in place. Default: False.
        noise_shape: mask shape broadcast to the input (1 where shared). Default: element-wise.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> m = nn.Dropout(0.2)
        >>> m
        Dropout(p=0.2, inplace=False)
        >>> x = torch.ones(3, 4)
        >>> m.eval()(x) is x
        True
    """

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        noise_shape: Sequence[int | None] | None = None,
    ) -> None:
        super().__init__(p, inplace)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.training:  # F.dropout's first step, taken from here: one frame fewer
            out = small_dropout(input, p, True, self.inplace, self.noise_shape)
            if out is not None:
                return out
        return F.dropout(input, p, self.training, self.inplace, noise_shape=self.noise_shape)

    def extra_repr(self) -> str:
        extra = "" if self.noise_shape is None else f", noise_shape={self.noise_shape}"
        return super().extra_repr() + extra


class _ChannelDropout(_DropoutBase):
    def __init__(self, p: float = 0.5, inplace: bool = False, *, channels_last: bool = False):
        super().__init__(p, inplace)
        self.channels_last = bool(channels_last)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", channels_last=True" if self.channels_last else "")


@register_layer("channel1d")
class Dropout1d(_ChannelDropout):
    """Whole-channel dropout for ``(N, C, L)``; see :func:`dropkit.functional.dropout1d`.

    Example:
        >>> from dropkit import nn
        >>> nn.Dropout1d(0.1, channels_last=True)
        Dropout1d(p=0.1, inplace=False, channels_last=True)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout1d(
            input, self.p, self.training, self.inplace, channels_last=self.channels_last
        )


@register_layer("channel2d")
class Dropout2d(_ChannelDropout):
    """Whole-channel dropout for ``(N, C, H, W)``; see :func:`dropkit.functional.dropout2d`.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> nn.Dropout2d(0.25)(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(
            input, self.p, self.training, self.inplace, channels_last=self.channels_last
        )


@register_layer("channel3d")
class Dropout3d(_ChannelDropout):
    """Whole-channel dropout for ``(N, C, D, H, W)``; see :func:`dropkit.functional.dropout3d`.

    Example:
        >>> from dropkit import nn
        >>> nn.Dropout3d()
        Dropout3d(p=0.5, inplace=False)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout3d(
            input, self.p, self.training, self.inplace, channels_last=self.channels_last
        )


@register_layer("alpha")
class AlphaDropout(_DropoutBase):
    """Alpha dropout for SELU networks; see :func:`dropkit.functional.alpha_dropout`.

    Example:
        >>> from dropkit import nn
        >>> nn.AlphaDropout(0.1)
        AlphaDropout(p=0.1, inplace=False)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.alpha_dropout(input, self.p, self.training, self.inplace)


@register_layer("feature_alpha")
class FeatureAlphaDropout(_DropoutBase):
    """Channel-wise alpha dropout; see :func:`dropkit.functional.feature_alpha_dropout`.

    Example:
        >>> from dropkit import nn
        >>> nn.FeatureAlphaDropout(0.1)
        FeatureAlphaDropout(p=0.1, inplace=False)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.feature_alpha_dropout(input, self.p, self.training, self.inplace)


@register_layer("gaussian")
class GaussianDropout(_DropoutBase):
    """Multiplicative N(1, p/(1-p)) noise; see :func:`dropkit.functional.gaussian_dropout`.

    Example:
        >>> from dropkit import nn
        >>> nn.GaussianDropout(0.3)
        GaussianDropout(p=0.3, inplace=False)
    """

    _allow_one = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.gaussian_dropout(input, self.p, self.training, self.inplace)


@register_layer("path", batch_when=("mode", "batch"))
class DropPath(_DropoutBase):
    """Stochastic depth for a residual branch; see :func:`dropkit.functional.drop_path`.

    Also takes torchvision's ``StochasticDepth(p, mode)`` positional call: a string second
    argument is the mode.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> branch = torch.nn.Linear(4, 4)
        >>> drop = nn.DropPath(0.1)
        >>> x = torch.randn(8, 4)
        >>> (x + drop(branch(x))).shape
        torch.Size([8, 4])
        >>> nn.DropPath(0.2, "batch")  # torchvision's StochasticDepth(p, mode)
        DropPath(p=0.2, inplace=False, mode='batch', scale_by_keep=True)
    """

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        mode: Literal["row", "batch"] = "row",
        scale_by_keep: bool = True,
    ) -> None:
        if isinstance(inplace, str):
            # torchvision's StochasticDepth(p, mode): a mode where dropkit has inplace (a bool,
            # so a string can mean nothing else; bool("batch") would silently be in-place).
            if mode != "row":
                raise TypeError(f"DropPath: got mode twice, {inplace!r} and mode={mode!r}")
            inplace, mode = False, inplace
        super().__init__(p, inplace)
        if mode not in ("row", "batch"):
            raise ValueError(f"DropPath: expected mode 'row' or 'batch', got {mode!r}")
        self.mode: Literal["row", "batch"] = mode
        self.scale_by_keep = bool(scale_by_keep)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.drop_path(
            input,
            self.p,
            self.training,
            self.inplace,
            mode=self.mode,
            scale_by_keep=self.scale_by_keep,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"


class _DropBlock(_DropoutBase):
    block_size: int
    gamma: Gamma
    gamma_scale: float
    placement: Placement
    block_clip: BlockClip
    couple_channels: bool
    rescale: Rescale
    eps: float
    with_noise: bool

    def __init__(
        self,
        p: float = 0.5,
        *positional: Any,
        inplace: bool = False,
        block_size: int = 7,
        gamma: Gamma = "exact",
        gamma_scale: float = 1.0,
        placement: Placement = "inside",
        block_clip: BlockClip = "axis",
        couple_channels: bool = False,
        rescale: Rescale = "expected",
        eps: float = 1e-6,
        with_noise: bool = False,
    ) -> None:
        name = type(self).__name__
        inplace, block_size, eps = _block_positional(
            name, positional, inplace=inplace, block_size=block_size, eps=eps
        )
        super().__init__(p, inplace)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"{name}: expected block_size to be an int >= 1, got {block_size!r}")
        self.block_size = block_size
        self.gamma_scale, self.eps = check_block_options(
            name,
            gamma=gamma,
            gamma_scale=gamma_scale,
            placement=placement,
            block_clip=block_clip,
            rescale=rescale,
            eps=eps,
        )
        self.gamma = gamma
        self.placement = placement
        self.block_clip = block_clip
        self.couple_channels = bool(couple_channels)
        self.rescale = rescale
        self.with_noise = bool(with_noise)

    def _options(self) -> dict[str, Any]:
        """The keyword options of the functional op, as this layer holds them."""
        return {
            "block_size": self.block_size,
            "gamma": self.gamma,
            "gamma_scale": self.gamma_scale,
            "placement": self.placement,
            "block_clip": self.block_clip,
            "couple_channels": self.couple_channels,
            "rescale": self.rescale,
            "eps": self.eps,
            "with_noise": self.with_noise,
        }

    def extra_repr(self) -> str:
        # The options that differ from dropkit's defaults (block_size always).
        shown = [
            f"{k}={v!r}"
            for k, v in self._options().items()
            if k == "block_size" or v != _BLOCK_DEFAULTS[k]
        ]
        return super().extra_repr() + ", " + ", ".join(shown)


# The defaults of the layers' keyword options, read from their signature (one place to set).
_BLOCK_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(_DropBlock.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "inplace"
}


def _block_positional(
    name: str, positional: tuple[Any, ...], *, inplace: bool, block_size: int, eps: float
) -> tuple[bool, int, float]:
    """``(inplace, block_size, eps)`` from the arguments after ``p``: dropkit's
    ``(p, inplace)``, or torchvision's ``(p, block_size, inplace=False, eps=1e-6)``, told apart
    by the second argument (a bool is dropkit's ``inplace``, an int torchvision's
    ``block_size``). Raises naming the layer for anything else, or for a value given twice."""
    if not positional:
        return inplace, block_size, eps
    first = positional[0]
    if isinstance(first, bool) and len(positional) == 1:  # dropkit's (p, inplace)
        if inplace:
            raise TypeError(f"{name}: got inplace twice, positionally and as a keyword")
        return first, block_size, eps
    if isinstance(first, numbers.Integral) and not isinstance(first, bool) and len(positional) <= 3:
        twice = (
            block_size != 7  # block_size given as a keyword as well
            or (len(positional) > 1 and inplace)
            or (len(positional) > 2 and eps != 1e-6)
        )
        if twice:
            raise TypeError(f"{name}: got an argument twice, positionally and as a keyword")
        torchvision_inplace = positional[1] if len(positional) > 1 else inplace
        torchvision_eps = positional[2] if len(positional) > 2 else eps
        return bool(torchvision_inplace), int(first), float(torchvision_eps)
    raise TypeError(
        f"{name}: expected {name}(p, inplace) or torchvision's {name}(p, block_size, "
        f"inplace, eps), got positional arguments {positional!r} after p; pass the options as "
        "keywords, e.g. block_size=5"
    )


@register_layer("block")
class DropBlock2d(_DropBlock):
    """DropBlock on ``(N, C, H, W)``; see :func:`dropkit.functional.drop_block2d`, which also
    documents the options (and those that make it torchvision's or timm's DropBlock).

    Takes dropkit's positional arguments ``(p, inplace)`` and torchvision's
    ``(p, block_size, inplace, eps)`` (an int second argument is the block size); the other
    options are keywords. Either way the block-origin rate is dropkit's exact one unless
    ``gamma="paper"`` is passed (README, compatibility).

    Example:
        >>> from dropkit import nn
        >>> nn.DropBlock2d(0.1, block_size=5)
        DropBlock2d(p=0.1, inplace=False, block_size=5)
        >>> nn.DropBlock2d(0.1, 5, False, 1e-6)  # torchvision's positional order
        DropBlock2d(p=0.1, inplace=False, block_size=5)
        >>> nn.DropBlock2d(0.1, block_size=3, gamma="paper", block_clip="square", rescale="batch")
        DropBlock2d(p=0.1, inplace=False, block_size=3, gamma='paper', block_clip='square',
                    rescale='batch')
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.drop_block2d(input, self.p, self.training, self.inplace, **self._options())


@register_layer("block")
class DropBlock3d(_DropBlock):
    """DropBlock on ``(N, C, D, H, W)``; see :func:`dropkit.functional.drop_block3d`.

    Takes the positional arguments of :class:`DropBlock2d` (dropkit's and torchvision's).

    Example:
        >>> from dropkit import nn
        >>> nn.DropBlock3d(0.1, block_size=3)
        DropBlock3d(p=0.1, inplace=False, block_size=3)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.drop_block3d(input, self.p, self.training, self.inplace, **self._options())


@register_layer("locked")
class LockedDropout(_DropoutBase):
    """One mask per sequence, shared across time; see :func:`dropkit.functional.locked_dropout`.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> m = nn.LockedDropout(0.3, batch_first=True)
        >>> m
        LockedDropout(p=0.3, inplace=False, batch_first=True)
        >>> m(torch.ones(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, batch_first: bool = False):
        super().__init__(p, inplace)
        self.batch_first = bool(batch_first)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.locked_dropout(
            input, self.p, self.training, self.inplace, batch_first=self.batch_first
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", batch_first={self.batch_first}"
