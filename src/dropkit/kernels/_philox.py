"""The dropkit random stream: Philox4x32-10 in plain PyTorch, the ground truth for every kernel.

Philox4x32-10 is the counter-based generator of Salmon et al., "Parallel random numbers: as easy
as 1, 2, 3" (SC 2011, https://doi.org/10.1145/2063384.2063405). Its output is a pure function of
a 64-bit key and a 128-bit counter, so any element of the stream can be computed on any device,
in any order, and a mask can be regenerated in backward instead of stored.

The stream is defined as follows; fast kernels must reproduce it bit for bit.

- key = (seed & 0xFFFFFFFF, seed >> 32) for a seed in [0, 2**64);
- the stream is cut into chunks of ``CHUNK = 4 * LANES`` elements; element ``i`` lies in chunk
  ``c = i // CHUNK`` at word ``w = (i % CHUNK) // LANES`` and lane ``l = i % LANES``;
- its 32-bit value is word ``w`` of Philox4x32-10(key, counter=(lo32(b), hi32(b), 0, 0)) with
  block ``b = c * LANES + l``.

This is what Triton's ``tl.randint4x(seed, b)`` returns for an int64 ``b``. Using all four words
of a block quarters the work, and the chunked layout keeps the four words of consecutive blocks
in four contiguous runs, so a CPU loop over lanes vectorizes and a GPU program stores coalesced.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CHUNK",
    "LANES",
    "MAX_STREAM_LENGTH",
    "Seed",
    "keep_threshold",
    "philox4x32",
    "random_uint32",
    "stream_keep_mask",
    "stream_normal",
    "stream_uniform",
]

LANES = 1024
CHUNK = 4 * LANES
#: Blocks are counted with 64 bits, so the stream is far longer than any tensor; this bound only
#: keeps index arithmetic inside int64.
MAX_STREAM_LENGTH = 2**62

_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * b`` for a 32-bit constant and uint32 values in int64.

    The full product needs 64 unsigned bits, which int64 cannot hold, so ``b`` is split in 16-bit
    halves and the partial products (each below 2**48) are recombined.
    """
    lo_part = a * (b & _MASK16)
    mid = a * (b >> 16) + (lo_part >> 16)
    hi = mid >> 16
    lo = ((mid & _MASK16) << 16) | (lo_part & _MASK16)
    return hi, lo


Key = tuple[int, int] | tuple[torch.Tensor, torch.Tensor]
#: A seed as a Python int in [0, 2**64), or as a 0-dim int64 tensor (the same 64 bits, two's
#: complement) drawn inside a traced graph or a ``torch.func`` transform.
Seed = int | torch.Tensor


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    key: Key,
    rounds: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 on uint32 values stored in int64 tensors; returns the four output words.

    The key words are Python ints or int64 tensors that broadcast against the counter.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def _split_seed(seed: Seed, device: torch.device | str | None) -> Key:
    if isinstance(seed, torch.Tensor):
        # A tensor seed stays in the graph (a traced or vmapped draw): no Python int is taken.
        seed = seed.to(device=device, dtype=torch.int64)
        return seed & _MASK32, (seed >> 32) & _MASK32
    if not 0 <= seed < 2**64:
        raise ValueError(f"philox: expected a seed in [0, 2**64), got {seed}")
    return seed & _MASK32, seed >> 32


def random_uint32(
    numel: int, seed: Seed, device: torch.device | str | None = None, *, start: int = 0
) -> torch.Tensor:
    """Elements ``start .. start+numel-1`` of the stream as uint32 values in an int64 tensor."""
    if numel < 0 or start < 0 or start + numel > MAX_STREAM_LENGTH:
        raise ValueError(
            f"philox: stream range [{start}, {start + numel}) is outside [0, {MAX_STREAM_LENGTH})"
        )
    key = _split_seed(seed, device)
    if numel == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first_chunk = start // CHUNK
    last_chunk = (start + numel - 1) // CHUNK
    blocks = torch.arange(
        first_chunk * LANES, (last_chunk + 1) * LANES, dtype=torch.int64, device=device
    )
    zero = torch.zeros_like(blocks)
    words = philox4x32((blocks & _MASK32, blocks >> 32, zero, zero), key)
    # [chunks, 4 words, LANES] laid out flat is exactly the stream order.
    stream = torch.stack([w.view(-1, LANES) for w in words], dim=1).reshape(-1)
    offset = start - first_chunk * CHUNK
    return stream[offset : offset + numel]


def keep_threshold(p: float) -> int:
    """Integer threshold ``t`` such that an element is kept iff its stream value is ``>= t``.

    Comparing integers, not floats, makes the decision identical on every backend. The keep
    probability is ``1 - t / 2**32``, within ``2**-33`` of ``1 - p``.
    """
    return min(2**32, max(0, round(p * 2**32)))


def stream_keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, seed: Seed, device: torch.device | str | None
) -> torch.Tensor:
    """Keep mask of ``shape``: element ``i`` in row-major order uses stream value ``i``."""
    numel = math.prod(shape)
    bits = random_uint32(numel, seed, device)
    return (bits >= keep_threshold(p)).view(shape)


def stream_uniform(
    numel: int, seed: Seed, device: torch.device | str | None, *, start: int = 0
) -> torch.Tensor:
    """Uniform float32 values in [0, 1) with 24 random bits each (exact in float32)."""
    bits = random_uint32(numel, seed, device, start=start)
    return (bits >> 8).to(torch.float32) * (2.0**-24)


def stream_normal(
    shape: torch.Size | tuple[int, ...],
    seed: Seed,
    device: torch.device | str | None,
    *,
    start: int = 0,
) -> torch.Tensor:
    """Standard normal float32 values by Box-Muller: element ``i`` uses stream elements
    ``start + 2i`` and ``start + 2i + 1`` (a ``start`` past another draw's elements keeps the two
    independent under one seed)."""
    numel = math.prod(shape)
    u = stream_uniform(2 * numel, seed, device, start=start).view(-1, 2)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))
    return (radius * torch.cos(2.0 * math.pi * u[:, 1])).view(shape)
