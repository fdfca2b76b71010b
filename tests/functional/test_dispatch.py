"""The ops are pure functions of their arguments, seen by ``__torch_function__`` as torch's are:
a mode wrapped around them (Monte Carlo dropout, a recorder) sees every call and may change it."""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import dropkit.functional as F

B = torch.zeros(6)
CALLS = {
    "dropout": lambda x, t: F.dropout(x, 0.5, t),
    "dropout1d": lambda x, t: F.dropout1d(x.view(2, 3, 6), 0.5, t),
    "dropout2d": lambda x, t: F.dropout2d(x.view(2, 3, 2, 3), 0.5, t),
    "dropout3d": lambda x, t: F.dropout3d(x.view(2, 3, 1, 2, 3), 0.5, t),
    "alpha_dropout": lambda x, t: F.alpha_dropout(x, 0.5, t),
    "feature_alpha_dropout": lambda x, t: F.feature_alpha_dropout(x, 0.5, t),
    "gaussian_dropout": lambda x, t: F.gaussian_dropout(x, 0.5, t),
    "locked_dropout": lambda x, t: F.locked_dropout(x, 0.5, t),
    "drop_path": lambda x, t: F.drop_path(x, 0.5, t),
    "drop_block2d": lambda x, t: F.drop_block2d(x.view(2, 3, 2, 3), 0.5, t, block_size=1),
    "drop_block3d": lambda x, t: F.drop_block3d(x.view(2, 3, 1, 2, 3), 0.5, t, block_size=1),
    "dropconnect": lambda x, t: F.dropconnect(x, 0.5, t),
    "embedding_dropout": lambda x, t: F.embedding_dropout(x, 0.5, t),
    "bias_dropout": lambda x, t: F.bias_dropout(x, B, 0.5, t),
    "bias_dropout_add": lambda x, t: F.bias_dropout_add(x, B, torch.zeros(6, 6), 0.5, t),
}


class _TrainingOn(TorchFunctionMode):
    """What a Monte Carlo mode does from the outside: every dropkit op runs with training=True."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if getattr(func, "__module__", "").startswith("dropkit.functional"):
            self.seen.append(func.__name__)
            position = {"bias_dropout": 3, "bias_dropout_add": 4}.get(func.__name__, 2)
            if len(args) > position:
                args = (*args[:position], True, *args[position + 1 :])
            else:
                kwargs["training"] = True
        return func(*args, **kwargs)


def test_every_op_is_seen_by_a_torch_function_mode_and_is_pure_outside_it() -> None:
    x = torch.ones(6, 6)
    for name, call in CALLS.items():
        off = call(x, False)
        assert torch.equal(off.reshape(6, 6), x), name  # training=False: no noise, no state
        with _TrainingOn() as mode:
            on = call(x, False)
        assert mode.seen == [name]
        assert not torch.equal(on.reshape(6, 6), x), name
        assert torch.equal(call(x, False).reshape(6, 6), x), name  # nothing left behind
