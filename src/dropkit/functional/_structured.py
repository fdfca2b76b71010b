"""Structured dropout: whole samples (DropPath) and contiguous blocks (DropBlock)."""

from __future__ import annotations

import numbers
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit.functional._autograd import apply_noise, inverted_scale
from dropkit.functional._elementwise import masked_dropout
from dropkit.functional._validation import (
    check_input,
    check_p,
    check_rank,
    check_training,
    resolve_seed,
)
from dropkit.kernels._philox import Seed, stream_keep_mask
from dropkit.kernels._reference import affine

__all__ = ["drop_block2d", "drop_block3d", "drop_path", "drop_path_rates"]


def drop_path(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    mode: Literal["row", "batch"] = "row",
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    """Stochastic depth: drop a residual branch's output for whole samples (or the whole batch).

    Apply it to the branch, then add the identity: ``x + drop_path(block(x), p)``.

    From Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016,
    https://arxiv.org/abs/1603.09382).

    Args:
        input: ``(N, *)``, the output of a residual branch.
        p: probability of dropping the branch, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        mode: ``"row"`` draws one decision per sample, ``"batch"`` one for the whole batch.
        scale_by_keep: scale kept samples by ``1/(1-p)`` so the expectation is unchanged.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_path
        >>> y = drop_path(torch.ones(8, 3, 4), 0.5, seed=0)
        >>> bool(((y == 0).flatten(1).all(1) | (y == 2).flatten(1).all(1)).all())
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_path,
            (input,),
            input,
            p,
            training,
            inplace,
            mode=mode,
            scale_by_keep=scale_by_keep,
            seed=seed,
        )
    check_input("drop_path", input)
    if mode not in ("row", "batch"):
        raise ValueError(f"drop_path: expected mode 'row' or 'batch', got {mode!r}")
    if input.dim() < 1:
        raise ValueError("drop_path: expected an input (N, *) with at least 1 dim, got 0D")
    first = input.shape[0] if mode == "row" else 1
    shape = (first,) + (1,) * (input.dim() - 1)
    return masked_dropout(
        "drop_path", input, p, training, inplace, shape, seed, scale_by_keep=scale_by_keep
    )


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """The usual linear stochastic-depth schedule: block ``i`` gets ``rate * i / (depth - 1)``.

    The first block is never dropped and the last gets ``rate`` (Huang et al. 2016).

    Example:
        >>> from dropkit.functional import drop_path_rates
        >>> drop_path_rates(0.3, 4)
        [0.0, 0.1, 0.2, 0.3]
    """
    rate = check_p("drop_path_rates", rate)
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"drop_path_rates: expected depth to be a positive int, got {depth!r}")
    if depth == 1:
        return [0.0]
    return [round(rate * i / (depth - 1), 12) for i in range(depth)]


def _coverage(size: int, block: int) -> list[int]:
    """For each position along one axis, how many block origins cover it."""
    origins = size - block + 1
    return [min(i, origins - 1) - max(0, i - block + 1) + 1 for i in range(size)]


def _seed_rate(p: float, sizes: tuple[int, ...], blocks: tuple[int, ...]) -> float:
    """The block-origin rate gamma whose expected dropped fraction is exactly ``p``.

    A position covered by ``k`` possible origins is dropped with probability ``1 - (1-gamma)^k``;
    the mean over positions increases with gamma from 0 to 1, so bisection finds it.
    """
    counts: Counter[int] = Counter({1: 1})
    for size, block in zip(sizes, blocks, strict=True):
        counts = _product_counts(counts, Counter(_coverage(size, block)))
    total = sum(counts.values())

    def dropped(gamma: float) -> float:
        return 1.0 - sum(c * (1.0 - gamma) ** k for k, c in counts.items()) / total

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if dropped(mid) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _product_counts(a: Counter[int], b: Counter[int]) -> Counter[int]:
    out: Counter[int] = Counter()
    for k1, c1 in a.items():
        for k2, c2 in b.items():
            out[k1 * k2] += c1 * c2
    return out


@dataclass(frozen=True)
class BlockMask:
    """Keep mask of DropBlock: origins drawn from the stream, grown into blocks by max-pooling."""

    shape: tuple[int, ...]
    blocks: tuple[int, ...]
    gamma: float
    seed: Seed
    scale: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return affine(x, self._keep(x.device), self.scale, 0.0, 0.0)

    def linear_part(self) -> BlockMask:
        return self

    def _keep(self, device: torch.device) -> torch.Tensor:
        spatial = self.shape[2:]
        origins = self.shape[:2] + tuple(
            s - b + 1 for s, b in zip(spatial, self.blocks, strict=True)
        )
        # An origin is "on" with probability gamma: the complement of a keep mask of rate gamma.
        on = (~stream_keep_mask(origins, self.gamma, self.seed, device)).to(torch.float32)
        padding: list[int] = []
        for b in reversed(self.blocks):
            padding += [b - 1, b - 1]
        on = torch_F.pad(on, padding)
        pool = torch_F.max_pool2d if len(self.blocks) == 2 else torch_F.max_pool3d
        dropped = pool(on, kernel_size=self.blocks, stride=1)
        return dropped == 0


def _drop_block(
    name: str,
    input: torch.Tensor,
    p: float,
    training: bool,
    inplace: bool,
    block_size: int,
    seed: int | None,
    spatial_dims: int,
) -> torch.Tensor:
    check_input(name, input)
    layout = "(N, C, H, W)" if spatial_dims == 2 else "(N, C, D, H, W)"
    check_rank(name, input, (spatial_dims + 2,), layout)
    p = check_p(name, p)
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"{name}: expected block_size to be an int, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"{name}: expected block_size >= 1, got {block_size}")
    if not check_training(name, training) or p == 0.0 or input.numel() == 0:
        return input
    spatial = tuple(input.shape[2:])
    blocks = tuple(min(int(block_size), s) for s in spatial)
    gamma = 1.0 if p == 1.0 else _seed_rate(p, spatial, blocks)
    noise = BlockMask(
        tuple(input.shape), blocks, gamma, resolve_seed(name, seed), inverted_scale(p)
    )
    return apply_noise(input, noise, inplace)


def drop_block2d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    block_size: int = 7,
    seed: int | None = None,
) -> torch.Tensor:
    """DropBlock: zero contiguous square blocks of each feature map, scale the rest by 1/(1-p).

    Block origins are drawn at a rate solved so that the expected fraction of dropped positions
    is exactly ``p``, overlaps and borders included; the block is clipped to the feature map and
    may have an even size.

    From Ghiasi et al., "DropBlock: A regularization method for convolutional networks"
    (NeurIPS 2018, https://arxiv.org/abs/1810.12890).

    Args:
        input: ``(N, C, H, W)``.
        p: expected fraction of positions to drop, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        block_size: side of the square block, clipped to the feature map. Default: 7.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_block2d
        >>> y = drop_block2d(torch.ones(64, 8, 16, 16), 0.3, block_size=4, seed=0)
        >>> abs((y == 0).float().mean().item() - 0.3) < 0.02
        True
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_block2d, (input,), input, p, training, inplace, block_size=block_size, seed=seed
        )
    return _drop_block("drop_block2d", input, p, training, inplace, block_size, seed, 2)


def drop_block3d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    block_size: int = 7,
    seed: int | None = None,
) -> torch.Tensor:
    """DropBlock on volumes: zero contiguous cubes of each feature map, scale the rest.

    See :func:`drop_block2d` (Ghiasi et al. 2018, https://arxiv.org/abs/1810.12890).

    Args:
        input: ``(N, C, D, H, W)``.
        p: expected fraction of positions to drop, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        block_size: side of the cubic block, clipped to the feature map. Default: 7.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.

    Shape:
        - Input: ``(N, C, D, H, W)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_block3d
        >>> drop_block3d(torch.ones(2, 2, 4, 4, 4), 0.2, block_size=2, seed=0).shape
        torch.Size([2, 2, 4, 4, 4])
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_block3d, (input,), input, p, training, inplace, block_size=block_size, seed=seed
        )
    return _drop_block("drop_block3d", input, p, training, inplace, block_size, seed, 3)
