"""Argument checks and seeds shared by every op: one wording for one mistake.

Nothing here knows of Monte Carlo dropout: an op is a pure function of its arguments (and of
torch's default generator when no seed is given); :mod:`dropkit.mc` turns dropout on from the
outside, through ``__torch_function__``, as it does for torch's own dropout functions.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence

import torch

from dropkit.kernels import Seed

__all__ = [
    "BELOW_ONE",
    "InputError",
    "InputTypeError",
    "check_input",
    "check_p",
    "check_rank",
    "check_training",
    "draw_seed_tensor",
    "drawn_seed",
    "in_graph",
    "resolve_noise_shape",
    "resolve_seed",
]


class InputError(ValueError, RuntimeError):
    """A bad argument value: a wrong rank or shape, a rate outside [0, 1] or NaN.

    A ValueError, as dropkit has always raised, and a RuntimeError, as torch raises for the same
    mistakes (``dropout1d``'s and ``feature_alpha_dropout``'s ranks, a NaN rate, shapes that do
    not broadcast): code written for either catches it. (torch raises ValueError for a rate
    outside [0, 1], torchvision for a DropBlock input of the wrong rank.)
    """


class InputTypeError(TypeError, ValueError, RuntimeError):
    """A bad argument type: an integer input, a rate that is not a number, tensors on different
    devices. A TypeError, and the RuntimeError torch raises for an integer input or a device
    mismatch, and a ValueError as dropkit raised for a rate that is not a number."""


#: A rate this close to 1 drops everything, as torch's dropout does at exactly 1: the keep
#: probability left is below what the 32-bit keep threshold can express (from 1 - 2**-33 on,
#: the threshold rounds to 2**32, which no stream value reaches).
_ONE_WITHIN = 2**-33
#: Rates below this are used as given (the common case); those from it to 1 become 1.
BELOW_ONE = 1.0 - _ONE_WITHIN


def check_p(name: str, p: object, *, allow_one: bool = True) -> float:
    """Return ``p`` as a float after checking that it is a probability.

    A 0-dim floating-point tensor is accepted, as torch accepts it; a ``p`` within 2**-33 of 1
    becomes 1 (everything dropped) where 1 is allowed.
    """
    if type(p) is float and 0.0 <= p < BELOW_ONE:  # the common case, no ABC checks
        return p
    if isinstance(p, torch.Tensor) and p.dim() == 0 and p.is_floating_point():
        p = float(p)
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise InputTypeError(
            f"{name}: expected p to be a number in [0, 1], got {p!r} ({type(p).__name__})"
        )
    value = float(p)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if math.isnan(value) or value < 0.0 or not upper_ok:
        expected = "[0, 1]" if allow_one else "[0, 1)"
        raise InputError(f"{name}: expected p in {expected}, got {p!r}")
    if allow_one and value >= BELOW_ONE:
        return 1.0
    return value


def check_training(name: str, training: object) -> bool:
    """``training`` must be a bool, as torch requires of its dropout functions."""
    if training is True or training is False:
        return training
    raise TypeError(
        f"{name}: expected training to be a bool, got {training!r} ({type(training).__name__}); "
        "pass True or False, e.g. training=module.training"
    )


def check_input(name: str, input: object) -> torch.Tensor:
    """Check that ``input`` is a floating-point (or complex) tensor."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor input, got {type(input).__name__}")
    if not (input.is_floating_point() or input.is_complex()):
        raise InputTypeError(
            f"{name}: expected a floating-point tensor, got dtype {input.dtype}; "
            "convert it first, e.g. input.float()"
        )
    return input


def check_rank(name: str, input: torch.Tensor, ranks: Sequence[int], layout: str) -> None:
    """Raise an :class:`InputError` naming the expected ranks (``layout`` describes them)."""
    if input.dim() not in ranks:
        expected = " or ".join(f"{r}D" for r in ranks)
        raise InputError(f"{name}: expected a {expected} input {layout}, got {input.dim()}D")


_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads ranks far apart in seed space


_DISTRIBUTED = torch.distributed.is_available()


def _rank() -> int:
    """This process's rank in the default process group, 0 without one."""
    dist = torch.distributed
    return dist.get_rank() if _DISTRIBUTED and dist.is_initialized() else 0


# ``is_initialized()`` is ``_world.default_pg is None``, three Python calls deep; the common
# answer (no process group) is read from there where this torch keeps it. ``_world`` is looked
# up on every call: torch's threaded test process groups replace it.
_c10d = torch.distributed.distributed_c10d if _DISTRIBUTED else None


_draws = threading.local()


def draw_seed_tensor() -> tuple[torch.Tensor, int]:
    """A seed drawn into a tensor: this thread's 0-dim int64 tensor holding a new draw, and
    this rank's offset. The seed is ``(tensor + offset) % 2**64``, what :func:`resolve_seed`
    returns as an int, for a kernel that reads it itself."""
    cell = getattr(_draws, "cell", None)
    if cell is None:
        cell = torch.empty((), dtype=torch.int64)
        if type(cell) is torch.Tensor:  # not a fake or functional tensor made under a mode
            _draws.cell = cell
    # The same value as ``torch.randint(0, 2**62, ())``, what the compiled path draws in-graph,
    # at half the cost: ``random_`` on a reused scalar does not allocate. Per thread, so that
    # two threads never read each other's draw.
    cell.random_(0, 2**62)
    if getattr(getattr(_c10d, "_world", None), "default_pg", True) is None:
        return cell, 0
    return cell, _rank() * _GOLDEN % 2**64


def in_graph() -> bool:
    """Whether the op is being traced (``torch.compile``, ``torch.export``, ``torch.jit.trace``)
    or runs under a ``torch.func`` transform.

    There the op is built from torch operations only, with its seed a tensor drawn inside the
    graph (``torch.randint`` on the default generator, the same value eager mode draws), so the
    graph is whole and each transform sees ops it knows: ``vmap``'s ``randomness`` flag decides
    whether the draw differs per sample, exactly as for torch's dropout.
    """
    return (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch._C._is_tracing()
    )


def _check_seed(name: str, seed: object) -> int:
    if type(seed) is int and 0 <= seed < 2**64:  # the common case, without the ABC checks
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name}: expected seed to be an int or None, got {type(seed).__name__}")
    value = int(seed)
    if not 0 <= value < 2**64:
        raise ValueError(f"{name}: expected seed in [0, 2**64), got {value}")
    return value


def _signed(value: int) -> int:
    """A 64-bit unsigned value as the int64 with the same bits."""
    return value - 2**64 if value >= 2**63 else value


def _onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()``, in a function that dynamo can be told to call.

    ``torch.onnx.export(dynamo=True)`` captures the graph with ``torch.export`` twice: first
    running the Python (non-strict), then, if that failed, tracing it with dynamo (strict),
    which folds ``is_in_onnx_export()`` to False. The first capture sees the export and marks
    this function with ``torch.compiler.assume_constant_result`` (not at import: that loads
    dynamo), so that dynamo then calls it for real and the strict capture refuses too.
    """
    exporting = torch.onnx.is_in_onnx_export()
    if exporting and not torch.compiler.is_dynamo_compiling():
        torch.compiler.assume_constant_result(_onnx_exporting)  # type: ignore[no-untyped-call]
    return exporting


def resolve_seed(name: str, seed: object) -> Seed:
    """The seed to use: the given one, or a fresh one from torch's default CPU generator.

    Drawing from the default generator makes ``torch.manual_seed`` reproduce every mask, and makes
    activation checkpointing (which restores that generator) recompute the same mask. Under
    ``torch.distributed`` the rank is folded into drawn seeds, so data-parallel ranks that share a
    ``torch.manual_seed`` still draw different masks, reproducibly for a given (seed, world size).
    An explicit ``seed`` is used as given on every rank.

    Eagerly the seed is a Python int; inside a graph or a transform (:func:`in_graph`) it is a
    0-dim int64 tensor with the same bits.
    """
    if in_graph():
        # torch.jit.is_tracing, not torch._C._is_tracing: dynamo traces the former.
        tracing = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
        exporting = tracing or torch.compiler.is_exporting()
        if exporting and _onnx_exporting():
            raise RuntimeError(
                f"{name}: a training-mode dropkit dropout cannot be exported to ONNX (its mask "
                "comes from dropkit's Philox stream, which ONNX has no operator for); export the "
                "model in eval mode (model.eval(), where dropout is the identity), or swap in "
                "torch.nn.Dropout for the export"
            )
        if seed is None:
            in_graph_draw = torch.randint(0, 2**62, (), dtype=torch.int64)
            rank = _rank()
            return in_graph_draw + _signed(rank * _GOLDEN % 2**64) if rank else in_graph_draw
        return torch.tensor(_signed(_check_seed(name, seed)), dtype=torch.int64)
    if seed is None:
        return drawn_seed()
    return _check_seed(name, seed)


def drawn_seed() -> int:
    """An eager seed from torch's default CPU generator, this rank's (see :func:`resolve_seed`)."""
    cell, offset = draw_seed_tensor()
    return (int(cell.item()) + offset) % 2**64


def resolve_noise_shape(
    name: str, input: torch.Tensor, noise_shape: Sequence[int | None] | None
) -> tuple[int, ...]:
    """The mask shape: ``input.shape`` by default; ``None`` entries take the input's size."""
    if noise_shape is None:
        return tuple(input.shape)
    shape = tuple(noise_shape)
    if len(shape) != input.dim():
        raise InputError(
            f"{name}: noise_shape {list(shape)} has {len(shape)} dims but the input has "
            f"{input.dim()} (shape {list(input.shape)}); give one entry per input dim"
        )
    resolved: list[int] = []
    for dim, (n, size) in enumerate(zip(shape, input.shape, strict=True)):
        if n is None:
            n = size
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n not in (1, size):
            raise InputError(
                f"{name}: noise_shape[{dim}] must be 1 (shared mask) or {size} (the input's "
                f"size), got {n!r}"
            )
        resolved.append(int(n))
    return tuple(resolved)
