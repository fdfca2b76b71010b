"""Recording what a forward pass actually does: a graph of modules and torch calls.

Every call of a leaf module (Linear, Conv, BatchNorm, activations, dropout layers...) becomes
one node, through module hooks; every torch function called in a forward outside leaf modules
(``torch.relu``, ``x + y``, ``F.dropout``, ``x.view``...) becomes one node too, through a
``TorchFunctionMode``. Each node knows which nodes produced its tensor inputs and which module's
forward made it. Because the model really runs, data-dependent control flow is no obstacle (this
is what ``torch.fx.symbolic_trace`` cannot do).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._output import model_output
from dropkit._registry import Variant, layer_spec, variant

__all__ = ["Graph", "Node", "TracedDropout", "trace"]


@dataclass(frozen=True)
class TracedDropout:
    """What one dropout layer or function did in a recorded forward pass.

    Attributes:
        p: its rate.
        variant: its registered variant; None where only the rate is known (a subclass of a
            dropout layer with a forward of its own, a dropkit ``Dropout`` with a
            ``noise_shape``, which shares its mask in ways the rules do not reason about).
        active: it was switched on (a layer in training mode, an RNN with stacked layers; a
            function called with its flag on and a rate above 0).
        functional: a function call rather than a layer.
    """

    p: float
    variant: Variant | None
    active: bool
    functional: bool

    @property
    def plain(self) -> bool:
        """A bare dropout of one tensor (the structural rules skip the others)."""
        return self.variant is None or self.variant.plain

    @property
    def element_or_channel(self) -> bool:
        return self.variant is not None and self.variant.element_or_channel

    @property
    def element_wise(self) -> bool:
        """Plain element-wise Bernoulli dropout (``nn.Dropout``, ``F.dropout``)."""
        return (
            self.element_or_channel
            and self.variant is not None
            and (self.variant.sharing == "element")
        )

    @property
    def per_sample(self) -> bool:
        """Drops whole samples (stochastic depth)."""
        return self.variant is not None and self.variant.sharing == "sample"

    @property
    def attention(self) -> bool:
        return self.variant is not None and self.variant.site == "attention"

    @property
    def channel_ranks(self) -> tuple[int, ...] | None:
        return None if self.variant is None else self.variant.channel_ranks


@dataclass
class Node:
    """One call: a leaf module or a torch function."""

    index: int
    name: str  # the module's class name, or the function's name
    module: str  # qualified name of the module (leaf) or of the module whose forward called it
    inputs: list[int]  # producing node of each tensor input (-1: the model input or a constant)
    kind: str  # "module", "function", or "input" (the model's inputs, node 0)
    rank: int  # dims of the first tensor input (-1 if none)
    dropout: TracedDropout | None = None
    consumers: list[int] = field(default_factory=list)


@dataclass
class Graph:
    nodes: list[Node]
    outputs: list[int]  # producing nodes of the model's output tensors

    def dropouts(self) -> Iterator[Node]:
        return (n for n in self.nodes if n.dropout is not None)

    def ancestors(self, index: int, blocked: frozenset[int] = frozenset()) -> set[int]:
        """Nodes ``index`` depends on; paths through ``blocked`` nodes are not followed."""
        seen: set[int] = set()
        stack = [i for i in self.nodes[index].inputs if i >= 0 and i not in blocked]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(j for j in self.nodes[i].inputs if j >= 0 and j not in blocked)
        return seen


def _runs_forward_of(module: nn.Module, base: type) -> bool:
    """Whether ``module``'s class runs ``base``'s forward (a subclass may do something else)."""
    return getattr(type(module), "forward", None) is getattr(base, "forward", None)


def module_dropout(module: nn.Module) -> TracedDropout | None:
    """What a registered dropout layer does on this call: rate, variant, whether it is on."""
    spec = layer_spec(module)
    if spec is None:
        return None
    try:
        p = float(getattr(module, spec.rate_attr))
    except (AttributeError, TypeError, ValueError):
        return None
    kind: Variant | None = variant(spec.variant)
    registered = next(c for c in type(module).__mro__ if layer_spec(c, exact=True) is spec)
    if not _runs_forward_of(module, registered):
        kind = None  # a subclass with its own forward: only its rate is known
    elif getattr(module, "noise_shape", None) is not None:
        kind = None  # dropkit's Dropout with a noise_shape: shares its mask its own way
    active = module.training
    if kind is not None and kind.site == "rnn":  # between stacked layers only
        active = active and getattr(module, "num_layers", 1) > 1
    return TracedDropout(p, kind, bool(active), functional=False)


def opaque(module: nn.Module) -> bool:
    """Record this module as one node, not the calls inside it: a childless torch.nn layer
    (Linear, Conv2d, BatchNorm2d, ReLU...) or a registered dropout layer. Any other module's
    calls are recorded, so that a mistake inside a user's layer that holds parameters but no
    submodules is seen."""
    if layer_spec(module) is not None:
        return True
    if any(True for _ in module.children()):
        return False
    return type(module).__module__.startswith("torch.nn.")


class _Recorder(InterceptMode):
    def __init__(self, names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.names = names
        self.nodes: list[Node] = []
        self._producer: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}
        self._stack: list[str] = [""]
        self._leaf_depth = 0

    # -------------------------------------------------------------- bookkeeping

    def _source(self, t: torch.Tensor) -> int:
        entry = self._producer.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else -1

    def _add(
        self,
        name: str,
        module: str,
        args: Any,
        kind: str,
        out: Any,
        dropout: TracedDropout | None = None,
    ) -> None:
        tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
        node = Node(
            len(self.nodes),
            name,
            module,
            [self._source(t) for t in tensors],
            kind,
            tensors[0].dim() if tensors else -1,
            dropout,
        )
        self.nodes.append(node)
        for i in node.inputs:
            if i >= 0:
                self.nodes[i].consumers.append(node.index)
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._producer[id(leaf)] = (weakref.ref(leaf), node.index)

    # -------------------------------------------------------------- module hooks

    def pre_hook(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self._stack.append(self.names.get(module, "?"))
        if opaque(module):
            self._leaf_depth += 1

    def post_hook(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        name = self._stack.pop()
        if opaque(module):
            self._leaf_depth -= 1
            if self._leaf_depth == 0:  # a registered layer inside another records nothing
                self._add(
                    type(module).__name__,
                    name,
                    (args, kwargs),
                    "module",
                    out,
                    module_dropout(module),
                )

    # -------------------------------------------------------------- torch calls

    def dropout(self, call: DropoutCall) -> Any:
        out = call.run()
        if self._leaf_depth == 0:
            dropout = TracedDropout(call.rate, variant(call.spec.variant), call.active, True)
            name = getattr(call.func, "__name__", str(call.func))
            self._add(name, self._stack[-1], (call.args, call.kwargs), "function", out, dropout)
        return out

    def other(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        out = func(*args, **kwargs)
        if self._leaf_depth == 0 and func not in _IGNORED:
            name = getattr(func, "__name__", str(func))
            self._add(name, self._stack[-1], (args, kwargs), "function", out)
        return out


_IGNORED = {torch.Tensor.size, torch.Tensor.dim, torch.Tensor.__getattribute__}


def trace(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Graph:
    """Run ``model(*args, **kwargs)`` once and return what it did (no state is restored here)."""
    kwargs = kwargs or {}
    names = {m: n for n, m in model.named_modules()}
    recorder = _Recorder(names)
    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(recorder.post_hook, with_kwargs=True))
    # The model's inputs are nodes too, so that a skip taken straight from the input is seen.
    recorder._add("input", "", (), "input", (args, kwargs))
    try:
        with recorder:
            out = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    # The part its users read (DK002's "the model's output"), not an encoder's last hidden
    # state returned beside the logits.
    main = model_output(out, where="doctor", strict=False)
    outputs = [recorder._source(t) for t in tree_flatten(main)[0]
               if isinstance(t, torch.Tensor)]  # fmt: skip
    return Graph(recorder.nodes, [o for o in outputs if o >= 0])
