"""Findings, the rule registry, and the rules that need only the module tree.

A rule is a small class with a stable code, a severity and a hint; it looks at the model and
yields :class:`Finding` objects. Rules are registered in one place (:data:`RULES`) by the
``@register`` decorator. Module-tree rules implement :meth:`Rule.check_tree` (here); the rules
that read a recorded forward pass implement ``check_flow`` (:mod:`dropkit.doctor._flow`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

from torch import nn

from dropkit._registry import dropout_layers, layer_rate, layer_spec, variant

__all__ = [
    "RULES",
    "RUNTIME_RULES",
    "Finding",
    "Rule",
    "Severity",
    "make_rules",
    "register",
    "rule_codes",
    "rule_doc",
]

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One mistake: a stable code, how bad it is, where, what is wrong, what to write instead."""

    code: str
    severity: Severity
    where: str  # a qualified module name, as in named_modules() ("" is the model itself)
    message: str
    hint: str
    #: the rule's page: what it finds, why it matters, a model that has it and the fix
    doc: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class Rule:
    """Base of the rules: subclasses set ``code``, ``severity``, ``title`` and ``hint``."""

    code: ClassVar[str]
    severity: ClassVar[Severity]
    title: ClassVar[str]
    hint: ClassVar[str]

    def check_tree(self, model: nn.Module) -> Iterator[Finding]:
        """Findings from the module tree alone (no example input)."""
        return iter(())

    def finding(self, where: str, message: str) -> Finding:
        return Finding(self.code, self.severity, where, message, self.hint, rule_doc(self.code))


RULES: dict[str, type[Rule]] = {}

#: The run-time rules of :func:`dropkit.doctor.guard` (no class: they warn while the model runs).
RUNTIME_RULES = ("DK001", "DK015")


def rule_doc(code: str) -> str:
    """The page of rule ``code`` in the documentation, as a path in the repository (the site
    serves it at ``rules/<code>/``).

    Example:
        >>> from dropkit.doctor._rules import rule_doc
        >>> rule_doc("DK004")
        'docs/rules/DK004.md'
    """
    return f"docs/rules/{code}.md"


def register(rule: type[Rule]) -> type[Rule]:
    """Add a rule to :data:`RULES` under its code (codes are unique and never reused)."""
    if rule.code in RULES:
        raise ValueError(f"doctor: rule code {rule.code} is registered twice")
    RULES[rule.code] = rule
    return rule


def _element_or_channel(module: nn.Module) -> float | None:
    """The rate of an element or channel dropout layer (torch's or dropkit's), else None."""
    spec = layer_spec(module)
    if spec is None or not variant(spec.variant).element_or_channel:
        return None
    return layer_rate(module)


def _dropout_is_the_point(module: nn.Module) -> bool:
    """A layer that only drops out, not an RNN or attention layer with a dropout setting."""
    spec = layer_spec(module)
    return spec is not None and variant(spec.variant).site not in ("rnn", "attention")


@register
class HighRate(Rule):
    code = "DK004"
    severity: ClassVar[Severity] = "warning"
    title = "rate above 0.5 for element or channel dropout"
    hint = (
        "keep element and channel dropout at 0.5 or below (0.1-0.3 is usual for hidden "
        "layers); compare rates with `dropkit compare`"
    )

    def check_tree(self, model: nn.Module) -> Iterator[Finding]:
        for name, module in model.named_modules():
            p = _element_or_channel(module)
            if p is not None and p > 0.5:
                yield self.finding(
                    name,
                    f"{type(module).__name__} drops {p:g} of its input, which risks underfitting",
                )


@register
class SingleLayerRnnDropout(Rule):
    code = "DK012"
    severity: ClassVar[Severity] = "warning"
    title = "RNN dropout with num_layers=1 (no effect)"
    hint = (
        "the dropout argument of nn.LSTM/GRU/RNN only acts between stacked layers: use "
        "num_layers >= 2, or apply dropkit.nn.LockedDropout to the inputs or outputs"
    )

    def check_tree(self, model: nn.Module) -> Iterator[Finding]:
        for name, module in model.named_modules():
            if isinstance(module, nn.RNNBase) and module.num_layers == 1 and module.dropout > 0:
                yield self.finding(
                    name,
                    f"{type(module).__name__}(num_layers=1, dropout={module.dropout:g}) never "
                    "applies its dropout",
                )


@register
class AllRatesZero(Rule):
    code = "DK014"
    severity: ClassVar[Severity] = "info"
    title = "every dropout layer has p = 0"
    hint = (
        "set a rate (e.g. 0.1) or remove the layers; with every rate at 0 the model has no "
        "dropout regularization and Monte Carlo dropout is impossible"
    )

    def check_tree(self, model: nn.Module) -> Iterator[Finding]:
        # An RNN or attention layer at its default dropout=0 is no dropout layer of the model's.
        found = [
            (name, p)
            for name, module, p in dropout_layers(model)
            if p > 0 or _dropout_is_the_point(module)
        ]
        if found and all(p == 0 for _, p in found):
            names = ", ".join(name or "(the model)" for name, _ in found[:3])
            more = ", ..." if len(found) > 3 else ""
            yield self.finding("", f"all {len(found)} dropout layers ({names}{more}) have p = 0")


def rule_codes() -> list[str]:
    return sorted(RULES)


def make_rules(codes: Sequence[str] | None, ignore: Sequence[str]) -> list[Rule]:
    """Instances of the selected rules; unknown codes are an error naming the known ones."""
    unknown = sorted((set(codes or []) | set(ignore)) - set(RULES))
    if unknown:
        raise ValueError(f"doctor: unknown rule code(s) {unknown}; known: {rule_codes()}")
    selected = codes if codes is not None else rule_codes()
    return [RULES[code]() for code in selected if code not in set(ignore)]
