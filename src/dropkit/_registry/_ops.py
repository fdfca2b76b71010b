"""The ops the doctor's rules reason about, by family: convolutions, pools, norms, additions...

The doctor records a call under its name (a module's class name, ``Conv2d``; a function's
``__name__``, ``conv2d``, ``__add__``), so the entries are those names. A family is one
:func:`register_ops` call; a rule asks :func:`op_family`.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["OpFamily", "commutes_with_dropout", "op_family", "register_ops"]

#: ``"shape"``: moves values without computing on them (a view, a copy, a dtype change);
#: ``"activation"``: an element-wise nonlinearity; ``"batch_norm"``: normalizes with batch
#: statistics; ``"conv"``, ``"pool"``; ``"add"``: a sum of two tensors (a residual connection);
#: ``"concat"``: keeps every input's values (a dropout before it still reaches what follows).
OpFamily = Literal["shape", "activation", "batch_norm", "conv", "pool", "add", "concat"]

_OPS: dict[str, OpFamily] = {}
#: Activations ``f`` with ``f(dropout(x)) != dropout(f(x))`` up to scale (not ReLU-like).
_NON_COMMUTING: set[str] = set()


def register_ops(family: OpFamily, *names: str, commutes_with_dropout: bool = True) -> None:
    """Put the ops called ``names`` (as the doctor records them) in ``family``."""
    for name in names:
        if name in _OPS:
            raise ValueError(f"register_ops: {name!r} is in family {_OPS[name]!r} already")
        _OPS[name] = family
        if not commutes_with_dropout:
            _NON_COMMUTING.add(name)


def op_family(name: str) -> OpFamily | None:
    """The family of the op recorded as ``name``, or None."""
    return _OPS.get(name)


def commutes_with_dropout(name: str) -> bool:
    """Whether an activation may swap places with a dropout before it (ReLU-like ones may)."""
    return name not in _NON_COMMUTING


register_ops(
    "shape",
    "view", "reshape", "flatten", "Flatten", "Unflatten", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "contiguous", "__getitem__", "expand", "clone", "Identity",
    "to", "float", "unflatten", "movedim",
)  # fmt: skip
register_ops(
    "activation",
    "relu", "ReLU", "relu_", "leaky_relu", "LeakyReLU", "elu", "ELU", "selu", "SELU", "relu6",
    "ReLU6", "hardtanh", "Hardtanh",
)  # fmt: skip
register_ops(
    "activation",
    "sigmoid", "Sigmoid", "tanh", "Tanh", "gelu", "GELU", "silu", "SiLU", "softmax",
    "Softmax", "log_softmax", "LogSoftmax", "Mish", "mish",
    commutes_with_dropout=False,
)  # fmt: skip
register_ops(
    "batch_norm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "batch_norm"
)
register_ops("conv", "Conv1d", "Conv2d", "Conv3d", "conv1d", "conv2d", "conv3d")
register_ops("pool", "MaxPool2d", "AvgPool2d", "MaxPool3d", "AvgPool3d", "max_pool2d", "avg_pool2d")
register_ops("add", "add", "__add__", "__radd__", "__iadd__", "add_")
register_ops("concat", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack")
