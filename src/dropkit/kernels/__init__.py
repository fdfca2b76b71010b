"""Random streams and kernels. The plain-PyTorch Philox reference here is the ground truth."""

from dropkit.kernels._philox import (
    CHUNK,
    LANES,
    keep_threshold,
    philox4x32,
    random_uint32,
    stream_keep_mask,
)

__all__ = ["CHUNK", "LANES", "keep_threshold", "philox4x32", "random_uint32", "stream_keep_mask"]
