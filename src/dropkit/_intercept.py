"""The base of dropkit's ``TorchFunctionMode`` s: a function is looked up in the registry once.

A mode of dropkit (the functional routing, Monte Carlo discovery and sampling, consistent masks,
moment propagation, the doctor's recorder) sees every torch call of a forward, but only two kinds
mean something to most of them: the calls of a registered dropout function and the raw random
draws (``torch.bernoulli``, ``Tensor.uniform_``...; see :mod:`dropkit._registry`).
:class:`InterceptMode` asks the registry what a function is the first time any mode sees it and
keeps the answer in a dict keyed by the function object, so that a call costs one dict lookup;
then it hands the subclass

- :meth:`~InterceptMode.dropout` a :class:`DropoutCall` for each call of a registered dropout
  function, switched on or not (its spec, rate and flag read once);
- :meth:`~InterceptMode.random_draw` each raw random draw;
- :meth:`~InterceptMode.other` every other call.

Each of them runs the call unchanged unless the subclass overrides it; a mode that leaves
:meth:`~InterceptMode.other` alone passes those calls straight to torch from the base, with no
further Python call. Inside a mode's handler torch has switched the mode off, so what the
handler calls reaches the modes below it, not itself.

The answers are dropped when a mode is made and the registry has changed since (a function
registered or removed after its first call is seen), or by :func:`clear_lookups`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch.overrides import TorchFunctionMode

from dropkit._registry import FunctionSpec, function_changes, function_spec, is_random

__all__ = ["DropoutCall", "InterceptMode", "clear_lookups"]


@dataclass(frozen=True, eq=False)
class DropoutCall:
    """One call of a registered dropout function, as :meth:`InterceptMode.dropout` receives it.

    ``rate`` and ``training`` are read from the call's arguments by ``spec`` (``training`` is
    whether the rate is above 0 for functions without a flag, such as
    ``scaled_dot_product_attention``); the call draws a mask when ``active``.
    """

    func: Callable[..., Any]
    spec: FunctionSpec
    rate: float
    training: bool
    active: bool  # whether the call draws a mask: switched on with a rate above 0
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    types: Any = ()  # the tensor types of the call, for ``redispatch_function``

    @property
    def name(self) -> str:
        """The function's qualified name (``torch.nn.functional.dropout``), for messages."""
        return self.spec.name

    @property
    def input(self) -> Any:
        """The tensor the dropout applies to (the first argument)."""
        return self.args[0] if self.args else self.kwargs.get("input")

    def run(self) -> Any:
        """The call itself, unchanged."""
        return self.func(*self.args, **self.kwargs)


_RANDOM_DRAW = "random draw"
_UNSEEN = "unseen"
#: function -> its FunctionSpec, _RANDOM_DRAW, or None (anything else)
_LOOKUPS: dict[Callable[..., Any], FunctionSpec | str | None] = {}
#: torch's API has a few thousand functions; functions made at run time (closures passed to
#: ``handle_torch_function``) could grow the dict without end and keep them alive, so past this
#: many it starts again (a look-up costs a few microseconds)
_MAX_LOOKUPS = 8192
_REGISTERED = [-1]  # the registry's change count when _LOOKUPS was last checked against it


def clear_lookups() -> None:
    """Forget what every function is: the next call of each asks the registry again."""
    _LOOKUPS.clear()


def _look_up(func: Callable[..., Any]) -> FunctionSpec | str | None:
    spec = function_spec(func)
    kind: FunctionSpec | str | None = spec
    if spec is None and is_random(func):
        kind = _RANDOM_DRAW
    if len(_LOOKUPS) >= _MAX_LOOKUPS:
        _LOOKUPS.clear()
    _LOOKUPS[func] = kind
    return kind


class InterceptMode(TorchFunctionMode):
    """The base of dropkit's modes: override :meth:`dropout`, :meth:`random_draw` and
    :meth:`other` (see the module notes); a subclass with its own ``__init__`` calls
    ``super().__init__()``.

    Example:
        >>> import torch
        >>> from dropkit._intercept import InterceptMode
        >>> class Rates(InterceptMode):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.rates = []
        ...     def dropout(self, call):
        ...         self.rates.append((call.name, call.rate, call.active))
        ...         return call.run()
        >>> with Rates() as mode:
        ...     _ = torch.nn.functional.dropout(torch.ones(2, 3), 0.25, training=False)
        >>> mode.rates
        [('torch.nn.functional.dropout', 0.25, False)]
    """

    #: whether the subclass overrides :meth:`other` (set per class): if not, the base runs
    #: those calls itself
    _sees_other: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._sees_other = cls.other is not InterceptMode.other

    def __init__(self) -> None:
        super().__init__()
        changes = function_changes()
        if changes != _REGISTERED[0]:
            _LOOKUPS.clear()
            _REGISTERED[0] = changes

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        try:
            kind = _LOOKUPS.get(func, _UNSEEN)
        except TypeError:  # unhashable: not registered
            kind = None
        if kind is _UNSEEN:
            kind = _look_up(func)
        if kind is None:
            if self._sees_other:
                return self.other(func, types, args, kwargs)
            return func(*args, **kwargs)
        if kind is _RANDOM_DRAW:
            return self.random_draw(func, types, args, kwargs)
        assert isinstance(kind, FunctionSpec)
        rate, training = kind.rate(args, kwargs), kind.training(args, kwargs)
        call = DropoutCall(func, kind, rate, training, training and rate > 0, args, kwargs, types)
        return self.dropout(call)

    def dropout(self, call: DropoutCall) -> Any:
        """A call of a registered dropout function (on or off). Default: run it."""
        return call.run()

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A random draw outside any dropout function. Default: as :meth:`other`."""
        if self._sees_other:
            return self.other(func, types, args, kwargs)
        return func(*args, **kwargs)

    def other(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Any other torch call. Default: run it."""
        return func(*args, **kwargs)
