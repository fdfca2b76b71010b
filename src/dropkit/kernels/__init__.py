"""Random streams and kernels. The plain-PyTorch Philox reference here is the ground truth;
fast backends are objects returned by :func:`select`, the one selection point, and are tested
against it."""

from dropkit.kernels._dispatch import (
    BACKENDS,
    Backend,
    available_backends,
    backend,
    masked_affine,
    select,
)
from dropkit.kernels._philox import (
    CHUNK,
    LANES,
    keep_threshold,
    philox4x32,
    random_uint32,
    stream_keep_mask,
)

__all__ = [
    "BACKENDS",
    "CHUNK",
    "LANES",
    "Backend",
    "available_backends",
    "backend",
    "keep_threshold",
    "masked_affine",
    "philox4x32",
    "random_uint32",
    "select",
    "stream_keep_mask",
]
