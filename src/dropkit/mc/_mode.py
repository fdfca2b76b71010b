"""``mc_mode``: the model at inference, every dropout on.

``model.train()`` is the usual way to keep dropout on at inference, and it is wrong: BatchNorm
then normalizes with the batch's statistics (and updates its running ones), and anything else
that checks ``self.training`` changes too. Inside :func:`mc_mode` the model stays in eval mode;
only dropout is switched on: dropout modules (torch's and dropkit's, and the dropout inside
``nn.LSTM``/``nn.GRU``/``nn.RNN`` and ``nn.MultiheadAttention``), the dropout functions of
``torch.nn.functional`` whatever ``training`` argument they are given (intercepted by a
``TorchFunctionMode``), and dropkit's own functions. On exit every flag is as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.overrides import TorchFunctionMode

from dropkit._registry import dropout_layers, function_spec, layer_rate
from dropkit.functional._validation import mc_depth

__all__ = ["MCState", "disable_mc", "dropout_modules", "enable_mc", "mc_active", "mc_mode"]


def mc_active() -> bool:
    """True inside :func:`mc_mode`: dropkit's dropout functions then ignore ``training=False``."""
    return mc_depth.get() > 0


def dropout_modules(model: nn.Module) -> list[tuple[str, nn.Module, float]]:
    """``(name, module, p)`` of every dropout-like module of ``model`` (see the registry)."""
    return list(dropout_layers(model))


def _force_training(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    spec = function_spec(func)
    if spec is None:
        return args, kwargs
    return spec.with_training(args, kwargs, True)


class _DropoutOn(TorchFunctionMode):
    """Calls of torch.nn.functional's dropouts run with ``training=True``."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        args, kwargs = _force_training(func, args, kwargs)
        return func(*args, **kwargs)


@dataclass
class MCState:
    """What :func:`enable_mc` changed, for :func:`disable_mc` to put back."""

    model: nn.Module
    training: dict[nn.Module, bool] = field(default_factory=dict)
    mode: TorchFunctionMode | None = None
    token: contextvars.Token[int] | None = None


def enable_mc(model: nn.Module, *, require_dropout: bool = True) -> MCState:
    """Put ``model`` in eval mode with every dropout on; return the state to restore.

    Args:
        model: the model.
        require_dropout: raise if the model has no dropout module with ``p > 0`` (pass False for
            models that only call dropout as a function).

    Raises:
        ValueError: no dropout module, or all dropout rates are 0.
    """
    found = dropout_modules(model)
    if require_dropout and not any(p > 0 for _, _, p in found):
        what = "all its dropout rates are 0" if found else "it has no dropout module"
        raise ValueError(
            f"mc_mode: Monte Carlo dropout needs dropout, but {what}; add dropout (or pass "
            "require_dropout=False if the model calls dropout as a function)"
        )
    state = MCState(model, {m: m.training for m in model.modules()})
    model.eval()
    for _, module, p in found:
        if p > 0:
            module.train(True)
            # Wrapped modules (EmbeddingDropout, WeightDrop) hold an inner module: eval it.
            for child in module.children():
                if layer_rate(child) is None:
                    child.eval()
    state.mode = _DropoutOn()
    state.mode.__enter__()  # type: ignore[no-untyped-call]
    state.token = mc_depth.set(mc_depth.get() + 1)
    return state


def disable_mc(state: MCState) -> None:
    """Undo :func:`enable_mc`: every module's training flag as it was, the interception off."""
    try:
        if state.token is not None:
            mc_depth.reset(state.token)
        if state.mode is not None:
            state.mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
    finally:
        for module, training in state.training.items():
            module.training = training


@contextlib.contextmanager
def mc_mode(model: nn.Module, *, require_dropout: bool = True) -> Iterator[nn.Module]:
    """Inside the block, ``model`` runs at inference with every dropout on.

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
    state = enable_mc(model, require_dropout=require_dropout)
    try:
        yield model
    finally:
        disable_mc(state)
