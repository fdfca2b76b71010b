"""Run-time checks of how a model is used: DK001 and DK015.

Both mistakes are only visible while the model runs: a forward pass under ``torch.no_grad()``
(inference) with dropout still in training mode (the forgotten ``model.eval()``, DK001), and a
no-grad forward with BatchNorm in training mode (the ``model.train()`` recipe for MC dropout,
which normalizes with batch statistics and overwrites the running ones, DK015). :func:`guard`
installs a forward pre-hook that warns once per model, with the dedicated category
:class:`DropoutWarning` so that ``warnings.simplefilter("error", DropoutWarning)`` turns the
warnings into errors.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from dropkit._registry import dropout_layers
from dropkit.doctor._rules import rule_doc

__all__ = ["DropoutWarning", "Guard", "Mistake", "guard"]


class DropoutWarning(UserWarning):
    """A dropout mistake found while the model runs."""


@dataclass
class Guard:
    """The installed check; :meth:`remove` takes it out again."""

    model: nn.Module
    dropouts: list[tuple[str, nn.Module]]
    norms: list[tuple[str, nn.Module]]
    warned: set[str] = field(default_factory=set)
    handle: RemovableHandle | None = None

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @classmethod
    def of(cls, model: nn.Module) -> Guard:
        """The check of ``model``, not installed: :meth:`mistakes` asks it at any moment."""
        norms: list[tuple[str, nn.Module]] = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        dropouts = [(n, m) for n, m, p in dropout_layers(model) if p > 0]
        return cls(model, dropouts, norms)

    def mistakes(self, during: str = "under torch.no_grad") -> list[Mistake]:
        """DK001 and DK015 as the model's modes stand now, for an inference run ``during``
        (words that follow "ran": "under torch.no_grad", "in a validation step"); none while
        Monte Carlo mode is on."""
        if _mc_active():
            return []
        name = type(self.model).__name__
        found = []
        active = [n or "(the model)" for n, m in self.dropouts if m.training]
        if active:
            found.append(
                Mistake(
                    "DK001",
                    f"DK001: {name} ran {during} with dropout in training mode "
                    f"({', '.join(active[:3])}{', ...' if len(active) > 3 else ''}), so its "
                    "predictions are random; call model.eval() before inference (or use "
                    f"dropkit.mc.mc_mode for Monte Carlo dropout); see {rule_doc('DK001')}",
                    tuple(active),
                )
            )
        training_norms = [n or "(the model)" for n, m in self.norms if m.training]
        if training_norms:
            found.append(
                Mistake(
                    "DK015",
                    f"DK015: {name} ran {during} with BatchNorm in training mode "
                    f"({', '.join(training_norms[:3])}), which normalizes with batch statistics "
                    "and overwrites the running ones; for Monte Carlo dropout use "
                    f"dropkit.mc.mc_mode instead of model.train(); see {rule_doc('DK015')}",
                    tuple(training_norms),
                )
            )
        return found

    def _check(self, module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            return
        for mistake in self.mistakes():
            if mistake.code not in self.warned:
                self.warned.add(mistake.code)
                warnings.warn(mistake.message, DropoutWarning, stacklevel=4)


@dataclass(frozen=True)
class Mistake:
    """One run-time mistake: its code, the message, the modules in the wrong mode."""

    code: str
    message: str
    modules: tuple[str, ...]


def _mc_active() -> bool:
    """Whether Monte Carlo mode is on, read from dropkit.mc only if it was imported: the doctor
    does not import mc (if nobody imported it, no model is in Monte Carlo mode)."""
    mode = sys.modules.get("dropkit.mc._mode")
    active = getattr(mode, "mc_active", None)
    return bool(active()) if callable(active) else False


def guard(model: nn.Module) -> Guard:
    """Warn (once per model and code) about DK001 and DK015 while ``model`` runs.

    Returns a :class:`Guard`; call ``.remove()`` or use it as a context manager to take it out.

    Example:
        >>> import torch, warnings
        >>> from dropkit.doctor import DropoutWarning, guard
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
        >>> with guard(model), warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     with torch.no_grad():
        ...         _ = model(torch.ones(1, 3))  # still in training mode
        >>> [str(w.message)[:5] for w in caught if w.category is DropoutWarning]
        ['DK001']
    """
    installed = Guard.of(model)
    installed.handle = model.register_forward_pre_hook(installed._check)
    return installed
