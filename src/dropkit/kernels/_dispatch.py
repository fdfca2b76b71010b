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

:func:`select` returns a backend object (:class:`Backend`); every backend has the same four
methods with the same arguments, so a new backend is one class and one branch here. This runs
on every dropout call, so the common case (``"auto"``, a CPU float tensor) is the first branch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
import warnings
from collections.abc import Iterator
from typing import Literal, Protocol

import torch

from dropkit.kernels._reference import REFERENCE

__all__ = [
    "BACKENDS",
    "CPU_DTYPES",
    "Backend",
    "auto_backend",
    "available_backends",
    "backend",
    "masked_affine",
    "read_environment",
    "select",
]

BackendName = Literal["auto", "reference", "numba", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "numba", "triton")
_TRITON_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32))
#: The dtypes the numba CPU kernels take (others run on the plain-PyTorch reference).
CPU_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))

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


class Backend(Protocol):
    """What a backend provides: four steps, each returning a new tensor, with the
    arguments of :class:`dropkit.kernels._reference.ReferenceBackend` and its bits."""

    name: str

    def masked_affine(
        self,
        x: torch.Tensor,
        noise_shape: tuple[int, ...],
        p: float,
        seed: int,
        scale: float,
        shift: float = 0.0,
        fill: float = 0.0,
    ) -> torch.Tensor: ...

    def keep_mask(
        self, shape: tuple[int, ...], p: float, seed: int, device: torch.device
    ) -> torch.Tensor: ...

    def scaled_mask(
        self,
        shape: tuple[int, ...],
        p: float,
        seed: int,
        scale: float,
        dtype: torch.dtype,
        device: torch.device,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def bias_dropout(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        residual: torch.Tensor | None,
        p: float,
        seed: int,
        scale: float,
        activation: str | None,
    ) -> torch.Tensor: ...


def select(x: torch.Tensor) -> Backend:
    """The backend that runs an op on ``x`` now: the one selection point of dropkit.

    Its ``name`` is ``"reference"``, ``"numba"`` or ``"triton"``. The common case (``"auto"``,
    a float CPU tensor, numba installed) is the first branch.
    """
    if _forced.get() is None and _environment == "auto":
        if x.is_cpu and x.dtype in CPU_DTYPES:
            loaded = _loaded.get("numba")  # set once numba is imported: no call on this path
            if loaded is not None:
                return loaded
            return _numba() or _missing("numba", "pip install numba for the fast CPU kernels")
        if x.is_cuda and x.dtype in _TRITON_DTYPES:
            return _triton() or _missing("triton", "pip install triton for the fast GPU kernels")
        return REFERENCE
    requested = _requested()
    if requested == "reference" or requested == "auto":
        return REFERENCE if requested == "reference" else _auto_fallback(x)
    if requested == "triton":
        triton_backend = _triton()
        if triton_backend is None:
            raise RuntimeError("dropkit backend 'triton' was forced but triton is not installed")
        if x.dtype not in _TRITON_DTYPES or not (x.is_cuda or _interpreting()):
            raise RuntimeError(
                f"dropkit backend 'triton' runs float16/bfloat16/float32 CUDA tensors (CPU "
                f"tensors only with TRITON_INTERPRET=1), got {x.dtype} on {x.device}"
            )
        return triton_backend
    numba_backend = _numba()
    if numba_backend is None:
        raise RuntimeError("dropkit backend 'numba' was forced but numba is not installed")
    if not (x.is_cpu and x.dtype in CPU_DTYPES):
        raise RuntimeError(
            f"dropkit backend 'numba' runs float CPU tensors only, got {x.dtype} on "
            f"{x.device}; use backend 'auto' or 'reference'"
        )
    return numba_backend


def _auto_fallback(x: torch.Tensor) -> Backend:
    """``"auto"`` forced inside a ``backend(...)`` block: the same choice as by default."""
    token = _forced.set(None)
    try:
        return select(x)
    finally:
        _forced.reset(token)


def auto_backend(x: torch.Tensor) -> Backend | None:
    """:func:`select` of ``x`` when nothing forces a backend (no :func:`backend` block, no
    ``DROPKIT_BACKEND``), else None: the one question the small-tensor path of
    :func:`dropkit.functional.dropout` asks, in one call.

    Example:
        >>> import torch
        >>> from dropkit.kernels import auto_backend, backend
        >>> with backend("reference"):
        ...     auto_backend(torch.ones(3)) is None
        True
    """
    if _forced.get() is None and _environment == "auto":
        return _loaded.get("numba") or select(x)  # select() imports numba once
    return None


def _missing(name: str, hint: str) -> Backend:
    _warn_missing(name, hint)
    return REFERENCE


_loaded: dict[str, Backend | None] = {}


def _numba() -> Backend | None:
    """The numba backend, imported on first use; None if numba is not installed."""
    try:
        return _loaded["numba"]
    except KeyError:
        pass
    try:
        from dropkit.kernels._cpu import NUMBA  # imports numba
    except ImportError:
        _loaded["numba"] = None
    else:
        _loaded["numba"] = NUMBA
    return _loaded["numba"]


def _triton() -> Backend | None:
    """The Triton backend, imported on first use; None if triton is not installed."""
    try:
        return _loaded["triton"]
    except KeyError:
        pass
    try:
        from dropkit.kernels._triton import TRITON  # imports triton
    except ImportError:
        _loaded["triton"] = None
    else:
        _loaded["triton"] = TRITON
    return _loaded["triton"]


def masked_affine(
    x: torch.Tensor,
    noise_shape: tuple[int, ...],
    p: float,
    seed: int,
    scale: float,
    shift: float = 0.0,
    fill: float = 0.0,
) -> torch.Tensor:
    """The masked affine map (``x * where(keep, scale, 0)`` when ``shift`` and ``fill`` are 0,
    ``where(keep, x * scale + shift, fill)`` otherwise; see ``_reference.affine``) with ``keep``
    the stream mask of ``noise_shape`` broadcast to ``x``, on the backend :func:`select` picks.
    Returns a new tensor."""
    return select(x).masked_affine(x, noise_shape, p, seed, scale, shift, fill)
