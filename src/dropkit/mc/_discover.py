"""Which modules Monte Carlo dropout must switch on, found by running the model.

Monte Carlo dropout means: every stochastic op that runs in train mode runs, and nothing else
changes. The ops are easy to recognise (the registry lists the dropout functions; raw random
draws such as ``bernoulli_`` count too), but whether one runs is decided by the ``training`` flag
of the module whose forward issues it, and often by nothing else: Hugging Face attention passes
``dropout_p = p if self.training else 0.0`` to ``scaled_dot_product_attention``. So:

1. **Record** a forward in train mode (normalization layers left in eval, buffers and the RNG
   restored afterwards): each stochastic call and the module whose own forward issued it.
2. **Switch on** those modules and the registered dropout layers with ``p > 0``, everything else
   in eval, and record again: a call missing now is gated by an ancestor (``nn.TransformerEncoder
   Layer`` takes its fast path in eval and skips its dropout), so that ancestor is switched on too.
3. **Check** that the switched-on modules change nothing else: with every stochastic call's rate
   set to 0, the output must be the eval output and no buffer may move. A module that fails
   (BatchNorm computed inline, auxiliary outputs) is left in eval, with a warning naming it.

Registered dropout layers are trusted (their flag gates only their dropout). A module whose only
stochastic calls are raw random draws cannot be checked that way; it is switched on with a
warning.
"""

from __future__ import annotations

import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.utils._pytree import tree_map

from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._registry import function_changes, layer_changes, layer_rate, layer_spec
from dropkit._state import state_kept

_T = TypeVar("_T")

__all__ = ["Discovery", "discover", "output_tensors"]

RANDOM = "random draw: "  # prefixes the recorded name of a raw random call
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class Discovery:
    """What :func:`discover` found: the modules to switch on and how each one is stochastic."""

    model_name: str
    names: dict[nn.Module, str]
    root: nn.Module
    on: list[nn.Module] = field(default_factory=list)
    #: module -> the stochastic calls its own forward issued in train mode
    calls: dict[nn.Module, set[str]] = field(default_factory=dict)
    unsafe: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    #: kept with the cached answer: where :func:`dropkit.mc.predict` could end the shared
    #: prefix last time (``"prefix_level"``)
    memo: dict[str, str] = field(default_factory=dict)
    #: the switched-on module whose stochastic call ran last in the train-mode forward
    last: nn.Module | None = None
    #: :attr:`memo` of the answer with only :attr:`last` switched on
    last_memo: dict[str, str] = field(default_factory=dict)

    @property
    def stochastic(self) -> bool:
        """Whether anything stochastic ran in train mode."""
        return bool(self.calls)

    def name(self, module: nn.Module) -> str:
        """A module's qualified name in the model (the model's class name for the root)."""
        return self.names.get(module) or self.model_name

    def apply(self) -> None:
        """Switch on the modules found (the caller has put the model in eval)."""
        for module in self.on:
            module.training = True

    def only_last(self) -> Discovery:
        """The same answer with only the last stochastic module switched on, and the modules
        that merely gate its call (an ancestor that skips it in eval, issuing nothing itself).
        """
        if self.last is None:
            return replace(self, on=[], calls={}, memo=self.last_memo)
        name = self.names.get(self.last, "")
        on = [
            m
            for m in self.on
            if m is self.last or (m not in self.calls and _contains(self.names.get(m, ""), name))
        ]
        calls = {m: c for m, c in self.calls.items() if m in on}
        return replace(self, on=on, calls=calls, memo=self.last_memo)


class _Recorder(InterceptMode):
    """Records ``(module, call)`` for each stochastic call; optionally sets every rate to 0."""

    def __init__(self, stack: list[nn.Module], zero_rates: bool) -> None:
        super().__init__()
        self.stack = stack
        self.zero_rates = zero_rates
        self.calls: Counter[tuple[nn.Module, str]] = Counter()
        self.order: list[nn.Module] = []  # the module of each stochastic call, in call order

    def dropout(self, call: DropoutCall) -> Any:
        if not call.active:
            return call.run()
        self.calls[(self.stack[-1], call.name)] += 1
        self.order.append(self.stack[-1])
        if not self.zero_rates:
            return call.run()
        args, kwargs = call.spec.with_rate(call.args, call.kwargs, 0.0)
        return call.func(*args, **kwargs)

    def random_draw(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self.calls[(self.stack[-1], RANDOM + getattr(func, "__name__", str(func)))] += 1
        self.order.append(self.stack[-1])
        return func(*args, **kwargs)


def _contains(outer: str, inner: str) -> bool:
    """Whether the module named ``outer`` contains the one named ``inner`` (the root: "")."""
    return outer == "" or inner.startswith(outer + ".")


def output_tensors(out: object) -> Iterator[torch.Tensor]:
    """Every tensor in a model's output (tensors, sequences, mappings, dataclass-like outputs)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, Mapping):
        for value in out.values():
            yield from output_tensors(value)
    elif isinstance(out, list | tuple):
        for value in out:
            yield from output_tensors(value)


def _close(a: object, b: object) -> bool:
    xs, ys = list(output_tensors(a)), list(output_tensors(b))
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point() or x.is_complex():
            tol = 10 * torch.finfo(x.dtype).eps ** 0.5
            if not torch.allclose(x, y, rtol=tol, atol=tol, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True


class _Runner:
    """Runs the model with chosen flags, recording, with buffers and the RNG restored."""

    def __init__(self, root: nn.Module, call: Callable[[], object]) -> None:
        self.root = root
        self.call = call
        self.modules = list(root.modules())
        self.stack: list[nn.Module] = [root]

    def run(self, on: Callable[[nn.Module], bool], zero_rates: bool) -> tuple[object, _Recorder]:
        for module in self.modules:
            module.training = on(module)
        recorder = _Recorder(self.stack, zero_rates)
        handles = []
        for module in self.modules:
            handles.append(module.register_forward_pre_hook(self._push))
            handles.append(module.register_forward_hook(self._pop, always_call=True))
        try:
            with recorder:
                out = self.call()
        finally:
            for handle in handles:
                handle.remove()
            del self.stack[1:]
        return out, recorder

    def _push(self, module: nn.Module, args: object) -> None:
        self.stack.append(module)

    def _pop(self, module: nn.Module, args: object, out: object) -> None:
        if len(self.stack) > 1:
            self.stack.pop()


@dataclass(frozen=True)
class _Cached:
    """A :class:`Discovery` by module names only, so that the cache never keeps a model alive."""

    layout: tuple[tuple[int, type], ...]  # id and class of every module, in order
    layers: tuple[int, ...]  # where the registered dropout layers are among them
    registry: tuple[int, int]  # the registry's change counts (functions, layers) then
    rates: tuple[float | None, ...]  # their rates
    on: tuple[str, ...]
    calls: tuple[tuple[str, frozenset[str]], ...]
    unsafe: tuple[str, ...]
    unchecked: tuple[str, ...]
    memo: dict[str, str]
    last: str | None
    last_memo: dict[str, str]


_CACHE: weakref.WeakKeyDictionary[nn.Module, _Cached] = weakref.WeakKeyDictionary()


def discover(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Discovery:
    """Find what Monte Carlo dropout must switch on in ``model``, called on ``args, kwargs``.

    Every module's ``training`` flag, every buffer and torch's RNG are as they were afterwards.
    The answer is cached per model until its modules (or their classes) or registered rates
    change, or the registry does.
    """
    root: nn.Module = getattr(model, "_orig_mod", model)  # torch.compile: probe eagerly
    # Valid while the same modules of the same classes are there and the registered rates
    # are the same: the rates are read only from the layers that were registered ones.
    in_order = list(root.modules())
    layout = tuple([(id(m), type(m)) for m in in_order])
    cached = _CACHE.get(root)
    if (
        cached is not None
        and cached.layout == layout
        and cached.registry == (function_changes(), layer_changes())
        and tuple([layer_rate(in_order[i]) for i in cached.layers]) == cached.rates
    ):
        modules = dict(root.named_modules())
        names = {m: n for n, m in modules.items()}
        return Discovery(
            type(root).__name__,
            names,
            root,
            on=[modules[n] for n in cached.on],
            calls={modules[n]: set(c) for n, c in cached.calls},
            unsafe=list(cached.unsafe),
            unchecked=list(cached.unchecked),
            memo=cached.memo,
            last=None if cached.last is None else modules[cached.last],
            last_memo=cached.last_memo,
        )
    devices = sorted({t.device.index or 0 for t in _tensors(args, kwargs) if t.is_cuda})
    with torch.random.fork_rng(devices=devices), state_kept(root), torch.no_grad():
        # Fresh copies for every probe: an in-place op in train mode must not reach the
        # caller's tensors (nor the next probe's).
        found = _discover(root, lambda: root(*_copies(args), **_copies(kwargs)))
    layers = tuple([i for i, m in enumerate(in_order) if layer_spec(m) is not None])
    _CACHE[root] = _Cached(
        layout,
        layers,
        (function_changes(), layer_changes()),
        tuple([layer_rate(in_order[i]) for i in layers]),
        tuple(found.names[m] for m in found.on),
        tuple((found.names[m], frozenset(c)) for m, c in found.calls.items()),
        tuple(found.unsafe),
        tuple(found.unchecked),
        found.memo,
        None if found.last is None else found.names[found.last],
        found.last_memo,
    )
    return found


def _copies(tree: _T) -> _T:
    """``tree`` with every tensor in it cloned."""
    return cast(_T, tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree))


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[torch.Tensor]:
    yield from output_tensors(list(args))
    yield from output_tensors(kwargs)


def _discover(root: nn.Module, call: Callable[[], object]) -> Discovery:
    names = {m: n for n, m in root.named_modules()}
    found = Discovery(type(root).__name__, names, root)
    runner = _Runner(root, call)

    # 1. Train mode (normalization kept in eval: it draws nothing, and batch statistics of a
    # single input would fail).
    _, train = runner.run(lambda m: not isinstance(m, _NORMS), zero_rates=False)
    for module, name in train.calls:
        found.calls.setdefault(module, set()).add(name)
    registered = {m for m in runner.modules if (layer_rate(m) or 0.0) > 0}
    on = registered | set(found.calls)
    raw_only = {
        m
        for m, calls in found.calls.items()
        if m not in registered and all(c.startswith(RANDOM) for c in calls)
    }
    check = set(found.calls) - registered - raw_only

    # 2. Switch them on; a call that no longer runs is gated by an ancestor: switch that on too.
    parents = {c: p for p in runner.modules for c in p.children()}
    for _ in range(len(runner.modules)):
        _, mc = runner.run(lambda m: m in on, zero_rates=False)
        missing = {m for key, n in train.calls.items() if mc.calls[key] < n for m in key[:1]}
        added = False
        for module in missing:
            parent = parents.get(module)
            while parent is not None and parent in on:
                parent = parents.get(parent)
            if parent is not None:
                on.add(parent)
                check.add(parent)
                added = True
        if not added:
            break

    # 3. Switched on with every rate at 0, the checked modules must change nothing.
    if check:
        before = [(b, b.detach().clone()) for b in root.buffers()]

        def changes(modules: set[nn.Module]) -> bool:
            out, _ = runner.run(lambda m: m in modules, zero_rates=True)
            moved = any(not torch.equal(b, v) for b, v in before)
            with torch.no_grad():
                for b, v in before:
                    b.copy_(v)
            return moved or not _close(out, reference)

        reference, _ = runner.run(lambda m: False, zero_rates=True)
        if changes(check):
            for module in sorted(check, key=lambda m: names.get(m, "")):
                if changes({module}):
                    on.discard(module)
                    found.unsafe.append(names.get(module) or found.model_name)
    for module in sorted(raw_only, key=lambda m: names.get(m, "")):
        found.unchecked.append(names.get(module) or found.model_name)
    found.on = [m for m in runner.modules if m in on]
    found.last = next((m for m in reversed(train.order) if m in on), None)
    return found


def warn_about(found: Discovery, where: str) -> None:
    """Warn about the modules that could not be switched on safely or checked."""
    for name in found.unsafe:
        warnings.warn(
            f"{where}: '{name}' issues dropout in train mode, but its forward also changes "
            "other behaviour with `training` (outputs or buffers differ even with every dropout "
            "rate at 0); it is left in eval, so its dropout is off under Monte Carlo dropout",
            RuntimeWarning,
            stacklevel=3,
        )
    for name in found.unchecked:
        warnings.warn(
            f"{where}: '{name}' draws random numbers in train mode outside any dropout function "
            "dropkit knows; it is switched on, but dropkit cannot check that nothing else in its "
            "forward depends on `training`",
            RuntimeWarning,
            stacklevel=3,
        )
