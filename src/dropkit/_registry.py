"""What counts as dropout, in one place: every dropout function and every dropout layer class.

``convert``, ``mc``, ``doctor`` and ``experiments`` read these tables; nothing else keeps a list.

To add a **function**, add a :class:`FunctionSpec` to ``_function_specs()`` keyed by the function
object a ``TorchFunctionMode`` receives (for torch's C functions that is e.g. ``torch.lstm``; a
dropkit function must dispatch through ``__torch_function__`` to be seen). Say where ``p`` and
``training`` sit (position and keyword; ``training_at=None`` when the rate alone switches it, as
``scaled_dot_product_attention``'s ``dropout_p``) and what its mask is shared over.

To add a **layer class**, add a :class:`LayerSpec` to ``_LAYERS`` under its qualified name
(``module.QualName`` as ``type(m).__module__`` and ``__qualname__`` spell it): third-party classes
are matched by that name, so they are never imported here. Give the attribute holding the rate,
what the mask is shared over, and a factory building the dropkit equivalent (None if there is
none with the same semantics; the factory raises :class:`Unmappable`, saying why, for an instance
whose settings have none). Subclasses match through their MRO; pass ``exact=True`` to
:func:`layer_spec` to match the class itself only (``convert`` swaps exact types).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as torch_F
from torch import nn

__all__ = [
    "FunctionSpec",
    "LayerSpec",
    "MaskSharing",
    "Unmappable",
    "call_shares_batch",
    "dropout_layers",
    "function_spec",
    "function_specs",
    "is_random",
    "layer_rate",
    "layer_shares_batch",
    "layer_spec",
    "layer_specs",
]

#: What one random draw of the mask covers:
#: ``"element"`` every element its own; ``"channel"`` a (sample, channel) pair, all positions;
#: ``"sample"`` a whole sample (stochastic depth); ``"time"`` a (sample, feature) pair, all time
#: steps; ``"block"`` a spatial block of a (sample, channel), or of a sample over all its channels
#: (timm's ``couple_channels``); ``"batch"`` the whole batch (masks
#: on weights). ``"argument"``: the call decides (``noise_shape``, ``mode``); see
#: :func:`call_shares_batch`.
MaskSharing = Literal["element", "channel", "sample", "time", "block", "batch", "argument"]


@dataclass(frozen=True)
class FunctionSpec:
    """Where a dropout function's arguments sit, and what its mask is shared over."""

    name: str  # qualified name, for messages
    variant: str
    p_at: int  # position of the rate
    p_name: str  # keyword of the rate
    p_default: float | None  # None: the rate is required
    training_at: int | None  # position of the on/off flag; None: the rate alone decides
    training_name: str | None
    training_default: bool | None  # None: the flag is required
    sharing: MaskSharing = "element"
    packed_shift: bool = False  # torch's RNN functions: packed-sequence calls shift by one

    def _shift(self, args: tuple[Any, ...]) -> int:
        # torch.lstm(input, hx, params, has_biases, ...) vs (data, batch_sizes, hx, params, ...)
        return int(self.packed_shift and len(args) > 3 and not isinstance(args[3], bool))

    def rate(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> float:
        """The call's rate (0.0 when it cannot be read)."""
        at = self.p_at + self._shift(args)
        value = args[at] if len(args) > at else kwargs.get(self.p_name, self.p_default)
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0

    def training(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether the call is switched on (for rate-only functions: whether the rate is > 0)."""
        if self.training_at is None or self.training_name is None:
            return self.rate(args, kwargs) > 0
        at = self.training_at + self._shift(args)
        default = True if self.training_default is None else self.training_default
        return bool(args[at] if len(args) > at else kwargs.get(self.training_name, default))

    def active(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether the call draws a mask: switched on with a rate above 0."""
        return self.training(args, kwargs) and self.rate(args, kwargs) > 0

    def with_training(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], value: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with its on/off flag set to ``value`` (unchanged if it has none)."""
        if self.training_at is None or self.training_name is None:
            return args, kwargs
        return self._replace(args, kwargs, self.training_at, self.training_name, value)

    def with_rate(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], value: float
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with its rate set to ``value``."""
        return self._replace(args, kwargs, self.p_at, self.p_name, value)

    def _replace(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str, value: object
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        at += self._shift(args)
        if len(args) > at:
            return (*args[:at], value, *args[at + 1 :]), kwargs
        return args, {**kwargs, name: value}


def _elementwise(
    name: str, variant: str, sharing: MaskSharing, training: bool = True
) -> FunctionSpec:
    return FunctionSpec(name, variant, 1, "p", 0.5, 2, "training", training, sharing)


def _vf(name: str, variant: str, sharing: MaskSharing) -> FunctionSpec:
    return FunctionSpec(name, variant, 1, "p", None, 2, "train", None, sharing)


def _rnn(name: str) -> FunctionSpec:
    # Dropout between stacked layers, element-wise; ``train`` is required.
    return FunctionSpec(name, "rnn", 5, "dropout", None, 6, "train", None, packed_shift=True)


# Filled on first use (dropkit.functional imports late); plain dicts rather than functools.cache,
# which torch.compile warns about when it traces a TorchFunctionMode that reads them.
_FUNCTIONS: dict[Callable[..., Any], FunctionSpec] = {}
_RANDOM: set[Callable[..., Any]] = set()


def _function_specs() -> dict[Callable[..., Any], FunctionSpec]:
    if not _FUNCTIONS:
        _FUNCTIONS.update(_build_function_specs())
    return _FUNCTIONS


def _build_function_specs() -> dict[Callable[..., Any], FunctionSpec]:
    from dropkit import functional as dk_F

    tf = "torch.nn.functional."
    dk = "dropkit.functional."
    specs: dict[Callable[..., Any], FunctionSpec] = {
        # torch.nn.functional
        torch_F.dropout: _elementwise(tf + "dropout", "element", "element"),
        torch_F.dropout1d: _elementwise(tf + "dropout1d", "channel1d", "channel"),
        torch_F.dropout2d: _elementwise(tf + "dropout2d", "channel2d", "channel"),
        torch_F.dropout3d: _elementwise(tf + "dropout3d", "channel3d", "channel"),
        torch_F.alpha_dropout: _elementwise(tf + "alpha_dropout", "alpha", "element", False),
        torch_F.feature_alpha_dropout: _elementwise(
            tf + "feature_alpha_dropout", "feature_alpha", "channel", False
        ),
        torch_F.scaled_dot_product_attention: FunctionSpec(
            tf + "scaled_dot_product_attention", "attention", 4, "dropout_p", 0.0, None, None, None
        ),
        torch_F.multi_head_attention_forward: FunctionSpec(
            tf + "multi_head_attention_forward",
            "attention",
            10,
            "dropout_p",
            None,
            13,
            "training",
            True,
        ),
        # torch's C functions (torch._VF), as called by torch.nn.functional and nn.RNNBase
        torch.dropout: _vf("torch.dropout", "element", "element"),
        torch.dropout_: _vf("torch.dropout_", "element", "element"),
        torch.feature_dropout: _vf("torch.feature_dropout", "channel", "channel"),
        torch.feature_dropout_: _vf("torch.feature_dropout_", "channel", "channel"),
        torch.alpha_dropout: _vf("torch.alpha_dropout", "alpha", "element"),
        torch.alpha_dropout_: _vf("torch.alpha_dropout_", "alpha", "element"),
        torch.feature_alpha_dropout: _vf("torch.feature_alpha_dropout", "feature_alpha", "channel"),
        torch.feature_alpha_dropout_: _vf(
            "torch.feature_alpha_dropout_", "feature_alpha", "channel"
        ),
        torch.native_dropout: _vf("torch.native_dropout", "element", "element"),
        torch.lstm: _rnn("torch.lstm"),
        torch.gru: _rnn("torch.gru"),
        torch.rnn_tanh: _rnn("torch.rnn_tanh"),
        torch.rnn_relu: _rnn("torch.rnn_relu"),
        # dropkit.functional: training defaults to True everywhere
        dk_F.dropout: _elementwise(dk + "dropout", "element", "argument"),
        dk_F.dropout1d: _elementwise(dk + "dropout1d", "channel1d", "channel"),
        dk_F.dropout2d: _elementwise(dk + "dropout2d", "channel2d", "channel"),
        dk_F.dropout3d: _elementwise(dk + "dropout3d", "channel3d", "channel"),
        dk_F.alpha_dropout: _elementwise(dk + "alpha_dropout", "alpha", "element"),
        dk_F.feature_alpha_dropout: _elementwise(
            dk + "feature_alpha_dropout", "feature_alpha", "channel"
        ),
        dk_F.gaussian_dropout: _elementwise(dk + "gaussian_dropout", "gaussian", "element"),
        dk_F.drop_path: _elementwise(dk + "drop_path", "path", "argument"),
        dk_F.drop_block2d: _elementwise(dk + "drop_block2d", "block", "block"),
        dk_F.drop_block3d: _elementwise(dk + "drop_block3d", "block", "block"),
        dk_F.locked_dropout: _elementwise(dk + "locked_dropout", "locked", "time"),
        dk_F.embedding_dropout: _elementwise(dk + "embedding_dropout", "embedding", "batch"),
        dk_F.dropconnect: _elementwise(dk + "dropconnect", "dropconnect", "batch"),
        dk_F.scaled_dot_product_attention: FunctionSpec(
            dk + "scaled_dot_product_attention", "attention", 4, "dropout_p", 0.0, None, None, None
        ),
        dk_F.concrete_dropout: _elementwise(dk + "concrete_dropout", "element", "element"),
        dk_F.concrete_dropout1d: _elementwise(dk + "concrete_dropout1d", "channel1d", "channel"),
        dk_F.concrete_dropout2d: _elementwise(dk + "concrete_dropout2d", "channel2d", "channel"),
        dk_F.concrete_dropout3d: _elementwise(dk + "concrete_dropout3d", "channel3d", "channel"),
        dk_F.bias_dropout: FunctionSpec(
            dk + "bias_dropout", "fused", 2, "p", 0.5, 3, "training", True
        ),
        dk_F.bias_dropout_add: FunctionSpec(
            dk + "bias_dropout_add", "fused", 3, "p", 0.5, 4, "training", True
        ),
    }
    return specs


def function_specs() -> Mapping[Callable[..., Any], FunctionSpec]:
    """Every registered dropout function, torch's and dropkit's, with its :class:`FunctionSpec`."""
    return _function_specs()


def function_spec(func: object) -> FunctionSpec | None:
    """The :class:`FunctionSpec` of ``func`` (as a ``TorchFunctionMode`` receives it), or None."""
    try:
        return _function_specs().get(func)  # type: ignore[call-overload, no-any-return]
    except TypeError:  # unhashable
        return None


def call_shares_batch(spec: FunctionSpec, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether this call draws one mask for the whole batch (dim 0)."""
    if spec.sharing == "batch":
        return True
    if spec.sharing != "argument":
        return False
    if "noise_shape" in kwargs:
        shape = kwargs["noise_shape"]
        return shape is not None and len(shape) > 0 and shape[0] == 1
    mode = args[4] if len(args) > 4 else kwargs.get("mode", "row")
    return spec.variant == "path" and mode == "batch"


def _random_functions() -> set[Callable[..., Any]]:
    if _RANDOM:
        return _RANDOM
    t = torch.Tensor
    _RANDOM.update(
        {
            torch.bernoulli, t.bernoulli, t.bernoulli_, torch.rand, torch.rand_like, torch.randn,
            torch.randn_like, torch.randint, torch.randint_like, torch.randperm, torch.normal,
            torch.poisson, torch.multinomial, t.multinomial, t.normal_, t.uniform_, t.random_,
            t.exponential_, t.geometric_, t.cauchy_, t.log_normal_,
        }
    )  # fmt: skip
    return _RANDOM


def is_random(func: object) -> bool:
    """Whether ``func`` draws random numbers outside any registered dropout function
    (``bernoulli_``, ``rand``...: how third-party stochastic depth and LayerDrop are written)."""
    try:
        return func in _random_functions()
    except TypeError:  # unhashable
        return False


# ------------------------------------------------------------------------------------ layers


class Unmappable(Exception):
    """Raised by a :class:`LayerSpec`'s ``to_dropkit`` for an instance whose settings have no
    dropkit equivalent with the same semantics; the message says why (``convert`` reports it)."""


@dataclass(frozen=True)
class LayerSpec:
    """A dropout layer class: its variant, its rate attribute, its dropkit equivalent."""

    variant: str
    rate_attr: str  # the attribute holding the rate
    sharing: MaskSharing = "element"
    #: builds the dropkit layer with the same semantics from an instance (or raises
    #: :class:`Unmappable`); None if the class has none
    to_dropkit: Callable[[nn.Module], nn.Module] | None = None
    #: ``(attribute, value)``: the mask is shared over the batch when the attribute has the value
    batch_when: tuple[str, object] | None = None


def _dk(name: str, **attrs: str) -> Callable[[nn.Module], nn.Module]:
    """A factory for ``dropkit.nn.<name>(p, inplace, **{kw: module.<attr>})``."""

    def build(module: nn.Module) -> nn.Module:
        from dropkit import nn as dk_nn

        kwargs = {kw: getattr(module, attr) for kw, attr in attrs.items()}
        cls = getattr(dk_nn, name)
        p = float(getattr(module, "p", getattr(module, "drop_prob", 0.0)))
        layer: nn.Module = cls(p, bool(getattr(module, "inplace", False)), **kwargs)
        return layer

    return build


def _drop_block(module: nn.Module, name: str, **options: Any) -> nn.Module:
    """``dropkit.nn.<name>(p, inplace, block_size=..., **options)`` from a third-party DropBlock,
    or :class:`Unmappable` where dropkit's layer rejects its settings."""
    from dropkit import nn as dk_nn

    p = getattr(module, "p", getattr(module, "drop_prob", None))
    try:
        layer: nn.Module = getattr(dk_nn, name)(
            p, bool(module.inplace), block_size=module.block_size, **options
        )
    except (TypeError, ValueError) as error:
        raise Unmappable(f"its settings have no dropkit equivalent ({error})") from error
    return layer


def _timm_drop_block(module: nn.Module) -> nn.Module:
    """timm's ``DropBlock2d`` (1.0.23 and later): the paper's gamma times ``gamma_scale``, blocks
    centred on any position and clipped at the borders, one mask per sample over the channels
    when ``couple_channels``, kept values times ``numel / (1e-7 + kept)`` when ``scale_by_keep``,
    and with ``with_noise`` normal noise in the dropped positions and no rescaling."""
    if not hasattr(module, "couple_channels") or not hasattr(module, "scale_by_keep"):
        raise Unmappable(
            "it has no couple_channels or scale_by_keep (timm before 1.0.23, with fast= and "
            "batchwise=), and draws its blocks differently from the timm that dropkit maps"
        )
    with_noise = bool(module.with_noise)
    return _drop_block(
        module,
        "DropBlock2d",
        gamma="paper",
        gamma_scale=module.gamma_scale,
        placement="centered",
        couple_channels=bool(module.couple_channels),
        rescale="batch" if module.scale_by_keep and not with_noise else "none",
        eps=1e-7,
        with_noise=with_noise,
    )


def _torchvision_drop_block(name: str) -> Callable[[nn.Module], nn.Module]:
    """torchvision's ``DropBlock2d/3d``: the paper's gamma, blocks inside the map, a square (cube)
    block clipped to the smallest side, kept values times ``numel / (eps + kept)``."""

    def build(module: nn.Module) -> nn.Module:
        return _drop_block(
            module, name, gamma="paper", block_clip="square", rescale="batch", eps=module.eps
        )

    return build


_TORCH = "torch.nn.modules."
_DK = "dropkit.nn._dropout."

_LAYERS: dict[str, LayerSpec] = {
    # torch.nn
    _TORCH + "dropout.Dropout": LayerSpec("element", "p", to_dropkit=_dk("Dropout")),
    _TORCH + "dropout.Dropout1d": LayerSpec("channel1d", "p", "channel", _dk("Dropout1d")),
    _TORCH + "dropout.Dropout2d": LayerSpec("channel2d", "p", "channel", _dk("Dropout2d")),
    _TORCH + "dropout.Dropout3d": LayerSpec("channel3d", "p", "channel", _dk("Dropout3d")),
    _TORCH + "dropout.AlphaDropout": LayerSpec("alpha", "p", to_dropkit=_dk("AlphaDropout")),
    _TORCH + "dropout.FeatureAlphaDropout": LayerSpec(
        "feature_alpha", "p", "channel", _dk("FeatureAlphaDropout")
    ),
    _TORCH + "rnn.RNNBase": LayerSpec("rnn", "dropout"),
    _TORCH + "activation.MultiheadAttention": LayerSpec("attention", "dropout"),
    # dropkit.nn
    _DK + "Dropout": LayerSpec("element", "p", batch_when=("noise_shape", "batch")),
    _DK + "Dropout1d": LayerSpec("channel1d", "p", "channel"),
    _DK + "Dropout2d": LayerSpec("channel2d", "p", "channel"),
    _DK + "Dropout3d": LayerSpec("channel3d", "p", "channel"),
    _DK + "AlphaDropout": LayerSpec("alpha", "p"),
    _DK + "FeatureAlphaDropout": LayerSpec("feature_alpha", "p", "channel"),
    _DK + "GaussianDropout": LayerSpec("gaussian", "p"),
    _DK + "DropPath": LayerSpec("path", "p", "sample", batch_when=("mode", "batch")),
    _DK + "DropBlock2d": LayerSpec("block", "p", "block"),
    _DK + "DropBlock3d": LayerSpec("block", "p", "block"),
    _DK + "LockedDropout": LayerSpec("locked", "p", "time"),
    # Concrete dropout: the learned rate, read as a float from ``p`` (a property)
    "dropkit.nn._concrete.ConcreteDropout": LayerSpec("element", "p"),
    "dropkit.nn._concrete.ConcreteDropout1d": LayerSpec("channel1d", "p", "channel"),
    "dropkit.nn._concrete.ConcreteDropout2d": LayerSpec("channel2d", "p", "channel"),
    "dropkit.nn._concrete.ConcreteDropout3d": LayerSpec("channel3d", "p", "channel"),
    "dropkit.nn._fused.BiasDropoutAdd": LayerSpec("fused", "p"),
    "dropkit.nn._weight.EmbeddingDropout": LayerSpec("embedding", "p", "batch"),
    "dropkit.nn._weight.WeightDrop": LayerSpec("dropconnect", "p", "batch"),
    # timm (matched by name, never imported)
    "timm.layers.drop.DropPath": LayerSpec(
        "path", "drop_prob", "sample", _dk("DropPath", scale_by_keep="scale_by_keep")
    ),
    "timm.layers.drop.DropBlock2d": LayerSpec("block", "drop_prob", "block", _timm_drop_block),
    # torchvision (matched by name, never imported)
    "torchvision.ops.stochastic_depth.StochasticDepth": LayerSpec(
        "path", "p", "sample", _dk("DropPath", mode="mode"), batch_when=("mode", "batch")
    ),
    "torchvision.ops.drop_block.DropBlock2d": LayerSpec(
        "block", "p", "block", _torchvision_drop_block("DropBlock2d")
    ),
    "torchvision.ops.drop_block.DropBlock3d": LayerSpec(
        "block", "p", "block", _torchvision_drop_block("DropBlock3d")
    ),
}


def layer_specs() -> Mapping[str, LayerSpec]:
    """Every registered dropout layer class, by qualified name, with its :class:`LayerSpec`."""
    return _LAYERS


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# class -> its LayerSpec through the MRO (None: not a dropout layer), so that a lookup is one
# dict hit, not a walk of names; emptied when _LAYERS grows, and when it holds many classes.
_BY_CLASS: dict[type, LayerSpec | None] = {}
_BY_CLASS_OF = [0]  # len(_LAYERS) when _BY_CLASS was filled


def layer_spec(module: nn.Module | type, *, exact: bool = False) -> LayerSpec | None:
    """The :class:`LayerSpec` of a module (or class), or None if it is not a dropout layer.

    Subclasses of a registered class match through their MRO unless ``exact``.
    """
    cls = module if isinstance(module, type) else type(module)
    if exact:
        return _LAYERS.get(_qualname(cls))
    if len(_LAYERS) != _BY_CLASS_OF[0] or len(_BY_CLASS) > 4096:
        _BY_CLASS.clear()
        _BY_CLASS_OF[0] = len(_LAYERS)
    try:
        return _BY_CLASS[cls]
    except KeyError:
        pass
    found = None
    for base in cls.__mro__:
        found = _LAYERS.get(_qualname(base))
        if found is not None:
            break
    _BY_CLASS[cls] = found
    return found


def layer_rate(module: nn.Module) -> float | None:
    """The dropout rate of a registered layer, or None for any other module."""
    spec = layer_spec(module)
    if spec is None:
        return None
    try:
        return float(getattr(module, spec.rate_attr))
    except (AttributeError, TypeError, ValueError):
        return None


def layer_shares_batch(module: nn.Module) -> bool:
    """Whether a layer draws one mask for the whole batch (dim 0)."""
    spec = layer_spec(module)
    if spec is None:
        return False
    if spec.sharing == "batch":
        return True
    if spec.batch_when is None:
        return False
    attr, value = spec.batch_when
    if attr == "noise_shape":  # dropkit's Dropout: a 1 in the batch dim
        shape = getattr(module, "noise_shape", None)
        return shape is not None and len(shape) > 0 and shape[0] == 1
    return bool(getattr(module, attr, None) == value)


def dropout_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, float]]:
    """``(name, module, p)`` of every registered dropout layer in ``model``, in module order."""
    for name, module in model.named_modules():
        p = layer_rate(module)
        if p is not None:
            yield name, module, p
