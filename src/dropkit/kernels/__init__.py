"""Random streams and kernels. The plain-PyTorch Philox reference here is the ground truth;
fast backends are objects returned by :func:`select`, the one selection point, and are tested
against it.

Besides the streams and the selection, the helpers that :mod:`dropkit.functional` builds its
ops from: :func:`affine` (the masked affine map every op computes, in plain PyTorch),
:func:`reference_bias_dropout` (the fused bias epilogue, in plain PyTorch), :func:`placed` (a
result laid out as its input), :func:`compute_dtype`, :func:`stream_normal` (the Gaussian
stream), :func:`auto_backend` (:func:`select` unless a backend is forced) and
:func:`reusable_empty` (small masks in reused memory), and :data:`CPU_DTYPES` (what the CPU
kernels take).
"""

from dropkit.kernels._dispatch import (
    BACKENDS,
    CPU_DTYPES,
    Backend,
    auto_backend,
    available_backends,
    backend,
    masked_affine,
    select,
)
from dropkit.kernels._layout import placed
from dropkit.kernels._memory import reusable_empty
from dropkit.kernels._philox import (
    CHUNK,
    LANES,
    Seed,
    keep_threshold,
    philox4x32,
    random_uint32,
    stream_keep_mask,
    stream_normal,
)
from dropkit.kernels._reference import affine, compute_dtype
from dropkit.kernels._reference import bias_dropout as reference_bias_dropout

__all__ = [
    "BACKENDS",
    "CHUNK",
    "CPU_DTYPES",
    "LANES",
    "Backend",
    "Seed",
    "affine",
    "auto_backend",
    "available_backends",
    "backend",
    "compute_dtype",
    "keep_threshold",
    "masked_affine",
    "philox4x32",
    "placed",
    "random_uint32",
    "reference_bias_dropout",
    "reusable_empty",
    "select",
    "stream_keep_mask",
    "stream_normal",
]
