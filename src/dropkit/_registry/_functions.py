"""The dropout functions: where each one's rate and on/off flag sit, and what its mask covers.

A dropkit function registers itself with :func:`register_function` where it is defined; torch's
functions (which cannot be decorated) are entries below, keyed by the function object a
``TorchFunctionMode`` receives (for torch's C functions that is e.g. ``torch.lstm``; a dropkit
function must dispatch through ``__torch_function__`` to be seen). The raw random draws
(``torch.bernoulli``, ``Tensor.uniform_``...) outside any dropout function are listed here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as torch_F

from dropkit._registry._variants import MaskSharing, variant

__all__ = [
    "FunctionSpec",
    "call_shares_batch",
    "function_spec",
    "function_specs",
    "is_random",
    "register_function",
    "replacement",
]

FuncT = TypeVar("FuncT", bound=Callable[..., Any])


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
    #: called by a module's forward for its whole work (torch's RNNs, multi-head attention),
    #: its batch not in dim 0 of its first argument: ``mc``'s shared prefix ends at the start
    #: of that module instead
    module_level: bool = False

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


# Plain dicts rather than functools.cache, which torch.compile warns about when it traces a
# TorchFunctionMode that reads them.
_FUNCTIONS: dict[Callable[..., Any], FunctionSpec] = {}
#: torch's function -> the dropkit function that does the same with the same arguments
_REPLACEMENTS: dict[Callable[..., Any], Callable[..., Any]] = {}


def _public_name(func: Callable[..., Any]) -> str:
    """``dropkit.functional.dropout2d`` for ``dropkit.functional._channel.dropout2d``."""
    parts = [part for part in func.__module__.split(".") if not part.startswith("_")]
    return ".".join([*parts, func.__qualname__])


def add_function(func: Callable[..., Any], spec: FunctionSpec) -> None:
    """Register ``func`` (a function object that cannot be decorated) with its spec."""
    variant(spec.variant)  # the variant must be known
    if func in _FUNCTIONS:
        raise ValueError(f"register_function: {spec.name} is registered already")
    _FUNCTIONS[func] = spec


def register_function(
    variant_name: str,
    *,
    p_at: int = 1,
    p_name: str = "p",
    p_default: float | None = 0.5,
    training_at: int | None = 2,
    training_name: str | None = "training",
    training_default: bool | None = True,
    sharing: MaskSharing | None = None,
    replaces: Callable[..., Any] | None = None,
) -> Callable[[FuncT], FuncT]:
    """Register the decorated function as a dropout function of variant ``variant_name``.

    The defaults describe dropkit's signature ``f(input, p=0.5, training=True, ...)``. Args:
    where the rate and the on/off flag sit (``training_at=None``: the rate alone switches it
    on); ``sharing``: what its mask covers (default: the variant's); ``replaces``: torch's
    function with the same arguments and meaning, which ``convert(functional=True)`` routes to
    this one. The function itself is returned unchanged; it must dispatch through
    ``__torch_function__`` (``handle_torch_function``) for the modes to see it.
    """

    def register(func: FuncT) -> FuncT:
        spec = FunctionSpec(
            _public_name(func),
            variant_name,
            p_at,
            p_name,
            p_default,
            training_at,
            training_name,
            training_default,
            sharing or variant(variant_name).sharing,
        )
        add_function(func, spec)
        if replaces is not None:
            _REPLACEMENTS[replaces] = func
        return func

    return register


def remove_function(func: Callable[..., Any]) -> None:
    """Undo :func:`register_function` (and the routing of what it replaces)."""
    del _FUNCTIONS[func]
    for torch_func in [t for t, f in _REPLACEMENTS.items() if f is func]:
        del _REPLACEMENTS[torch_func]


def function_specs() -> Mapping[Callable[..., Any], FunctionSpec]:
    """Every registered dropout function, torch's and dropkit's, with its :class:`FunctionSpec`."""
    return _FUNCTIONS


def function_spec(func: object) -> FunctionSpec | None:
    """The :class:`FunctionSpec` of ``func`` (as a ``TorchFunctionMode`` receives it), or None."""
    try:
        return _FUNCTIONS.get(func)  # type: ignore[call-overload, no-any-return]
    except TypeError:  # unhashable
        return None


def replacement(func: object) -> Callable[..., Any] | None:
    """The dropkit function registered to replace torch's ``func``, or None."""
    try:
        return _REPLACEMENTS.get(func)  # type: ignore[call-overload, no-any-return]
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
    return variant(spec.variant).sharing == "sample" and mode == "batch"


def _torch(func: Callable[..., Any], name: str, variant_name: str, training: bool = True) -> None:
    # torch.nn.functional's ``f(input, p=0.5, training=True, inplace=False)``
    spec = FunctionSpec(
        name, variant_name, 1, "p", 0.5, 2, "training", training, variant(variant_name).sharing
    )
    add_function(func, spec)


def _vf(func: Callable[..., Any], name: str, variant_name: str) -> None:
    # torch's C functions ``f(input, p, train)``: both required
    sharing = variant(variant_name).sharing
    add_function(func, FunctionSpec(name, variant_name, 1, "p", None, 2, "train", None, sharing))


def _rnn(func: Callable[..., Any], name: str) -> None:
    # Dropout between stacked layers, element-wise; ``train`` is required.
    spec = FunctionSpec(name, "rnn", 5, "dropout", None, 6, "train", None, packed_shift=True,
                        module_level=True)  # fmt: skip
    add_function(func, spec)


_TF = "torch.nn.functional."
_torch(torch_F.dropout, _TF + "dropout", "element")
_torch(torch_F.dropout1d, _TF + "dropout1d", "channel1d")
_torch(torch_F.dropout2d, _TF + "dropout2d", "channel2d")
_torch(torch_F.dropout3d, _TF + "dropout3d", "channel3d")
# torch's alpha variants default to training=False (dropkit's to True)
_torch(torch_F.alpha_dropout, _TF + "alpha_dropout", "alpha", training=False)
_torch(torch_F.feature_alpha_dropout, _TF + "feature_alpha_dropout", "feature_alpha", False)
add_function(
    torch_F.scaled_dot_product_attention,
    FunctionSpec(_TF + "scaled_dot_product_attention", "attention", 4, "dropout_p", 0.0, None,
                 None, None),
)  # fmt: skip
add_function(
    torch_F.multi_head_attention_forward,
    FunctionSpec(_TF + "multi_head_attention_forward", "attention", 10, "dropout_p", None, 13,
                 "training", True, module_level=True),
)  # fmt: skip
# torch's C functions (torch._VF), as called by torch.nn.functional and nn.RNNBase
_vf(torch.dropout, "torch.dropout", "element")
_vf(torch.dropout_, "torch.dropout_", "element")
_vf(torch.feature_dropout, "torch.feature_dropout", "channel")
_vf(torch.feature_dropout_, "torch.feature_dropout_", "channel")
_vf(torch.alpha_dropout, "torch.alpha_dropout", "alpha")
_vf(torch.alpha_dropout_, "torch.alpha_dropout_", "alpha")
_vf(torch.feature_alpha_dropout, "torch.feature_alpha_dropout", "feature_alpha")
_vf(torch.feature_alpha_dropout_, "torch.feature_alpha_dropout_", "feature_alpha")
_vf(torch.native_dropout, "torch.native_dropout", "element")
_rnn(torch.lstm, "torch.lstm")
_rnn(torch.gru, "torch.gru")
_rnn(torch.rnn_tanh, "torch.rnn_tanh")
_rnn(torch.rnn_relu, "torch.rnn_relu")


_t = torch.Tensor
#: Random draws outside any dropout function: how third-party stochastic depth and LayerDrop
#: are written.
_RANDOM: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.bernoulli, _t.bernoulli, _t.bernoulli_, torch.rand, torch.rand_like, torch.randn,
        torch.randn_like, torch.randint, torch.randint_like, torch.randperm, torch.normal,
        torch.poisson, torch.multinomial, _t.multinomial, _t.normal_, _t.uniform_, _t.random_,
        _t.exponential_, _t.geometric_, _t.cauchy_, _t.log_normal_,
    }
)  # fmt: skip


def is_random(func: object) -> bool:
    """Whether ``func`` draws random numbers outside any registered dropout function
    (``bernoulli_``, ``rand``...: how third-party stochastic depth and LayerDrop are written)."""
    try:
        return func in _RANDOM
    except TypeError:  # unhashable
        return False
