"""The rules that need the model to run: they read the graphs recorded by :mod:`._trace`.

Each rule gets the graph of one forward pass in training mode and one in eval mode (both under
``torch.no_grad``) and yields findings; they are registered with the module-tree rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from dropkit._registry import OpFamily, commutes_with_dropout, op_family
from dropkit.doctor._rules import Finding, Rule, Severity, register
from dropkit.doctor._trace import Graph, Node

__all__ = ["Traces"]


@dataclass(frozen=True)
class Traces:
    train: Graph
    eval: Graph


class FlowRule(Rule):
    """A rule over the recorded forward passes."""

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        return iter(())


def _active(node: Node) -> bool:
    return node.dropout is not None and node.dropout.p > 0


def _plain_active(node: Node) -> bool:
    """An active bare dropout of one tensor (not inside attention, an RNN or a fused op)."""
    return node.dropout is not None and node.dropout.p > 0 and node.dropout.plain


def _in_family(node: Node, *families: OpFamily) -> bool:
    """Whether the op ``node`` recorded is in one of ``families`` (see the registry)."""
    return op_family(node.name) in families


def _downstream(graph: Graph, start: Node, through: tuple[OpFamily, ...]) -> Iterator[Node]:
    """Nodes reached from ``start`` through ops of the ``through`` families (those included)."""
    stack, seen = list(start.consumers), set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        node = graph.nodes[i]
        yield node
        if _in_family(node, *through):
            stack.extend(node.consumers)


@register
class DropoutOnOutput(FlowRule):
    code = "DK002"
    severity: ClassVar[Severity] = "error"
    title = "dropout applied to the model's output"
    hint = "remove the dropout after the last layer; put it before the output layer instead"

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        outputs = set(graph.outputs)  # the output its users read (the logits of a ModelOutput)
        for node in graph.dropouts():
            if not _plain_active(node):
                continue
            after = _downstream(graph, node, ("shape",))
            chain = [node, *(n for n in after if _in_family(n, "shape"))]
            if not {n.index for n in chain} & outputs:
                continue
            # A tensor that the model also computes with (an encoder's last hidden state, which
            # feeds the decoder's cross-attention) is not a dropout on the output.
            used = any(not _in_family(graph.nodes[c], "shape") for n in chain for c in n.consumers)
            if not used:
                yield self.finding(node.module, f"{node.name} is applied to the model's output")


@register
class ElementDropoutOnConvMaps(FlowRule):
    code = "DK003"
    severity: ClassVar[Severity] = "warning"
    title = "element-wise dropout on convolutional feature maps"
    hint = (
        "neighbouring pixels are correlated, so dropping single ones barely regularizes: use "
        "nn.Dropout2d/3d (whole channels) or dropkit.nn.DropBlock2d"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        for node in graph.dropouts():
            d = node.dropout
            if d is None or d.p <= 0 or not d.element_wise or node.rank not in (4, 5):
                continue
            source = node.inputs[0] if node.inputs else -1
            between: tuple[OpFamily, ...] = ("activation", "batch_norm", "pool")
            while source >= 0 and _in_family(graph.nodes[source], *between):
                source = graph.nodes[source].inputs[0] if graph.nodes[source].inputs else -1
            if source >= 0 and _in_family(graph.nodes[source], "conv"):
                yield self.finding(
                    node.module,
                    f"{node.name} drops single elements of a {node.rank}D convolutional "
                    "feature map",
                )


@register
class DropoutBeforeBatchNorm(FlowRule):
    code = "DK005"
    severity: ClassVar[Severity] = "warning"
    title = "dropout feeding a BatchNorm"
    hint = (
        "dropout before BatchNorm shifts the variance between training and inference (Li et "
        "al. 2019, arXiv:1801.05134): move the dropout after the BatchNorm or after the block"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        for node in graph.dropouts():
            if not _plain_active(node):
                continue
            through: tuple[OpFamily, ...] = ("shape", "activation", "concat")
            if any(_in_family(n, "batch_norm") for n in _downstream(graph, node, through)):
                yield self.finding(node.module, f"{node.name}'s output reaches a BatchNorm")


def _residual_adds(graph: Graph) -> Iterator[tuple[Node, int, int]]:
    """Additions ``skip + branch`` where ``skip`` is an ancestor of ``branch``."""
    for node in graph.nodes:
        if _in_family(node, "add") and len(node.inputs) == 2 and min(node.inputs) >= 0:
            a, b = node.inputs
            if a in graph.ancestors(b):
                yield node, a, b
            elif b in graph.ancestors(a):
                yield node, b, a


@register
class DropoutOnSkip(FlowRule):
    code = "DK006"
    severity: ClassVar[Severity] = "warning"
    title = "dropout on the identity path of a residual connection"
    hint = (
        "drop the residual branch, not the identity: x + dropout(f(x)), or "
        "x + dropkit.nn.DropPath(p)(f(x)) for stochastic depth"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        for add in graph.nodes:
            if not _in_family(add, "add") or len(add.inputs) != 2 or min(add.inputs) < 0:
                continue
            for mine, other in (add.inputs, add.inputs[::-1]):
                node = graph.nodes[mine]
                if _plain_active(node) and node.inputs and node.inputs[0] >= 0:
                    # The skip is dropped when the other operand reaches the dropout's input
                    # without going through the dropout (x_d + f(x)), not when it only uses the
                    # dropout's output (h = dropout(x); h + f(h): the dropout precedes both).
                    source = node.inputs[0]
                    around = graph.ancestors(other, blocked=frozenset({mine}))
                    if source == other or source in around:
                        yield self.finding(
                            node.module, f"{node.name} drops the identity path of a residual add"
                        )


@register
class HighRateInResidualBranch(FlowRule):
    code = "DK007"
    severity: ClassVar[Severity] = "info"
    title = "dropout with p > 0.2 inside a residual branch"
    hint = (
        "residual branches usually take light dropout (0.1) or DropPath; heavy dropout there "
        "can slow training"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        flagged: set[int] = set()
        for _, skip, branch in _residual_adds(graph):
            inside = (graph.ancestors(branch) | {branch}) - graph.ancestors(skip) - {skip}
            for i in inside:
                node = graph.nodes[i]
                d = node.dropout
                # DropPath is what residual branches are meant to take, at any rate
                if d and d.p > 0.2 and d.plain and not d.per_sample and i not in flagged:
                    flagged.add(i)
                    yield self.finding(
                        node.module, f"{node.name} drops {d.p:g} inside a residual branch"
                    )


@register
class FunctionalOnInEval(FlowRule):
    code = "DK008"
    severity: ClassVar[Severity] = "error"
    title = "a dropout function call that stays on in eval mode"
    hint = (
        "pass training=self.training (e.g. F.dropout(x, p, training=self.training)) or use "
        "nn.Dropout"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        for node in traces.eval.dropouts():
            d = node.dropout
            if d and d.functional and not d.attention and d.p > 0 and d.active:
                yield self.finding(
                    node.module, f"{node.name} is active while the model is in eval mode"
                )


@register
class FunctionalOffInTraining(FlowRule):
    code = "DK009"
    severity: ClassVar[Severity] = "error"
    title = "a dropout function call that is off in training mode"
    hint = (
        "pass training=self.training; torch's alpha_dropout and feature_alpha_dropout default to "
        "training=False (dropkit's functions default to True)"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        for node in traces.train.dropouts():
            d = node.dropout
            if d and d.functional and not d.attention and d.p > 0 and not d.active:
                yield self.finding(node.module, f"{node.name} is inactive while the model trains")


@register
class ChannelDropoutWrongRank(FlowRule):
    code = "DK010"
    severity: ClassVar[Severity] = "error"
    title = "channel dropout given an input of the wrong rank"
    hint = "use Dropout1d for (N, C, L), Dropout2d for (N, C, H, W), Dropout3d for (N, C, D, H, W)"

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        for node in traces.train.dropouts():
            ranks = node.dropout.channel_ranks if node.dropout else None
            if ranks and node.rank not in ranks:
                yield self.finding(
                    node.module,
                    f"{node.name} got a {node.rank}D input; torch then drops something else "
                    "than whole channels",
                )


@register
class DropoutBeforeSaturatingActivation(FlowRule):
    code = "DK011"
    severity: ClassVar[Severity] = "info"
    title = "dropout directly before an activation that does not commute with it"
    hint = (
        "apply the activation first, then dropout (for ReLU-like activations the order does "
        "not matter)"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        for node in graph.dropouts():
            if not _plain_active(node):
                continue
            for nxt in _downstream(graph, node, ("shape",)):
                if _in_family(nxt, "activation") and not commutes_with_dropout(nxt.name):
                    yield self.finding(node.module, f"{node.name} feeds {nxt.name} directly")
                    break


@register
class AttentionDropoutInEval(FlowRule):
    code = "DK013"
    severity: ClassVar[Severity] = "error"
    title = "attention dropout active in eval mode"
    hint = "pass dropout_p=self.p if self.training else 0.0 to scaled_dot_product_attention"

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        for node in traces.eval.dropouts():
            d = node.dropout
            if d and d.attention and d.p > 0 and d.active:
                yield self.finding(
                    node.module,
                    f"{node.name} drops attention weights (dropout_p={d.p:g}) in eval mode",
                )


@register
class DropoutTwiceInARow(FlowRule):
    code = "DK016"
    severity: ClassVar[Severity] = "warning"
    title = "the same dropout applied twice in a row"
    hint = (
        "keep one of the two: two dropouts of rates p and q in a row drop 1-(1-p)(1-q) of the "
        "values, more than either rate says"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        graph = traces.train
        for node in graph.dropouts():
            d = node.dropout
            if d is None or not _active(node) or not d.element_or_channel:
                continue
            source = node.inputs[0] if node.inputs else -1
            while source >= 0 and _in_family(graph.nodes[source], "shape"):
                inputs = graph.nodes[source].inputs
                source = inputs[0] if inputs else -1
            before = graph.nodes[source] if source >= 0 else None
            # The same kind twice; channel dropout of a feature map, then element dropout of
            # the flattened features before a classifier, is a deliberate pair.
            previous = before.dropout if before is not None else None
            if (
                before is not None
                and previous
                and _active(before)
                and previous.variant == d.variant
            ):
                p, q = previous.p, d.p
                yield self.finding(
                    node.module,
                    f"{node.name} (p={q:g}) drops the output of {before.name} (p={p:g}) "
                    f"again, in effect p={1 - (1 - p) * (1 - q):g}",
                )


@register
class HighFunctionalRate(FlowRule):
    code = "DK017"
    severity: ClassVar[Severity] = "warning"
    title = "a dropout function called with a rate above 0.5"
    hint = (
        "keep element and channel dropout at 0.5 or below (0.1-0.3 is usual for hidden "
        "layers); compare rates with `dropkit compare`"
    )

    def check_flow(self, traces: Traces) -> Iterator[Finding]:
        for node in traces.train.dropouts():
            d = node.dropout
            if d and d.functional and d.element_or_channel and d.p > 0.5 and d.active:
                yield self.finding(
                    node.module,
                    f"{node.name} drops {d.p:g} of its input, which risks underfitting",
                )
