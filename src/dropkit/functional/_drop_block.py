"""DropBlock: contiguous blocks of a feature map dropped, with the rate solved exactly."""

from __future__ import annotations

import functools
import math
import numbers
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as torch_F
from torch.overrides import handle_torch_function, has_torch_function_unary

from dropkit._registry import register_function
from dropkit.functional._autograd import apply_noise, inverted_scale
from dropkit.functional._validation import (
    InputError,
    check_input,
    check_p,
    check_rank,
    check_training,
    resolve_seed,
)
from dropkit.kernels import (
    Seed,
    affine,
    compute_dtype,
    placed,
    select,
    stream_keep_mask,
    stream_normal,
)

__all__ = [
    "BlockClip",
    "BlockMask",
    "Gamma",
    "Placement",
    "Rescale",
    "check_block_options",
    "drop_block2d",
    "drop_block3d",
]


#: How DropBlock's block-origin rate gamma is set: ``"exact"`` solves it so the expected dropped
#: fraction is ``p``; ``"paper"`` is eq. (1) of Ghiasi et al. (torchvision's and timm's).
Gamma = Literal["exact", "paper"]
#: Where blocks sit: ``"inside"``, wholly inside the map (the paper's Algorithm 1, torchvision);
#: ``"centered"``, on every position, clipped at the borders (timm).
Placement = Literal["inside", "centered"]
#: How a block larger than the map is cut: ``"axis"`` per axis; ``"square"`` to the smallest
#: side on every axis, staying a square or cube (torchvision).
BlockClip = Literal["axis", "square"]
#: What kept values are multiplied by: ``"expected"``, ``1/(1-p)``; ``"batch"``,
#: ``numel / (eps + kept)`` of the mask as drawn (torchvision, timm); ``"none"``, 1 (timm).
Rescale = Literal["expected", "batch", "none"]


def check_block_options(
    name: str,
    *,
    gamma: object,
    gamma_scale: object,
    placement: object,
    block_clip: object,
    rescale: object,
    eps: object,
) -> tuple[float, float]:
    """Check DropBlock's options beyond ``p`` and ``block_size``; return ``(gamma_scale, eps)``
    as floats. Raises naming ``name``, the bad value and what is expected."""
    for option, value, allowed in (
        ("gamma", gamma, ("exact", "paper")),
        ("placement", placement, ("inside", "centered")),
        ("block_clip", block_clip, ("axis", "square")),
        ("rescale", rescale, ("expected", "batch", "none")),
    ):
        if value not in allowed:
            expected = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{name}: expected {option} to be one of {expected}, got {value!r}")
    floats = []
    for option, value in (("gamma_scale", gamma_scale), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected {option} to be a float, got {value!r}")
        if not 0.0 <= float(value) < math.inf:
            raise ValueError(f"{name}: expected {option} >= 0 and finite, got {value!r}")
        floats.append(float(value))
    if gamma == "exact" and floats[0] != 1.0:
        raise ValueError(
            f"{name}: gamma_scale={gamma_scale!r} scales the paper's gamma; pass "
            "gamma='paper' with it (gamma='exact' solves the rate for p)"
        )
    return floats[0], floats[1]


def _axis_layout(size: int, block: int, placement: Placement) -> tuple[int, int, int]:
    """``(origins, before, after)`` along one axis: how many block origins there are, and the
    zero padding before and after them that a stride-1 max-pool of width ``block`` grows into
    blocks of the map's size. Origin ``o`` then drops positions ``o - before + [0, block)``."""
    if placement == "inside":
        return size - block + 1, block - 1, block - 1
    # Centred on its origin (for an even block: one more position before it than after, as
    # timm's crop of the pooled map gives), clipped at the borders.
    return size, block - 1 - block // 2, block // 2


def _coverage(size: int, block: int, placement: Placement) -> list[int]:
    """For each position along one axis, how many block origins cover it."""
    origins, before, _ = _axis_layout(size, block, placement)
    return [min(i - before + block - 1, origins - 1) - max(0, i - before) + 1 for i in range(size)]


@functools.lru_cache(maxsize=1024)
def _seed_rate(
    p: float, sizes: tuple[int, ...], blocks: tuple[int, ...], placement: Placement = "inside"
) -> float:
    """The block-origin rate gamma whose expected dropped fraction is exactly ``p``.

    Cached: a layer sees the same map size and rate on every call, and the bisection (100
    steps in Python) costs more than the small maps it is for.

    A position covered by ``k`` possible origins is dropped with probability ``1 - (1-gamma)^k``;
    the mean over positions increases with gamma from 0 to 1, so bisection finds it.
    """
    counts: Counter[int] = Counter({1: 1})
    for size, block in zip(sizes, blocks, strict=True):
        counts = _product_counts(counts, Counter(_coverage(size, block, placement)))
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
    """Keep mask of DropBlock: origins drawn from the stream, grown into blocks by max-pooling.

    The origins are stream elements ``0 .. n-1`` (row-major over ``(N, C or 1, *origins)``);
    ``with_noise`` fills dropped positions with normals from the elements after them. Kept values
    are scaled by ``scale``, or with ``batch_eps`` set by ``numel / (batch_eps + kept)`` of the
    mask as drawn. Everything is regenerated from the seed, so backward saves nothing.
    """

    shape: tuple[int, ...]
    blocks: tuple[int, ...]
    gamma: float
    seed: Seed
    scale: float
    placement: Placement = "inside"
    couple_channels: bool = False
    batch_eps: float | None = None
    with_noise: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return placed(x, self.reference(x))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        keep = self._keep(x.device)
        scale: torch.Tensor | float = self.scale
        if self.batch_eps is not None:
            # The kept count is an exact integer; only the division rounds.
            count = keep.sum().to(compute_dtype(x.dtype))
            scale = keep.numel() / (count + self.batch_eps)
        y = affine(x, keep, scale, 0.0, 0.0)
        if self.with_noise:
            fill = stream_normal(keep.shape, self.seed, x.device, start=self._origin_count())
            y = torch.where(keep, y, fill.to(y.dtype))
        return y

    def linear_part(self) -> BlockMask:
        return replace(self, with_noise=False) if self.with_noise else self

    def _origin_shape(self) -> tuple[int, ...]:
        layouts = [
            _axis_layout(s, b, self.placement)
            for s, b in zip(self.shape[2:], self.blocks, strict=True)
        ]
        channels = 1 if self.couple_channels else self.shape[1]
        return (self.shape[0], channels, *(origins for origins, _, _ in layouts))

    def _origin_count(self) -> int:
        return math.prod(self._origin_shape())

    def _keep(self, device: torch.device) -> torch.Tensor:
        origins = self._origin_shape()
        # An origin is "on" with probability gamma: the complement of a keep mask of rate gamma.
        if isinstance(self.seed, int):  # eagerly: the device's backend (the same bits)
            probe = torch.empty((), device=device)
            kept = select(probe).keep_mask(origins, self.gamma, self.seed, probe.device)
        else:
            kept = stream_keep_mask(origins, self.gamma, self.seed, device)
        on = (~kept).to(torch.float32)
        padding: list[int] = []
        for s, b in reversed(tuple(zip(self.shape[2:], self.blocks, strict=True))):
            _, before, after = _axis_layout(s, b, self.placement)
            padding += [before, after]
        dropped = torch_F.pad(on, padding)
        # A stride-1 max-pool of the block's size, one axis at a time: b - 1 maxima of shifted
        # views per axis (exact on 0/1 values). torch's max_pool2d/3d start a parallel region
        # for any size, which costs milliseconds on a busy machine and dominated small maps.
        for axis, block in zip(range(2, 2 + len(self.blocks)), self.blocks, strict=True):
            length = dropped.shape[axis] - block + 1
            window = dropped.narrow(axis, 0, length)
            for shift in range(1, block):
                window = torch.maximum(window, dropped.narrow(axis, shift, length))
            dropped = window
        return dropped == 0


def _drop_block(
    name: str,
    input: torch.Tensor,
    p: float,
    training: bool,
    inplace: bool,
    spatial_dims: int,
    block_size: int,
    seed: int | None,
    gamma: Gamma,
    gamma_scale: float,
    placement: Placement,
    block_clip: BlockClip,
    couple_channels: bool,
    rescale: Rescale,
    eps: float,
    with_noise: bool,
) -> torch.Tensor:
    check_input(name, input)
    if isinstance(training, numbers.Integral) and not isinstance(training, bool):
        raise TypeError(
            f"{name}: expected training to be a bool, got {training!r}; an int there is "
            f"torchvision's {name}(input, p, block_size, inplace, eps, training) order: pass "
            f"block_size={training!r} as a keyword"
        )
    layout = "(N, C, H, W)" if spatial_dims == 2 else "(N, C, D, H, W)"
    check_rank(name, input, (spatial_dims + 2,), layout)
    p = check_p(name, p)
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"{name}: expected block_size to be an int, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"{name}: expected block_size >= 1, got {block_size}")
    gamma_scale, eps = check_block_options(
        name,
        gamma=gamma,
        gamma_scale=gamma_scale,
        placement=placement,
        block_clip=block_clip,
        rescale=rescale,
        eps=eps,
    )
    if not check_training(name, training) or p == 0.0 or input.numel() == 0:
        return input
    spatial = tuple(int(s) for s in input.shape[2:])  # ints, also where a tracer gives tensors
    if block_clip == "square":
        blocks = (min(int(block_size), *spatial),) * spatial_dims
    else:
        blocks = tuple(min(int(block_size), s) for s in spatial)
    if gamma == "exact":
        rate = 1.0 if p == 1.0 else _seed_rate(p, spatial, blocks, placement)
    else:
        valid = math.prod([s - b + 1 for s, b in zip(spatial, blocks, strict=True)])
        rate = gamma_scale * p * math.prod(spatial) / (math.prod(blocks) * valid)
        if rate > 1.0:
            raise InputError(
                f"{name}: gamma='paper' gives a block-origin rate of {rate:.4g} > 1 for p={p}, "
                f"gamma_scale={gamma_scale}, block {'x'.join(map(str, blocks))} on a "
                f"{'x'.join(map(str, spatial))} map; lower p or gamma_scale, or use "
                "gamma='exact'"
            )
    noise = BlockMask(
        tuple(input.shape),
        blocks,
        rate,
        resolve_seed(name, seed),
        inverted_scale(p) if rescale == "expected" else 1.0,
        placement,
        bool(couple_channels),
        eps if rescale == "batch" else None,
        bool(with_noise),
    )
    return apply_noise(input, noise, inplace)


@register_function("block")
def drop_block2d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    block_size: int = 7,
    seed: int | None = None,
    gamma: Gamma = "exact",
    gamma_scale: float = 1.0,
    placement: Placement = "inside",
    block_clip: BlockClip = "axis",
    couple_channels: bool = False,
    rescale: Rescale = "expected",
    eps: float = 1e-6,
    with_noise: bool = False,
) -> torch.Tensor:
    """DropBlock: zero contiguous square blocks of each feature map, scale the rest by 1/(1-p).

    By default block origins are drawn at a rate solved so that the expected fraction of dropped
    positions is exactly ``p``, overlaps and borders included; the block is clipped to the
    feature map and may have an even size. The options reproduce torchvision's and timm's
    DropBlock (their distribution, not their random draws):

    - ``torchvision.ops.drop_block2d(x, p, block_size, eps=eps)``: ``gamma="paper"``,
      ``block_clip="square"``, ``rescale="batch"``, ``eps=eps``;
    - ``timm.layers.drop_block_2d(x, p, block_size, gamma_scale, with_noise, ...,
      couple_channels, scale_by_keep)``: ``gamma="paper"``, ``gamma_scale``,
      ``placement="centered"``, ``couple_channels``, ``rescale="batch"`` (``"none"`` for
      ``scale_by_keep=False`` or ``with_noise``), ``eps=1e-7``, ``with_noise``.

    The backward regenerates the mask (and the batch factor) from the seed: nothing input-sized
    is saved. The gradient is the mask times the factor; ``with_noise``'s fill does not depend on
    the input and has none.

    From Ghiasi et al., "DropBlock: A regularization method for convolutional networks"
    (NeurIPS 2018, https://arxiv.org/abs/1810.12890).

    Args:
        input: ``(N, C, H, W)``.
        p: expected fraction of positions to drop, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        block_size: side of the square block, clipped to the feature map. Default: 7.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.
        gamma: how the rate of block origins is set. ``"exact"`` solves it so that the expected
            fraction of dropped positions is ``p``, overlaps and borders included (dropkit).
            ``"paper"`` is eq. (1) of the paper, ``gamma_scale * p * (map area) /
            ((block area) * (valid origins))``, as torchvision and timm compute it; the dropped
            fraction is then near ``p`` but not equal to it. Default: ``"exact"``.
        gamma_scale: multiplies the paper's gamma (timm's ``gamma_scale``); only with
            ``gamma="paper"``. Default: 1.0.
        placement: ``"inside"`` draws origins only where the whole block fits (the paper's
            Algorithm 1, torchvision); ``"centered"`` draws one at every position and centres the
            block on it, clipped at the borders (an even block reaches one further before than
            after; timm). Default: ``"inside"``.
        block_clip: a block larger than the map is cut ``"axis"`` by axis, or ``"square"``: to
            the map's smallest side on every axis (torchvision). Default: ``"axis"``.
        couple_channels: draw one block mask per sample and share it over the channels (timm's
            default ``couple_channels=True``); otherwise one per channel, as the paper's
            Algorithm 1. Default: False.
        rescale: the factor on kept values. ``"expected"``: ``1/(1-p)``, the expectation kept for
            the dropped fraction ``p``. ``"batch"``: ``numel / (eps + kept)``, the realised kept
            fraction of the whole mask as drawn (one map per sample with ``couple_channels``),
            as torchvision and timm normalise (the output's mean over the batch equals the
            input's on a constant input). ``"none"``: kept values as they are (timm's
            ``scale_by_keep=False``). Default: ``"expected"``.
        eps: added to the kept count for ``rescale="batch"`` (torchvision's ``eps``; timm uses
            1e-7). Default: 1e-6.
        with_noise: fill dropped positions with standard normal noise (one value per position of
            the mask as drawn) instead of zeros: timm's experimental ``with_noise``, which it
            combines with no rescaling. Default: False.

    Shape:
        - Input: ``(N, C, H, W)``. Output: the same shape.

    Returns:
        The input with blocks dropped; ``input`` itself when not training or ``p`` is 0.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_block2d
        >>> y = drop_block2d(torch.ones(64, 8, 16, 16), 0.3, block_size=4, seed=0)
        >>> abs((y == 0).float().mean().item() - 0.3) < 0.02
        True
        >>> y = drop_block2d(torch.ones(8, 4, 9, 9), 0.1, block_size=3, seed=0,
        ...                  gamma="paper", block_clip="square", rescale="batch")
        >>> round(y.mean().item(), 4)  # torchvision's normalisation: the batch mean is kept
        1.0
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_block2d,
            (input,),
            input,
            p,
            training,
            inplace,
            block_size=block_size,
            seed=seed,
            gamma=gamma,
            gamma_scale=gamma_scale,
            placement=placement,
            block_clip=block_clip,
            couple_channels=couple_channels,
            rescale=rescale,
            eps=eps,
            with_noise=with_noise,
        )
    return _drop_block(
        "drop_block2d", input, p, training, inplace, 2, block_size, seed, gamma, gamma_scale,
        placement, block_clip, couple_channels, rescale, eps, with_noise,
    )  # fmt: skip


@register_function("block")
def drop_block3d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    block_size: int = 7,
    seed: int | None = None,
    gamma: Gamma = "exact",
    gamma_scale: float = 1.0,
    placement: Placement = "inside",
    block_clip: BlockClip = "axis",
    couple_channels: bool = False,
    rescale: Rescale = "expected",
    eps: float = 1e-6,
    with_noise: bool = False,
) -> torch.Tensor:
    """DropBlock on volumes: zero contiguous cubes of each feature map, scale the rest.

    See :func:`drop_block2d` (Ghiasi et al. 2018, https://arxiv.org/abs/1810.12890).
    ``torchvision.ops.drop_block3d(x, p, block_size, eps=eps)`` is ``gamma="paper"``,
    ``block_clip="square"``, ``rescale="batch"``, ``eps=eps``.

    Args:
        input: ``(N, C, D, H, W)``.
        p: expected fraction of positions to drop, in [0, 1]. Default: 0.5.
        training: apply it if True; otherwise return ``input`` itself. Default: True.
        inplace: write the result into ``input``. Default: False.
        block_size: side of the cubic block, clipped to the feature map. Default: 7.
        seed: the mask's seed. Default: drawn from torch's default CPU generator.
        gamma, gamma_scale, placement, block_clip, couple_channels, rescale, eps, with_noise:
            as for :func:`drop_block2d`.

    Shape:
        - Input: ``(N, C, D, H, W)``. Output: the same shape.

    Returns:
        The input with blocks dropped; ``input`` itself when not training or ``p`` is 0.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_block3d
        >>> drop_block3d(torch.ones(2, 2, 4, 4, 4), 0.2, block_size=2, seed=0).shape
        torch.Size([2, 2, 4, 4, 4])
    """
    if has_torch_function_unary(input):  # seen by TorchFunctionModes, as torch's
        return handle_torch_function(
            drop_block3d,
            (input,),
            input,
            p,
            training,
            inplace,
            block_size=block_size,
            seed=seed,
            gamma=gamma,
            gamma_scale=gamma_scale,
            placement=placement,
            block_clip=block_clip,
            couple_channels=couple_channels,
            rescale=rescale,
            eps=eps,
            with_noise=with_noise,
        )
    return _drop_block(
        "drop_block3d", input, p, training, inplace, 3, block_size, seed, gamma, gamma_scale,
        placement, block_clip, couple_channels, rescale, eps, with_noise,
    )  # fmt: skip
