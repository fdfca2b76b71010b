"""The dropout doctor: finds dropout mistakes in real models.

- :func:`check`: the rules on a model, as a :class:`Report` of :class:`Finding` objects. The
  module-tree rules (DK004, DK012, DK014) always run; with an example input (a tensor, a tuple of
  positional inputs or a dict of keyword inputs) the model also runs once in training and once in
  eval mode, and the tracing rules read what it did (DK002, DK003, DK005-DK011, DK013, DK016,
  DK017).
- :func:`guard`: the run-time checks DK001 (inference with dropout in training mode) and DK015
  (a no-grad forward with BatchNorm in training mode), as :class:`DropoutWarning` warnings;
  ``Guard.of(model).mistakes()`` asks the same at any moment (the trainer callbacks do).

Every finding and warning names its rule's page (``docs/rules/DK004.md``: what the rule finds,
why it matters, a model that has the mistake and the fix).

What counts as dropout (torch's, dropkit's, timm's and torchvision's layers and functions) comes
from :mod:`dropkit._registry`.
"""

from dropkit.doctor._check import Report, check
from dropkit.doctor._guard import DropoutWarning, Guard, Mistake, guard
from dropkit.doctor._load import LoadError, load_inputs, load_model
from dropkit.doctor._rules import RULES, Finding, Rule

__all__ = [
    "RULES",
    "DropoutWarning",
    "Finding",
    "Guard",
    "LoadError",
    "Mistake",
    "Report",
    "Rule",
    "check",
    "guard",
    "load_inputs",
    "load_model",
]
