"""``mc_mode``: the model at inference with every stochastic op of train mode on, nothing else.

``model.train()`` is the usual way to keep dropout on at inference, and it is wrong: BatchNorm
then normalizes with the batch's statistics (and updates its running ones), and anything else
that checks ``self.training`` changes too. Inside :func:`mc_mode` the model stays in eval mode
and only the modules that issue a stochastic call in train mode are switched on: registered
dropout layers with ``p > 0`` at once, and, at the model's first call, every module whose own
forward issues dropout (functional ``F.dropout(x, p, self.training)``, attention that passes
``dropout_p`` to ``scaled_dot_product_attention``, MHA and RNN dropout...), found by running the
model (see :mod:`dropkit.mc._discover`). Nothing is patched: only ``training`` flags change, and
on exit every flag is as it was, whatever order blocks are left in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from dropkit._registry import dropout_layers
from dropkit.mc._discover import Discovery, discover, warn_about

__all__ = [
    "MCState",
    "disable_mc",
    "dropout_modules",
    "enable_mc",
    "mc_active",
    "mc_mode",
    "mc_state",
]

#: The active states, oldest first (one list for every model).
_ACTIVE: list[MCState] = []


def mc_active() -> bool:
    """True while some model is in Monte Carlo mode (inside :func:`mc_mode`)."""
    return bool(_ACTIVE)


def dropout_modules(model: nn.Module) -> list[tuple[str, nn.Module, float]]:
    """``(name, module, p)`` of every registered dropout layer of ``model`` (torch's, dropkit's,
    RNN and multi-head attention dropout, timm's and torchvision's stochastic depth...)."""
    return list(dropout_layers(model))


@dataclass(eq=False)
class MCState:
    """What :func:`enable_mc` changed, for :func:`disable_mc` to put back."""

    model: nn.Module
    require_dropout: bool = True
    training: dict[nn.Module, bool] = field(default_factory=dict)
    last_layer: bool = False
    discovery: Discovery | None = None
    hook: RemovableHandle | None = None
    _busy: bool = False

    def discover(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Discovery:
        """Find and switch on what must run (once per state), raising if nothing stochastic ran."""
        if self.discovery is None:
            self._busy = True
            try:
                found = discover(self.model, args, kwargs)
            finally:
                self._busy = False
            if self.require_dropout and not found.stochastic:
                raise ValueError(
                    f"{where}: nothing stochastic ran in a train-mode forward of "
                    f"{found.model_name}: it has no dropout with p > 0 (module or function), so "
                    "Monte Carlo dropout would return the same output every time; add dropout "
                    "or set a dropout rate above 0 in the model's configuration"
                )
            if found.unsafe or found.unchecked:
                warn_about(found, where)
            self.discovery = found
        found = self.discovery.only_last() if self.last_layer else self.discovery
        found.apply()
        return found

    def _first_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.discovery is None and not self._busy and self in _ACTIVE:
            self.discover(args, kwargs, "mc_mode")


def enable_mc(
    model: nn.Module, *, require_dropout: bool = True, last_layer: bool = False
) -> MCState:
    """Put ``model`` in eval mode with every stochastic op of train mode on; return the state.

    Registered dropout layers with ``p > 0`` are switched on at once; the modules whose own
    forward issues dropout are found and switched on at the first call of ``model`` itself
    (calling only a submodule inside the block leaves functional dropout off).

    Args:
        model: the model (a ``torch.compile``'d one too).
        require_dropout: raise at the first call if nothing stochastic runs in the model's
            train-mode forward.
        last_layer: switch on only the module whose stochastic call runs last in the forward
            (torch-uncertainty's ``mc_dropout(..., last_layer=True)``), at the first call of
            ``model``; every other dropout stays off. Where torch-uncertainty takes the last
            dropout layer declared, dropkit takes the last that runs (declaration order need not
            be call order), and counts functional dropout too.

    Raises:
        ValueError: (at the first call) nothing stochastic ran, naming the model.
    """
    state = mc_state(model, require_dropout=require_dropout, last_layer=last_layer)
    for _, module, p in [] if last_layer else dropout_layers(model):
        if p > 0:
            module.training = True
    return state


def mc_state(
    model: nn.Module, *, require_dropout: bool = True, last_layer: bool = False
) -> MCState:
    """:func:`enable_mc` before anything is switched on: ``model`` in eval mode, its flags
    saved, the state active. For a caller that calls :meth:`MCState.discover` before the
    model's first call, which switches on the modules found (the dropout layers included)."""
    state = MCState(model, require_dropout, {m: m.training for m in model.modules()}, last_layer)
    model.eval()
    state.hook = model.register_forward_pre_hook(state._first_call, with_kwargs=True)
    _ACTIVE.append(state)
    return state


def disable_mc(state: MCState) -> None:
    """Undo :func:`enable_mc`: every module's training flag as before, whatever the order.

    Leaving an older block while a newer one on the same model is still open hands the older
    block's saved flags to the newer one, which restores them when it is left.
    """
    if state.hook is not None:
        state.hook.remove()
        state.hook = None
    if state not in _ACTIVE:
        return
    index = _ACTIVE.index(state)
    _ACTIVE.pop(index)
    newer = [s for s in _ACTIVE[index:] if s.model is state.model]
    if newer:
        newer[0].training = state.training
        return
    for module, training in state.training.items():
        module.training = training


@contextlib.contextmanager
def mc_mode(
    model: nn.Module, *, require_dropout: bool = True, last_layer: bool = False
) -> Iterator[nn.Module]:
    """Inside the block, ``model`` runs at inference with every stochastic op of train mode on
    (with ``last_layer=True``, only the last one that runs; see :func:`enable_mc`).

    Example:
        >>> import torch
        >>> from dropkit.mc import mc_mode
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5)
        ... )
        >>> with mc_mode(model):
        ...     model[1].training, model[2].training
        (False, True)
        >>> model.training  # as before the block
        True
    """
    state = enable_mc(model, require_dropout=require_dropout, last_layer=last_layer)
    try:
        yield model
    finally:
        disable_mc(state)
