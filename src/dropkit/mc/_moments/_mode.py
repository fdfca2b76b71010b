"""The propagation mode, the two rule tables it reads, and the decorators that fill them.

:class:`Propagation` is a ``TorchFunctionMode``: each tensor it returns holds the *mean*, the
variances sit in a side table keyed by tensor identity. For each call it finds, once per
function, what handles it:

1. a dropout function of :mod:`dropkit._registry` (``function_spec``): the rule registered with
   :func:`dropout_rule` for that function, else for its variant; a variant without one raises;
2. a random draw (``_registry.is_random``): raises, the propagation cannot see its noise;
3. anything else: run as it is when no input carries variance; otherwise the rule registered
   with :func:`moment_rule` for that function, and without one ``NotImplementedError``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from dropkit._registry import FunctionSpec, function_spec, is_random

__all__ = [
    "DROPOUT_RULES",
    "RULES",
    "SAMPLING_HINT",
    "DropoutRule",
    "Propagation",
    "Rule",
    "arg",
    "dropout_rule",
    "moment_rule",
    "ntuple",
    "op_name",
    "replace",
]

SAMPLING_HINT = "use method='sampling' for this model"

#: ``rule(prop, func, args, kwargs)``: the call's result (the mean), its variance bound with
#: ``prop.bind``. Called only when some input of the call carries variance.
Rule = Callable[["Propagation", Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
#: ``rule(prop, spec, func, args, kwargs)`` for a registered dropout function, on every call.
DropoutRule = Callable[
    ["Propagation", FunctionSpec, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any
]

#: torch function (or ``torch.Tensor`` method) -> its moment rule
RULES: dict[Callable[..., Any], Rule] = {}
#: dropout function, or variant name of :mod:`dropkit._registry` -> its rule (function first)
DROPOUT_RULES: dict[Callable[..., Any] | str, DropoutRule] = {}

_R = TypeVar("_R", bound=Rule)
_D = TypeVar("_D", bound=DropoutRule)


def moment_rule(*funcs: Callable[..., Any]) -> Callable[[_R], _R]:
    """Register ``rule`` as the moment rule of each of ``funcs`` (a decorator)."""

    def register(rule: _R) -> _R:
        for func in funcs:
            RULES[func] = rule
        return rule

    return register


def dropout_rule(*keys: Callable[..., Any] | str) -> Callable[[_D], _D]:
    """Register ``rule`` for registered dropout functions: by variant name, or by function."""

    def register(rule: _D) -> _D:
        for key in keys:
            DROPOUT_RULES[key] = rule
        return rule

    return register


# ------------------------------------------------------------------ argument helpers


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """The argument at position ``index`` or keyword ``name``, else ``default``."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def replace(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, value: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with the one at ``index`` / ``name`` set to ``value``."""
    if len(args) > index:
        return (*args[:index], value, *args[index + 1 :]), kwargs
    return args, {**kwargs, name: value}


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    """A size argument (an int or a sequence) as ``n`` ints."""
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(e) for e in value)
    return values * n if len(values) == 1 else values


def op_name(func: Callable[..., Any]) -> str:
    """``torch.nn.functional.linear``, ``torch.Tensor.view``...: the name a user writes."""
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    if qualname.startswith(("TensorBase.", "Tensor.")) or getattr(func, "__objclass__", None):
        return f"torch.Tensor.{name}"
    module = getattr(func, "__module__", None) or "torch"
    module = {"torch._C._nn": "torch.nn.functional", "torch._C._VariableFunctions": "torch"}.get(
        module, module
    )
    return f"{module}.{name}"


def _leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, list | tuple):
            yield from a
        else:
            yield a


# ------------------------------------------------------------------ the mode


class Propagation(TorchFunctionMode):
    """Carries (mean, variance) through the torch calls of one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self._table: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self._squares: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self.dropouts = 0
        self.where: list[str] = []  # the stack of module names, for error messages

    # -- the side table

    def var(self, t: Any) -> torch.Tensor | None:
        """The variance bound to ``t``, or None (not a tensor, or no noise)."""
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._table.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def zvar(self, t: torch.Tensor) -> torch.Tensor:
        """The variance of ``t``, zeros if it carries none."""
        v = self.var(t)
        return torch.zeros_like(t) if v is None else v

    def bind(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Record ``v`` (broadcast to ``t``'s shape) as the variance of ``t``; returns ``t``."""
        key = id(t)
        table = self._table

        def forget(ref: weakref.ref[torch.Tensor]) -> None:
            entry = table.get(key)
            if entry is not None and entry[0] is ref:
                del table[key]

        if v.shape != t.shape:
            v = torch.broadcast_to(v, t.shape)
        table[key] = (weakref.ref(t, forget), v.to(t.dtype))
        return t

    def rebind(self, target: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """An in-place op's result: ``mean`` written into ``target``, which gets ``var``."""
        target.copy_(mean)
        return self.bind(target, var)

    def random(self, t: Any) -> bool:
        """Whether ``t`` is a tensor that carries variance."""
        return self.var(t) is not None

    def square(self, w: torch.Tensor) -> torch.Tensor:
        """``w * w``, computed once per weight tensor."""
        entry = self._squares.get(id(w))
        if entry is not None and entry[0]() is w:
            return entry[1]
        sq = w * w
        self._squares[id(w)] = (weakref.ref(w), sq)
        return sq

    # -- errors

    def unsupported(self, func: Callable[..., Any], why: str = "") -> NotImplementedError:
        """The error for a call the propagation cannot follow, naming the op and the module."""
        where = f" in module {self.where[-1]!r}" if self.where else ""
        detail = f" ({why})" if why else ""
        return NotImplementedError(
            f"predict(method='moments'): {op_name(func)}{where} has no moment-propagation rule"
            f"{detail}; {SAMPLING_HINT}"
        )

    # -- dispatch

    def plain(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call that is not dropout: as it is, or through its moment rule if an input is noisy."""
        if not any(self.random(a) for a in _leaves(args, kwargs)):
            return func(*args, **kwargs)
        rule = RULES.get(func)
        if rule is not None:
            return rule(self, func, args, kwargs)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) or (
            isinstance(out, list | tuple) and any(isinstance(o, torch.Tensor) for o in out)
        ):
            raise self.unsupported(func, "its input carries dropout noise")
        return out  # metadata: shape, dtype, dim, ...

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        spec = function_spec(func)
        if spec is not None:
            dropout = DROPOUT_RULES.get(func) or DROPOUT_RULES.get(spec.variant)
            if dropout is None:
                if spec.active(args, kwargs):
                    raise self.unsupported(func, f"dropout of variant {spec.variant!r}")
                return self.plain(func, args, kwargs)
            return dropout(self, spec, func, args, kwargs)
        if is_random(func):
            raise self.unsupported(func, "it draws random numbers the propagation cannot see")
        return self.plain(func, args, kwargs)
