"""The dropout layer classes: torch's, dropkit's, timm's and torchvision's.

A dropkit layer registers itself with the :func:`register_layer` class decorator where it is
defined. Classes that cannot be decorated are entries below under their qualified name
(``module.QualName`` as ``type(m).__module__`` and ``__qualname__`` spell it): third-party
classes are matched by that name, so they are never imported here. An entry gives the attribute
holding the rate, what the mask is shared over, and a factory building the dropkit equivalent
(None if there is none with the same semantics; the factory raises :class:`Unmappable`, saying
why, for an instance whose settings have none). Subclasses match through their MRO; pass
``exact=True`` to :func:`layer_spec` to match the class itself only (``convert`` swaps exact
types).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from torch import nn

from dropkit._registry._variants import MaskSharing, variant

__all__ = [
    "LayerSpec",
    "Unmappable",
    "add_layer",
    "channel_layer",
    "dropout_layers",
    "keeps_names_of",
    "layer_rate",
    "layer_shares_batch",
    "layer_spec",
    "layer_specs",
    "learned_rate_layer",
    "register_layer",
    "remove_layer",
]

ClassT = TypeVar("ClassT", bound=type)


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
    #: why ``convert`` leaves it (for a torch class with no ``to_dropkit``)
    kept_because: str = "dropkit has no equivalent"
    #: the rate is a learned parameter (concrete dropout): ``dropkit.concrete`` turns the
    #: variant's layers into this class
    learned_rate: bool = False
    #: the subclass of the dropkit equivalent that keeps this class's attribute names (timm's
    #: ``drop_prob``), given to the layers ``convert`` builds from it; set by
    #: :func:`keeps_names_of` where that subclass is defined
    peer_names: type | None = None


_LAYERS: dict[str, LayerSpec] = {}
_CLASSES: dict[str, type] = {}  # the decorated classes, by qualified name
# class -> its LayerSpec through the MRO (None: not a dropout layer), so that a lookup is one
# dict hit, not a walk of names; emptied by every registration and when it holds many classes.
_BY_CLASS: dict[type, LayerSpec | None] = {}
#: how many times the layer table changed: a cache built on what the layers were (mc's
#: discovery) is stale once this moves
_CHANGES = [0]


def layer_changes() -> int:
    """A counter that moves at every registration or removal of a layer class."""
    return _CHANGES[0]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def add_layer(qualname: str, spec: LayerSpec) -> None:
    """Register the layer class called ``qualname`` (one that cannot be decorated)."""
    variant(spec.variant)  # the variant must be known
    if qualname in _LAYERS:
        raise ValueError(f"register_layer: {qualname} is registered already")
    _LAYERS[qualname] = spec
    _BY_CLASS.clear()
    _CHANGES[0] += 1


def register_layer(
    variant_name: str,
    *,
    rate_attr: str = "p",
    sharing: MaskSharing | None = None,
    batch_when: tuple[str, object] | None = None,
    learned_rate: bool = False,
) -> Callable[[ClassT], ClassT]:
    """Register the decorated ``nn.Module`` class as a dropout layer of variant ``variant_name``.

    Args: the attribute holding its rate; what its mask covers (default: the variant's);
    ``batch_when=(attribute, value)``: the mask covers the whole batch when the attribute has
    that value; ``learned_rate``: the rate is learned (concrete dropout). The class is
    returned unchanged.
    """

    def register(cls: ClassT) -> ClassT:
        spec = LayerSpec(
            variant_name,
            rate_attr,
            sharing or variant(variant_name).sharing,
            batch_when=batch_when,
            learned_rate=learned_rate,
        )
        add_layer(_qualname(cls), spec)
        _CLASSES[_qualname(cls)] = cls
        return cls

    return register


def remove_layer(cls: type | str) -> None:
    """Undo :func:`register_layer` or :func:`add_layer` for a class (or its qualified name)."""
    name = cls if isinstance(cls, str) else _qualname(cls)
    del _LAYERS[name]
    _CLASSES.pop(name, None)
    _BY_CLASS.clear()
    _CHANGES[0] += 1


def channel_layer(rank: int) -> type:
    """dropkit's layer that drops whole channels of a rank-``rank`` input (a batched ``(N, C,
    L)`` takes ``Dropout1d``)."""
    for name, cls in _CLASSES.items():
        spec = _LAYERS[name]
        ranks = variant(spec.variant).channel_ranks
        if ranks is not None and rank in ranks and not spec.learned_rate:
            return cls
    raise ValueError(f"no dropkit channel dropout takes {rank}D inputs")


def keeps_names_of(*qualnames: str) -> Callable[[ClassT], ClassT]:
    """Register the decorated class as the one ``convert`` gives a layer it builds from any of
    the registered (third-party) classes ``qualnames``; the class defines ``adopt(layer,
    peer)``."""

    def register(cls: ClassT) -> ClassT:
        for name in qualnames:
            _LAYERS[name] = replace(_LAYERS[name], peer_names=cls)
        _BY_CLASS.clear()
        _CHANGES[0] += 1
        return cls

    return register


def learned_rate_layer(variant_name: str) -> type | None:
    """The registered layer class that learns the rate of variant ``variant_name``, or None."""
    for name, cls in _CLASSES.items():
        spec = _LAYERS[name]
        if spec.learned_rate and spec.variant == variant_name:
            return cls
    return None


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
_INSIDE_ATTENTION = (
    "the dropout runs inside torch's fused attention (F.multi_head_attention_forward)"
)

for _name, _spec in {
    _TORCH + "dropout.Dropout": LayerSpec("element", "p", to_dropkit=_dk("Dropout")),
    _TORCH + "dropout.Dropout1d": LayerSpec("channel1d", "p", "channel", _dk("Dropout1d")),
    _TORCH + "dropout.Dropout2d": LayerSpec("channel2d", "p", "channel", _dk("Dropout2d")),
    _TORCH + "dropout.Dropout3d": LayerSpec("channel3d", "p", "channel", _dk("Dropout3d")),
    _TORCH + "dropout.AlphaDropout": LayerSpec("alpha", "p", to_dropkit=_dk("AlphaDropout")),
    _TORCH + "dropout.FeatureAlphaDropout": LayerSpec(
        "feature_alpha", "p", "channel", _dk("FeatureAlphaDropout")
    ),
    _TORCH + "rnn.RNNBase": LayerSpec(
        "rnn",
        "dropout",
        kept_because="the dropout between layers runs inside torch's fused RNN kernel",
    ),
    _TORCH + "activation.MultiheadAttention": LayerSpec(
        "attention", "dropout", kept_because=_INSIDE_ATTENTION
    ),
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
}.items():
    add_layer(_name, _spec)


def layer_specs() -> Mapping[str, LayerSpec]:
    """Every registered dropout layer class, by qualified name, with its :class:`LayerSpec`."""
    return _LAYERS


def layer_spec(module: nn.Module | type, *, exact: bool = False) -> LayerSpec | None:
    """The :class:`LayerSpec` of a module (or class), or None if it is not a dropout layer.

    Subclasses of a registered class match through their MRO unless ``exact``.
    """
    cls = module if isinstance(module, type) else type(module)
    if exact:
        return _LAYERS.get(_qualname(cls))
    try:
        return _BY_CLASS[cls]
    except KeyError:
        pass
    found = None
    for base in cls.__mro__:
        found = _LAYERS.get(_qualname(base))
        if found is not None:
            break
    if len(_BY_CLASS) > 4096:  # classes made on the fly (a test's, a notebook's)
        _BY_CLASS.clear()
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
