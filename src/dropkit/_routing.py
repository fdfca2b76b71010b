"""Route the dropout a model passes to torch's functions through dropkit's, while it runs.

:func:`dropkit.convert` with ``functional=True`` calls :func:`route_functional`: a forward
pre-hook on the model enters a ``TorchFunctionMode`` and a forward hook with ``always_call=True``
leaves it, so the mode is active only inside the model's forward (an exception included) and is
never left behind. While active, a registered ``torch.nn.functional`` dropout function whose
call draws a mask (``F.dropout(x, p, training=True)``, ``scaled_dot_product_attention`` with
``dropout_p > 0``) runs as the ``dropkit.functional`` function registered in
:mod:`dropkit._registry` to replace it, with the same arguments;
``F.multi_head_attention_forward``, whose dropout runs inside it, runs with the mode still
active, so that dropout is routed too (unless another mode is active below, as inside
``dropkit.mc.predict``, which must see that call whole).
Everything else (eval calls, ``p == 0``) goes to torch untouched.

The mode is entered only when some module of the model is in training mode: with every module
in eval mode nothing could be routed, and an active mode would turn off torch's fast paths of
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (they check for one), so eval
outputs stay torch's, bit for bit. Inside ``__torch_function__`` torch pops the mode, so the
dropkit function it calls is not routed again; modes below it (``dropkit.mc``'s) see that call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.overrides import has_torch_function, redispatch_function
from torch.utils.hooks import RemovableHandle

from dropkit._intercept import DropoutCall, InterceptMode
from dropkit._registry import FunctionSpec, replacement, variant

__all__ = ["FunctionalRouting", "route_functional"]

_TORCH_F = "torch.nn.functional."


def _fits(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether dropkit's function takes this call's input: channel dropout takes the ranks its
    variant drops whole channels of (torch's also takes other ranks, with a warning, or as
    unbatched input; those calls stay torch's)."""
    ranks = variant(spec.variant).channel_ranks
    if ranks is None:
        return True
    x = args[0] if args else kwargs.get("input")
    return isinstance(x, torch.Tensor) and x.dim() in ranks


class _Mode(InterceptMode):
    def __init__(self, routed: Counter[str]) -> None:
        super().__init__()
        self.routed = routed

    def dropout(self, call: DropoutCall) -> Any:
        spec = call.spec
        if not call.active:
            return call.run()
        target = replacement(call.func)
        if target is not None and _fits(spec, call.args, call.kwargs):
            self.routed[spec.name] += 1
            # torch's alpha variants default to training=False; the call is active, so say True
            args, kwargs = spec.with_training(call.args, call.kwargs, True)
            return target(*args, **kwargs)
        if not spec.name.startswith(_TORCH_F):
            return call.run()
        # multi_head_attention_forward: its dropout (F.dropout on the weights, or SDPA's
        # dropout_p) is called inside it, so run its body with the mode active. Unless another
        # mode sits below (dropkit.mc's): it must see this call whole, as it would without us
        # (mc's shared prefix cannot start inside it), so the call goes to it and stays torch's.
        if has_torch_function(tuple(a for a in call.args if isinstance(a, torch.Tensor))):
            return call.run()
        with self:
            return redispatch_function(call.func, call.types, call.args, call.kwargs)  # type: ignore[no-untyped-call]


class FunctionalRouting:
    """The hooks :func:`route_functional` installs: they enter and leave the routing mode around
    the model's forward. ``routed`` counts the calls routed so far, by torch function."""

    def __init__(self) -> None:
        self.routed: Counter[str] = Counter()
        self._modes: list[_Mode | None] = []  # one per forward in progress (recursive calls)

    def enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: enter the mode if some module of ``module`` is training."""
        mode = None
        if any(m.training for m in module.modules()):
            mode = _Mode(self.routed)
            mode.__enter__()  # type: ignore[no-untyped-call]
        self._modes.append(mode)

    def leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Forward hook, always called (on an exception in forward too): leave the mode."""
        if not self._modes:  # a global pre-hook raised before ours ran
            return
        mode = self._modes.pop()
        if mode is not None:
            mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]

    def __getstate__(self) -> dict[str, Any]:
        # A copy (deepcopy, pickle) taken mid-forward must not carry the active modes.
        return {"routed": Counter(self.routed), "_modes": []}


def route_functional(
    model: nn.Module,
) -> tuple[FunctionalRouting, tuple[RemovableHandle, RemovableHandle]]:
    """Install the routing hooks on ``model``; return them and their handles (``remove()`` on
    both undoes it)."""
    routing = FunctionalRouting()
    pre = model.register_forward_pre_hook(routing.enter, prepend=True)
    post = model.register_forward_hook(routing.leave, always_call=True)
    return routing, (pre, post)
