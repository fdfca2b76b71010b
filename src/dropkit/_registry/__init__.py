"""What counts as dropout, in one place: its variants, every dropout function and layer class,
the raw random draws, and the op families the doctor's rules reason about.

``convert``, the routing of torch's functions, ``mc``, ``doctor`` and ``experiments`` ask this
package; none keeps a list of its own.

- A **variant** (:class:`Variant`, :func:`register_variant`): what its mask covers, where it is
  applied, the input ranks a channel variant takes, whether its noise is a mask.
- A **function** (:class:`FunctionSpec`): a dropkit function registers itself with
  ``@register_function(variant, replaces=torch_function)`` where it is defined; torch's are
  entries in :mod:`._functions`. Say where ``p`` and ``training`` sit (``training_at=None``
  when the rate alone switches it, as ``scaled_dot_product_attention``'s ``dropout_p``).
- A **layer class** (:class:`LayerSpec`): a dropkit layer registers itself with the
  ``@register_layer(variant)`` class decorator; torch's, timm's and torchvision's are entries in
  :mod:`._layers` under their qualified names (third-party classes are never imported).
- An **op family** (:func:`register_ops`): the names of the ops in it, as the doctor records them.

:func:`unregister` undoes a registration (for tests, and for code that registers a variant of
its own for a while).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dropkit._registry._functions import (
    FunctionSpec,
    add_function,
    call_shares_batch,
    function_changes,
    function_spec,
    function_specs,
    is_random,
    register_function,
    remove_function,
    replacement,
)
from dropkit._registry._layers import (
    LayerSpec,
    Unmappable,
    add_layer,
    channel_layer,
    dropout_layers,
    keeps_names_of,
    layer_changes,
    layer_rate,
    layer_shares_batch,
    layer_spec,
    layer_specs,
    learned_rate_layer,
    register_layer,
    remove_layer,
)
from dropkit._registry._ops import OpFamily, commutes_with_dropout, op_family, register_ops
from dropkit._registry._variants import (
    MaskSharing,
    Site,
    Variant,
    register_variant,
    remove_variant,
    variant,
    variants,
)

__all__ = [
    "FunctionSpec",
    "LayerSpec",
    "MaskSharing",
    "OpFamily",
    "Site",
    "Unmappable",
    "Variant",
    "add_function",
    "add_layer",
    "call_shares_batch",
    "channel_layer",
    "commutes_with_dropout",
    "dropout_layers",
    "function_changes",
    "function_spec",
    "function_specs",
    "is_random",
    "keeps_names_of",
    "layer_changes",
    "layer_rate",
    "layer_shares_batch",
    "layer_spec",
    "layer_specs",
    "learned_rate_layer",
    "op_family",
    "register_function",
    "register_layer",
    "register_ops",
    "register_variant",
    "replacement",
    "unregister",
    "variant",
    "variants",
]


def unregister(entry: Variant | type | str | Callable[..., Any]) -> None:
    """Undo a registration: a :class:`Variant`, a layer class (or its qualified name), or a
    dropout function. Its functions and layers go before a variant does."""
    if isinstance(entry, Variant):
        users = [s.name for s in function_specs().values() if s.variant == entry.name]
        users += [n for n, s in layer_specs().items() if s.variant == entry.name]
        if users:
            raise ValueError(
                f"unregister: variant {entry.name!r} is still used by {users}; unregister "
                "them first"
            )
        remove_variant(entry.name)
    elif isinstance(entry, type | str):
        remove_layer(entry)
    else:
        remove_function(entry)
