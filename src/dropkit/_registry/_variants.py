"""The variants of dropout: what each one's mask covers and what the rest of dropkit may assume.

Every registered function and layer names one of these; a new variant is one
:func:`register_variant` call, and every consumer (the doctor's rules, the routing of torch's
functions, ``mc``'s kept masks, ``convert``) reads its facts from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MaskSharing",
    "Site",
    "Variant",
    "register_variant",
    "remove_variant",
    "variant",
    "variants",
]

#: What one random draw of the mask covers:
#: ``"element"`` every element its own; ``"channel"`` a (sample, channel) pair, all positions;
#: ``"sample"`` a whole sample (stochastic depth); ``"time"`` a (sample, feature) pair, all time
#: steps; ``"block"`` a spatial block of a (sample, channel), or of a sample over all its channels
#: (timm's ``couple_channels``); ``"batch"`` the whole batch (masks on weights). ``"argument"``
#: (a function or layer only): the call decides (``noise_shape``, ``mode``); see
#: :func:`dropkit._registry.call_shares_batch`.
MaskSharing = Literal["element", "channel", "sample", "time", "block", "batch", "argument"]

#: Where the mask is applied: ``"tensor"`` to the one tensor passed in (a bare dropout);
#: ``"attention"`` to attention weights inside an attention op; ``"rnn"`` between the stacked
#: layers of a fused RNN; ``"fused"`` inside a bias-dropout-add, around a bias and a residual.
Site = Literal["tensor", "attention", "rnn", "fused"]


@dataclass(frozen=True)
class Variant:
    """One kind of dropout, as every consumer of the registry sees it.

    Attributes:
        name: the name registered functions and layers give (``"channel2d"``).
        sharing: what one draw of its mask covers (functions and layers may say otherwise).
        site: where the mask is applied (:data:`Site`).
        channel_ranks: for channel dropout, the input ranks on which whole channels are
            dropped (``(2, 3)`` for ``(C, L)`` and ``(N, C, L)``); a call on another rank drops
            something else (the doctor's DK010), and torch's is not routed to dropkit's. The
            dropkit functions that replace torch's take exactly these; another function of the
            variant may take fewer (``concrete_dropout1d``: batched inputs only), never more.
        element_or_channel: Bernoulli dropout of elements or whole channels, scaled by
            ``1/(1-p)``: the usual rates apply (the doctor's DK004, DK016, DK017).
        not_a_mask: why its noise is not a mask multiplying its input (``mc``'s ``masks=``
            cannot keep it); None when it is.
    """

    name: str
    sharing: MaskSharing
    site: Site = "tensor"
    channel_ranks: tuple[int, ...] | None = None
    element_or_channel: bool = False
    not_a_mask: str | None = None

    @property
    def plain(self) -> bool:
        """A bare dropout of one tensor (not inside attention, an RNN or a fused op)."""
        return self.site == "tensor"


_VARIANTS: dict[str, Variant] = {}


def register_variant(spec: Variant) -> Variant:
    """Add a variant (its name must be new); return it. :func:`dropkit._registry.unregister`
    takes it out again."""
    if spec.name in _VARIANTS:
        raise ValueError(f"register_variant: a variant {spec.name!r} is registered already")
    _VARIANTS[spec.name] = spec
    return spec


def remove_variant(name: str) -> None:
    """Undo :func:`register_variant`."""
    del _VARIANTS[name]


def variant(name: str) -> Variant:
    """The registered :class:`Variant` called ``name``."""
    try:
        return _VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown dropout variant {name!r}; register it first with register_variant "
            f"(registered: {sorted(_VARIANTS)})"
        ) from None


def variants() -> dict[str, Variant]:
    """Every registered variant, by name (a copy)."""
    return dict(_VARIANTS)


_ALPHA = "alpha dropout adds as well as multiplies"
for _spec in (
    Variant("element", "element", element_or_channel=True),
    # torch's feature_dropout: channel dropout of any rank >= 2
    Variant("channel", "channel", element_or_channel=True),
    # dropout1d takes an unbatched (C, L) too, as torch's does; dropout2d and dropout3d take
    # batched inputs only (torch's dropout2d treats a 3D input as (N, C, L), with a warning)
    Variant("channel1d", "channel", channel_ranks=(2, 3), element_or_channel=True),
    Variant("channel2d", "channel", channel_ranks=(4,), element_or_channel=True),
    Variant("channel3d", "channel", channel_ranks=(5,), element_or_channel=True),
    Variant("alpha", "element", not_a_mask=_ALPHA),
    Variant("feature_alpha", "channel", not_a_mask=_ALPHA),
    Variant("gaussian", "element"),
    Variant("path", "sample"),
    Variant("block", "block"),
    Variant("locked", "time"),
    Variant("embedding", "batch"),
    Variant("dropconnect", "batch"),
    Variant(
        "attention",
        "element",
        "attention",
        not_a_mask="its dropout is drawn inside the attention kernel",
    ),
    Variant("rnn", "element", "rnn", not_a_mask="its dropout is drawn inside the RNN kernel"),
    Variant(
        "fused", "element", "fused", not_a_mask="it adds a bias and a residual around the mask"
    ),
):
    register_variant(_spec)
