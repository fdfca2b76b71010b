"""``check``: run the rules on a model and collect a :class:`Report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

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

    Args:
        model: the model to check; it is not modified.
        example_input: an input (or a tuple of positional inputs) the model accepts.
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
    selected = make_rules(list(rules) if rules else None, ignore)
    findings = [f for rule in selected for f in rule.check_tree(model)]
    if example_input is not None:
        args, kwargs = split_inputs(example_input)
        traces = _run_twice(model, args, kwargs)
        findings += [
            f for rule in selected if isinstance(rule, FlowRule) for f in rule.check_flow(traces)
        ]
    unique = list(dict.fromkeys(findings))
    unique.sort(key=lambda f: (_ORDER[f.severity], f.code, f.where))
    return Report(unique)


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
    flags = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda_rng = torch.cuda.get_rng_state_all() if cuda else None
    try:
        with torch.no_grad():
            model.train()
            train_graph = trace(model, args, kwargs)
            model.eval()
            eval_graph = trace(model, args, kwargs)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in flags.items():
            module.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return Traces(train_graph, eval_graph)
