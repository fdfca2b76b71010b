"""Random streams and kernels. The plain-PyTorch Philox reference here is the ground truth;
fast backends sit behind :func:`masked_affine` and are tested against it."""

from dropkit.kernels._dispatch import BACKENDS, available_backends, backend, masked_affine
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
    "available_backends",
    "backend",
    "keep_threshold",
    "masked_affine",
    "philox4x32",
    "random_uint32",
    "stream_keep_mask",
]
