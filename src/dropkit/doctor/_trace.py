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
import torch.nn.functional as torch_F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from dropkit._torch_dropouts import TORCH_DROPOUTS

__all__ = ["Graph", "Node", "trace"]

# Dropout functions -> (position of p, position of training, the variant); torch's from the
# shared table, dropkit's added below.
DROPOUT_FUNCTIONS: dict[Callable[..., Any], tuple[int, int, str]] = {
    func: (sig.p_at, sig.training_at, sig.variant) for func, sig in TORCH_DROPOUTS.items()
}
_DEFAULT_TRAINING = {f: sig.default_training for f, sig in TORCH_DROPOUTS.items()}


def _add_dropkit_functions() -> None:
    """dropkit's functions dispatch through ``__torch_function__`` like torch's: record them."""
    from dropkit import functional as dk_F

    DROPOUT_FUNCTIONS.update(
        {
            dk_F.dropout: (1, 2, "element"),
            dk_F.dropout1d: (1, 2, "channel1d"),
            dk_F.dropout2d: (1, 2, "channel2d"),
            dk_F.dropout3d: (1, 2, "channel3d"),
            dk_F.alpha_dropout: (1, 2, "alpha"),
            dk_F.feature_alpha_dropout: (1, 2, "feature_alpha"),
            dk_F.gaussian_dropout: (1, 2, "gaussian"),
            dk_F.drop_path: (1, 2, "path"),
            dk_F.drop_block2d: (1, 2, "block"),
            dk_F.drop_block3d: (1, 2, "block"),
            dk_F.locked_dropout: (1, 2, "locked"),
            dk_F.bias_dropout: (2, 3, "fused"),
            dk_F.bias_dropout_add: (3, 4, "fused"),
        }
    )


_add_dropkit_functions()


@dataclass
class Node:
    """One call: a leaf module or a torch function."""

    index: int
    name: str  # the module's class name, or the function's name
    module: str  # qualified name of the module (leaf) or of the module whose forward called it
    inputs: list[int]  # producing node of each tensor input (-1: the model input or a constant)
    kind: str  # "module", "function", or "input" (the model's inputs, node 0)
    rank: int  # dims of the first tensor input (-1 if none)
    dropout: dict[str, Any] | None = None  # p, variant, active, functional
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


def dropout_layers() -> list[tuple[type[nn.Module], str]]:
    """torch's and dropkit's dropout layers with their variant, most specific first."""
    from dropkit import nn as dk_nn

    return [
        (nn.Dropout1d, "channel1d"),
        (nn.Dropout2d, "channel2d"),
        (nn.Dropout3d, "channel3d"),
        (nn.FeatureAlphaDropout, "feature_alpha"),
        (nn.AlphaDropout, "alpha"),
        (nn.Dropout, "element"),
        (dk_nn.Dropout1d, "channel1d"),
        (dk_nn.Dropout2d, "channel2d"),
        (dk_nn.Dropout3d, "channel3d"),
        (dk_nn.DropPath, "path"),
        (dk_nn.DropBlock2d, "block"),
        (dk_nn.DropBlock3d, "block"),
        (dk_nn.Dropout, "element"),
    ]


def _module_dropout(module: nn.Module) -> dict[str, Any] | None:
    from dropkit.nn._dropout import _DropoutBase

    for cls, variant in dropout_layers():
        if type(module) is cls or (isinstance(module, cls) and cls is not nn.Dropout):
            if variant == "element" and getattr(module, "noise_shape", None) is not None:
                variant = "shaped"
            return {
                "p": float(module.p),  # type: ignore[arg-type]
                "variant": variant,
                "active": module.training,
                "functional": False,
            }
    if isinstance(module, torch.nn.modules.dropout._DropoutNd | _DropoutBase):
        return {
            "p": float(module.p),
            "variant": "other",
            "active": module.training,
            "functional": False,
        }
    return None


class _Recorder(TorchFunctionMode):
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
        dropout: dict[str, Any] | None = None,
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

    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self._stack.append(self.names.get(module, "?"))
        if not any(True for _ in module.children()):
            self._leaf_depth += 1

    def post_hook(self, module: nn.Module, args: Any, out: Any) -> None:
        name = self._stack.pop()
        if not any(True for _ in module.children()):
            self._leaf_depth -= 1
            self._add(type(module).__name__, name, args, "module", out, _module_dropout(module))

    # -------------------------------------------------------------- torch calls

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._leaf_depth == 0 and func not in _IGNORED:
            dropout = None
            if func in DROPOUT_FUNCTIONS:
                p_at, training_at, variant = DROPOUT_FUNCTIONS[func]
                p = args[p_at] if len(args) > p_at else kwargs.get("p", 0.5)
                default = _DEFAULT_TRAINING.get(func, True)  # dropkit's: True
                training = (
                    args[training_at]
                    if len(args) > training_at
                    else kwargs.get("training", default)
                )
                dropout = {
                    "p": float(p),
                    "variant": variant,
                    "active": bool(training),
                    "functional": True,
                }
            elif func is torch_F.scaled_dot_product_attention:
                p = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
                dropout = {
                    "p": float(p),
                    "variant": "attention",
                    "active": float(p) > 0,
                    "functional": True,
                }
            name = getattr(func, "__name__", str(func))
            self._add(name, self._stack[-1], (args, kwargs), "function", out, dropout)
        return out


_IGNORED = {torch.Tensor.size, torch.Tensor.dim, torch.Tensor.__getattribute__}


def trace(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Graph:
    """Run ``model(*args, **kwargs)`` once and return what it did (no state is restored here)."""
    kwargs = kwargs or {}
    names = {m: n for n, m in model.named_modules()}
    recorder = _Recorder(names)
    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(recorder.pre_hook))
        handles.append(module.register_forward_hook(recorder.post_hook))
    # The model's inputs are nodes too, so that a skip taken straight from the input is seen.
    recorder._add("input", "", (), "input", (args, kwargs))
    try:
        with recorder:
            out = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    outputs = [recorder._source(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return Graph(recorder.nodes, [o for o in outputs if o >= 0])
