"""The propagation mode, the two rule tables it reads, and the decorators that fill them.

:class:`Propagation` extends :class:`dropkit._intercept.InterceptMode`, which looks each function
up in :mod:`dropkit._registry` once. Each tensor the mode returns holds the *mean*; the
variances sit in a side table keyed by tensor identity. For each call:

1. a registered dropout function (a :class:`~dropkit._intercept.DropoutCall`): the rule
   registered with :func:`dropout_rule` for that function, else for its variant; a variant
   without one raises when the call is on;
2. a raw random draw: raises, the propagation cannot see its noise;
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

from dropkit._intercept import DropoutCall, InterceptMode

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
#: ``rule(prop, call)`` for each call of a registered dropout function, on or off.
DropoutRule = Callable[["Propagation", DropoutCall], Any]

#: torch function (or ``torch.Tensor`` method) -> its moment rule
RULES: dict[Callable[..., Any], Rule] = {}
#: dropout function, or variant name of :mod:`dropkit._registry` -> its rule (function first)
DROPOUT_RULES: dict[Callable[..., Any] | str, DropoutRule] = {}

_R = TypeVar("_R", bound=Rule)
_D = TypeVar("_D", bound=DropoutRule)


def moment_rule(*funcs: Callable[..., Any]) -> Callable[[_R], _R]:
    """Register ``rule`` as the moment rule of each of ``funcs`` (a decorator).

    ``rule(prop, func, args, kwargs)`` runs when some argument of a call of ``func`` carries
    variance, and returns the mean with its variance bound by ``prop.bind(mean, var)``.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> from dropkit.mc._moments._gaussian import quadrature_moments
        >>> @moment_rule(torch.nn.functional.softsign)
        ... def _softsign(prop, func, args, kwargs):
        ...     x = args[0]
        ...     return prop.bind(*quadrature_moments(func, x, prop.zvar(x)))
        >>> model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Softsign())
        >>> result = mc.predict(model, torch.ones(2, 3), method="moments")
        >>> result.variance.shape, bool((result.variance > 0).all())
        (torch.Size([2, 3]), True)
        >>> del RULES[torch.nn.functional.softsign]  # the example's rule, taken out again
    """

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


class Propagation(InterceptMode):
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
        return self._noisy_call(func, args, kwargs)

    def _noisy_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        rule = RULES.get(func)
        if rule is not None:
            return rule(self, func, args, kwargs)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) or (
            isinstance(out, list | tuple) and any(isinstance(o, torch.Tensor) for o in out)
        ):
            raise self.unsupported(func, "its input carries dropout noise")
        if out is None:  # written in place (``buf[i] = noisy``): the variance would be lost
            raise self.unsupported(func, "it writes a tensor carrying dropout noise in place")
        return out  # metadata: shape, dtype, dim, ...

    def other(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Every call of the pass that is not dropout comes here: the noise check is written
        # out (each Python frame costs every call), the rule found with one dictionary hit.
        table = self._table
        for group in (args, kwargs.values()) if kwargs else (args,):
            for a in group:
                if isinstance(a, list | tuple):
                    for b in a:
                        entry = table.get(id(b))
                        if entry is not None and entry[0]() is b:
                            return self._noisy_call(func, args, kwargs)
                    continue
                entry = table.get(id(a))
                if entry is not None and entry[0]() is a:
                    return self._noisy_call(func, args, kwargs)
        return func(*args, **kwargs)

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        raise self.unsupported(func, "it draws random numbers the propagation cannot see")

    def dropout(self, call: DropoutCall) -> Any:
        rule = DROPOUT_RULES.get(call.func) or DROPOUT_RULES.get(call.spec.variant)
        if rule is not None:
            return rule(self, call)
        if call.active:
            raise self.unsupported(call.func, f"dropout of variant {call.spec.variant!r}")
        return self.plain(call.func, call.args, call.kwargs)
