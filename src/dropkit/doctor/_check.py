"""``check``: run the rules on a model and collect a :class:`Report`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from dropkit.doctor._rules import Finding, make_rules

__all__ = ["Report", "check"]

_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Report:
    """The findings of :func:`check`, most severe first."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error and no warning (info findings are worth a look, not a failure)."""
        return not self.errors and not self.warnings

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_json(self) -> list[dict[str, str]]:
        return [f.to_json() for f in self.findings]


def check(
    model: nn.Module,
    example_input: object = None,
    *,
    rules: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> Report:
    """Find dropout mistakes in ``model``.

    Without ``example_input`` the rules that need only the module tree run (DK004, DK012,
    DK014); the rules that trace a forward pass are not written yet, so passing an example
    input is an error for now rather than a silent no-op.

    Args:
        model: the model to check; it is not modified.
        example_input: reserved for the tracing rules.
        rules: only these rule codes (default: all).
        ignore: rule codes to skip.

    Example:
        >>> import torch
        >>> from dropkit.doctor import check
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.7))
        >>> check(model).codes()
        ['DK004']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check: expected an nn.Module, got {type(model).__name__}")
    if example_input is not None:
        raise NotImplementedError(
            "check: the rules that run the model (DK002, DK003, DK005-DK011, DK013, DK015) are "
            "not implemented yet; call check(model) for the module-tree rules"
        )
    findings = [
        f
        for rule in make_rules(list(rules) if rules else None, ignore)
        for f in rule.check_tree(model)
    ]
    findings.sort(key=lambda f: (_ORDER[f.severity], f.code, f.where))
    return Report(findings)
