"""The one place that decides which backend runs a dropout op.

Backends:

- ``"reference"``: plain PyTorch (:mod:`dropkit.kernels._philox`), every device and dtype; the
  ground truth.
- ``"numba"``: fused CPU kernels (:mod:`dropkit.kernels._cpu`), for CPU tensors of float16,
  bfloat16, float32 and float64.
- ``"triton"``: fused GPU kernels (:mod:`dropkit.kernels._triton`), for CUDA tensors of
  float16, bfloat16 and float32 (float64 stays on the reference). Forced, it also runs CPU
  tensors in Triton's interpreter (``TRITON_INTERPRET=1``), which is how it is tested.

``"auto"`` (the default) picks the fastest backend that can run the tensor at hand. Force one
with the context manager :func:`backend` or the ``DROPKIT_BACKEND`` environment variable (read
once, when dropkit is imported, as torch reads its own; inside a running program use
:func:`backend`); forcing a backend that cannot run here is an error, while ``"auto"`` falls
back to the reference with a one-time warning when an optional backend is missing.

This runs on every dropout call, so the common case (``"auto"``, a CPU or CUDA float tensor)
takes a few attribute reads: on a 64x256 activation the whole call is a few tens of
microseconds, and every one of them shows in a small model's training step.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import math
import os
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Literal

import torch

from dropkit.kernels._memory import empty_like
from dropkit.kernels._philox import stream_keep_mask
from dropkit.kernels._reference import affine
from dropkit.kernels._reference import bias_dropout as reference_bias_dropout

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend",
    "fused_bias_dropout",
    "masked_affine",
    "read_environment",
    "select",
]

BackendName = Literal["auto", "reference", "numba", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "numba", "triton")
_TRITON_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32))
_CPU_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dropkit_backend", default=None
)


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {name!r}; expected one of {list(BACKENDS)}")
    return name


@contextlib.contextmanager
def backend(name: BackendName) -> Iterator[None]:
    """Run the dropout ops inside the ``with`` block on backend ``name``.

    Example:
        >>> import torch, dropkit
        >>> with dropkit.backend("reference"):
        ...     y = dropkit.F.dropout(torch.ones(4), 0.5, seed=0)
    """
    token = _forced.set(_check_name(name, "dropkit.backend"))
    try:
        yield
    finally:
        _forced.reset(token)


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _warn_missing(name: str, hint: str) -> None:
    warnings.warn(
        f"dropkit: {name} is not installed, so dropout runs on the slower pure-PyTorch "
        f"reference; {hint}",
        RuntimeWarning,
        stacklevel=4,
    )


def available_backends() -> dict[str, str]:
    """Each backend and whether it can run here (``"available"`` or why not)."""
    if not _triton_installed():
        triton = "missing: pip install triton (for CUDA tensors)"
    elif torch.cuda.is_available():
        triton = "available (CUDA)"
    else:
        triton = "installed; no CUDA device (runs only in the interpreter, TRITON_INTERPRET=1)"
    return {
        "reference": "available (pure PyTorch, every device)",
        "numba": "available (CPU)" if _numba_installed() else "missing: pip install numba",
        "triton": triton,
    }


_environment = "auto"


def read_environment() -> None:
    """(Re)read ``DROPKIT_BACKEND``; done once at import. A bad value is reported by the first
    op, not by ``import dropkit``."""
    global _environment
    _environment = os.environ.get("DROPKIT_BACKEND", "auto")


read_environment()


def _requested() -> str:
    forced = _forced.get()
    if forced is not None:
        return forced
    if _environment == "auto":
        return "auto"
    return _check_name(_environment, "DROPKIT_BACKEND")


def select(x: torch.Tensor) -> str:
    """The backend that runs an op on ``x`` now: ``"reference"``, ``"numba"`` or ``"triton"``."""
    requested = _requested()
    if requested == "reference":
        return "reference"
    if requested == "triton":
        if not _triton_installed():
            raise RuntimeError("dropkit backend 'triton' was forced but triton is not installed")
        if x.dtype not in _TRITON_DTYPES or not (x.is_cuda or _interpreting()):
            raise RuntimeError(
                f"dropkit backend 'triton' runs float16/bfloat16/float32 CUDA tensors (CPU "
                f"tensors only with TRITON_INTERPRET=1), got {x.dtype} on {x.device}"
            )
        return "triton"
    cpu_ok = x.is_cpu and x.dtype in _CPU_DTYPES
    if requested == "numba":
        if not _numba_installed():
            raise RuntimeError("dropkit backend 'numba' was forced but numba is not installed")
        if not cpu_ok:
            raise RuntimeError(
                f"dropkit backend 'numba' runs float CPU tensors only, got {x.dtype} on "
                f"{x.device}; use backend 'auto' or 'reference'"
            )
        return "numba"
    if cpu_ok:
        if _numba_installed():
            return "numba"
        _warn_missing("numba", "pip install numba for the fast CPU kernels")
    elif x.is_cuda and x.dtype in _TRITON_DTYPES:
        if _triton_installed():
            return "triton"
        _warn_missing("triton", "pip install triton for the fast GPU kernels")
    return "reference"


def _collapse(shape: tuple[int, ...], noise: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(A, B, C)`` such that the input is ``(A, B, C)`` and the mask ``(A, 1, C)``, if any."""
    runs: list[tuple[bool, int]] = []  # (shared, size) runs of dims, size-1 dims ignored
    for size, n in zip(shape, noise, strict=True):
        if size == 1:
            continue
        shared = n == 1
        if runs and runs[-1][0] == shared:
            runs[-1] = (shared, runs[-1][1] * size)
        else:
            runs.append((shared, size))
    shared_runs = [i for i, (shared, _) in enumerate(runs) if shared]
    if len(shared_runs) != 1:
        return None
    i = shared_runs[0]
    before = runs[i - 1][1] if i > 0 else 1
    after = runs[i + 1][1] if i + 1 < len(runs) else 1
    return before, runs[i][1], after


def _numba_fast_path(x: torch.Tensor, noise_shape: tuple[int, ...], p: float) -> bool:
    """Whether ``masked_affine(x, noise_shape, p, ...)`` is the common case that
    :func:`dropkit.kernels._cpu.stream_affine` runs directly: backend "auto" with numba, a
    non-empty CPU float tensor, an element-wise mask, ``p < 1``. Ordered cheapest first."""
    return bool(
        x.is_cpu
        and p < 1.0
        and noise_shape == x.shape
        and _forced.get() is None
        and _environment == "auto"
        and x.dtype in _CPU_DTYPES
        and _numba_installed()
        and x.numel()
    )


def masked_affine(
    x: torch.Tensor,
    noise_shape: tuple[int, ...],
    p: float,
    seed: int,
    scale: float,
    shift: float = 0.0,
    fill: float = 0.0,
) -> torch.Tensor:
    """``where(keep, x * scale + shift, fill)`` with ``keep`` the stream mask of ``noise_shape``
    (broadcast to ``x``), on the backend :func:`select` picks. Returns a new tensor."""
    if _numba_fast_path(x, noise_shape, p):
        fast: torch.Tensor = _cpu_kernels().stream_affine(x, p, seed, scale, shift, fill)
        return fast
    backend = select(x) if x.numel() else "reference"
    if backend == "reference":
        keep = stream_keep_mask(noise_shape, p, seed, x.device)
        return affine(x, keep, scale, shift, fill)
    if p >= 1.0:  # everything dropped
        return torch.full_like(x, fill)
    full = noise_shape == x.shape
    if backend == "numba":
        cpu = _cpu_kernels()
        if full:
            stream: torch.Tensor = cpu.stream_affine(x, p, seed, scale, shift, fill)
            return stream
        keep = cpu.keep_mask(math.prod(noise_shape), p, seed).view(noise_shape)
        abc = _collapse(tuple(x.shape), noise_shape)
        if abc is None or x.dtype not in (torch.float32, torch.float64):
            return affine(x, keep, scale, shift, fill)
        a, b, c = abc
        xc = x.contiguous()
        out = empty_like(xc)
        cpu.affine_broadcast(
            xc.view(a, b, c), out.view(a, b, c), keep.view(a, c), scale, shift, fill
        )
        return out
    triton_kernels = _triton_kernels()
    if full:
        xc = x.contiguous()
        out = empty_like(xc)
        triton_kernels.affine_stream(xc, out, p, seed, scale, shift, fill)
        return out
    keep = triton_kernels.keep_mask(math.prod(noise_shape), p, seed, x.device)
    return affine(x, keep.view(noise_shape), scale, shift, fill)


@functools.cache
def _triton_kernels() -> ModuleType:
    from dropkit.kernels import _triton  # imports triton: only once a GPU kernel is about to run

    return _triton


@functools.cache
def _cpu_kernels() -> ModuleType:
    from dropkit.kernels import _cpu  # imports numba: only once a CPU kernel is about to run

    return _cpu


def fused_bias_dropout(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor | None,
    p: float,
    seed: int,
    scale: float,
    activation: str | None,
) -> torch.Tensor:
    """``where(keep, activation(x + bias) * scale, 0) (+ residual)`` with the stream mask of
    ``x``'s shape, on the backend :func:`select` picks. Returns a new tensor."""
    backend = "reference" if x.numel() == 0 or p >= 1.0 else select(x)
    if backend == "numba" and x.dtype in (torch.float32, torch.float64):
        kernels: ModuleType | None = _cpu_kernels()
    elif backend == "triton":
        kernels = _triton_kernels()
    else:
        kernels = None
    if kernels is not None:
        xc = x.contiguous()
        out = empty_like(xc)
        res = residual.contiguous() if residual is not None else None
        kernels.bias_dropout_stream(xc, bias.contiguous(), res, out, p, seed, scale, activation)
        return out
    keep = stream_keep_mask(tuple(x.shape), p, seed, x.device)
    return reference_bias_dropout(x, bias, residual, keep, scale, activation)
