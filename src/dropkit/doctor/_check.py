"""``check``: run the rules on a model and collect a :class:`Report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from dropkit._state import state_kept
from dropkit.doctor._flow import FlowRule, Traces
from dropkit.doctor._rules import Finding, make_rules
from dropkit.doctor._trace import trace

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

    Without ``example_input`` only the rules that need the module tree run (DK004, DK012,
    DK014). With it, the model also runs twice under ``torch.no_grad`` (in training and in eval
    mode) and the rules that read the recorded data flow run too; afterwards the training
    flags, buffers (BatchNorm statistics included) and torch's RNG state are as they were.
    The rules read the output the model's users read: ``logits`` of a mapping (a Hugging Face
    ``ModelOutput``), else its first value, or the first element of a tuple. A mistake that
    recurs in every module of one class (each block of a DenseNet) is one finding naming the
    other places.

    Args:
        model: the model to check; it is not modified.
        example_input: an input the model accepts: a tensor, a tuple of positional inputs, or a
            dict of keyword inputs (``{"input_ids": ids, "attention_mask": mask}``).
        rules: only these rule codes (default: all).
        ignore: rule codes to skip.

    Example:
        >>> import torch
        >>> from dropkit.doctor import check
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.7))
        >>> check(model).codes()
        ['DK004']
        >>> check(model, torch.randn(2, 4)).codes()  # traced: the dropout is also on the output
        ['DK002', 'DK004']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check: expected an nn.Module, got {type(model).__name__}")
    selected = make_rules(list(rules) if rules else None, ignore)
    findings = [f for rule in selected for f in rule.check_tree(model)]
    if example_input is not None:
        args, kwargs = split_inputs(example_input)
        traces = _run_twice(model, args, kwargs)
        findings += [
            f for rule in selected if isinstance(rule, FlowRule) for f in rule.check_flow(traces)
        ]
    unique = _group(list(dict.fromkeys(findings)), model)
    unique.sort(key=lambda f: (_ORDER[f.severity], f.code, f.where))
    return Report(unique)


def _group(findings: list[Finding], model: nn.Module) -> list[Finding]:
    """One finding per rule and class of module: a mistake repeated in every block of a model
    (DenseNet's dropout in each dense layer) is one finding that names how many places have it."""
    modules = dict(model.named_modules())
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        owner = modules.get(f.where)
        kind = type(owner).__qualname__ if owner is not None else f"?{f.where}"
        groups.setdefault((f.code, kind), []).append(f)
    out = []
    for same in groups.values():
        first = same[0]
        if len(same) > 1:
            others = [f.where or "(the model)" for f in same[1:]]
            listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            owner = modules.get(first.where)
            message = (
                f"{first.message}; the same in {len(others)} more {type(owner).__name__} module"
                f"{'s' if len(others) > 1 else ''} ({listed})"
            )
            first = replace(first, message=message)
        out.append(first)
    return out


def split_inputs(example_input: object) -> tuple[tuple[object, ...], dict[str, object]]:
    """Positional and keyword inputs: a mapping is keywords, a tuple is positional inputs, anything
    else is the one positional input."""
    if isinstance(example_input, Mapping):
        if not all(isinstance(k, str) for k in example_input):
            raise TypeError("check: a dict of example inputs needs str keys (the keyword names)")
        return (), dict(example_input)
    if isinstance(example_input, tuple):
        return example_input, {}
    return (example_input,), {}


def _run_twice(model: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> Traces:
    """Trace one forward in training and one in eval mode, then put everything back: training
    flags, buffers (BatchNorm statistics move in training mode) and torch's RNG state."""
    cpu_rng = torch.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda_rng = torch.cuda.get_rng_state_all() if cuda else None
    try:
        with state_kept(model), torch.no_grad():
            model.train()
            train_graph = trace(model, args, kwargs)
            model.eval()
            eval_graph = trace(model, args, kwargs)
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return Traces(train_graph, eval_graph)
