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

import sys
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dropkit._registry import FunctionSpec, function_spec, function_specs, is_random

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


# ------------------------------------------------------------------ the mode


#: What the mode does with a function: ``(kind, rule, spec)``, resolved once per function.
_PLAIN, _DROPOUT, _RANDOM = 0, 1, 2
_Resolved = tuple[int, Any, FunctionSpec | None]
_RESOLVED: dict[Any, _Resolved] = {}
_resolved_for: list[object] = [None]  # what _RESOLVED was resolved against


def _tables_key() -> tuple[object, ...]:
    """Changes whenever a rule or a registered dropout function is added, removed or replaced."""
    specs = function_specs()
    return (
        tuple(map(id, specs)),
        tuple(map(id, specs.values())),
        tuple(map(id, RULES.values())),
        tuple(map(id, DROPOUT_RULES.values())),
    )


def _resolve(func: Any) -> _Resolved:
    try:
        spec = function_spec(func)
        if spec is not None:
            rule: Any = DROPOUT_RULES.get(func) or DROPOUT_RULES.get(spec.variant)
            resolved: _Resolved = (_DROPOUT, rule, spec)
        elif is_random(func):
            resolved = (_RANDOM, None, None)
        else:
            resolved = (_PLAIN, RULES.get(func), None)
        _RESOLVED[func] = resolved
    except TypeError:  # unhashable: nothing is registered for it
        resolved = (_PLAIN, None, None)
    return resolved


class Propagation(TorchFunctionMode):
    """Carries (mean, variance) through the torch calls of one forward pass.

    Args:
        model: the model that runs (names the module in error messages); None for none.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        super().__init__()
        # Tensor id -> (weak reference, variance). No callback: a dead tensor's entry stays
        # until the pass ends (its reference then returns None, so a reused id never matches).
        self._table: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self._squares: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self.dropouts = 0
        self.model = model
        key = _tables_key()
        if _resolved_for[0] != key:
            _RESOLVED.clear()
            _resolved_for[0] = key

    # -- the side table

    def var(self, t: Any) -> torch.Tensor | None:
        """The variance bound to ``t``, or None (not a tensor, or no noise)."""
        entry = self._table.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def zvar(self, t: torch.Tensor) -> torch.Tensor:
        """The variance of ``t``, zeros if it carries none."""
        entry = self._table.get(id(t))
        if entry is None or entry[0]() is not t:
            return torch.zeros_like(t)
        return entry[1]

    def bind(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Record ``v`` (broadcast to ``t``'s shape) as the variance of ``t``; returns ``t``."""
        if v.shape != t.shape:
            v = torch.broadcast_to(v, t.shape)
        if v.dtype != t.dtype:
            v = v.to(t.dtype)
        self._table[id(t)] = (weakref.ref(t), v)
        return t

    def rebind(self, target: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """An in-place op's result: ``mean`` written into ``target``, which gets ``var``."""
        target.copy_(mean)
        return self.bind(target, var)

    def random(self, t: Any) -> bool:
        """Whether ``t`` is a tensor that carries variance."""
        entry = self._table.get(id(t))
        return entry is not None and entry[0]() is t

    def square(self, w: torch.Tensor) -> torch.Tensor:
        """``w * w``, computed once per weight tensor and pass (a few microseconds next to the
        pass; kept no longer, so that a weight changed in place is never stale)."""
        entry = self._squares.get(id(w))
        if entry is not None and entry[0]() is w:
            return entry[1]
        sq = w * w
        self._squares[id(w)] = (weakref.ref(w), sq)
        return sq

    # -- errors

    def module_name(self) -> str | None:
        """The innermost module of the model whose forward is running (read off the stack)."""
        if self.model is None:
            return None
        names = {id(m): name or type(m).__name__ for name, m in self.model.named_modules()}
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                return names[id(owner)]
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def unsupported(self, func: Callable[..., Any], why: str = "") -> NotImplementedError:
        """The error for a call the propagation cannot follow, naming the op and the module."""
        module = self.module_name()
        where = f" in module {module!r}" if module is not None else ""
        detail = f" ({why})" if why else ""
        return NotImplementedError(
            f"predict(method='moments'): {op_name(func)}{where} has no moment-propagation rule"
            f"{detail}; {SAMPLING_HINT}"
        )

    # -- dispatch

    def noisy(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether some tensor among the arguments (or in a list or tuple of them) is noisy."""
        table = self._table
        for group in (args, kwargs.values()) if kwargs else (args,):
            for a in group:
                if isinstance(a, list | tuple):
                    for b in a:
                        entry = table.get(id(b))
                        if entry is not None and entry[0]() is b:
                            return True
                else:
                    entry = table.get(id(a))
                    if entry is not None and entry[0]() is a:
                        return True
        return False

    def plain(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call that is not dropout: as it is, or through its moment rule if an input is noisy."""
        if not self.noisy(args, kwargs):
            return func(*args, **kwargs)
        return self._noisy_call(func, RULES.get(func), args, kwargs)

    def _noisy_call(
        self, func: Callable[..., Any], rule: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
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
        # Every torch call of the pass comes through here: one dictionary hit, and the
        # noise check written out (each Python frame costs every call).
        kwargs = kwargs or {}
        resolved = _RESOLVED.get(func)
        if resolved is None:
            resolved = _resolve(func)
        kind, rule, spec = resolved
        if kind == _PLAIN:
            table = self._table
            for group in (args, kwargs.values()) if kwargs else (args,):
                for a in group:
                    if isinstance(a, list | tuple):
                        if self.noisy(tuple(a), {}):
                            return self._noisy_call(func, rule, args, kwargs)
                        continue
                    entry = table.get(id(a))
                    if entry is not None and entry[0]() is a:
                        return self._noisy_call(func, rule, args, kwargs)
            return func(*args, **kwargs)
        if kind == _DROPOUT and spec is not None:
            if rule is None:
                if spec.active(args, kwargs):
                    raise self.unsupported(func, f"dropout of variant {spec.variant!r}")
                return self.plain(func, args, kwargs)
            return rule(self, spec, func, args, kwargs)
        raise self.unsupported(func, "it draws random numbers the propagation cannot see")
