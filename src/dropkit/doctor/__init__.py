"""The dropout doctor: finds dropout mistakes in real models.

- :func:`check`: the rules that need only the module tree (DK004, DK012, DK014), as a
  :class:`Report` of :class:`Finding` objects; the tracing rules are still to come.
- :func:`guard`: the run-time checks DK001 (inference with dropout in training mode) and DK015
  (a no-grad forward with BatchNorm in training mode), as :class:`DropoutWarning` warnings.
"""

from dropkit.doctor._check import Report, check
from dropkit.doctor._guard import DropoutWarning, Guard, guard
from dropkit.doctor._rules import RULES, Finding, Rule

__all__ = ["RULES", "DropoutWarning", "Finding", "Guard", "Report", "Rule", "check", "guard"]
