"""What each op does beyond the shared mask properties: layouts, ranks, moments, blocks."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest

import dropkit.functional as F


def alpha_constants(p: float) -> tuple[float, float, float]:
    """Alpha dropout's (a, b, fill), from Klambauer et al. 2017, section "New Dropout"."""
    alpha_prime = -1.0507009873554805 * 1.6732632423543772
    a = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * alpha_prime**2))
    b = -a * alpha_prime * p
    return a, b, a * alpha_prime + b


# ---------------------------------------------------------------- dropout, noise_shape, mask


def test_dropout_mask_is_what_dropout_applies() -> None:
    x = torch.randn(17, 33)
    for p in (0.1, 0.5, 0.9):
        keep = F.dropout_mask(x.shape, p, seed=21)
        y = F.dropout(x, p, seed=21)
        assert keep.dtype == torch.bool
        assert torch.equal(y, torch.where(keep, x * (1 / (1 - p)), torch.zeros(())))


def test_dropout_mask_for_a_noise_shape() -> None:
    x = torch.ones(4, 6, 5)
    y = F.dropout(x, 0.5, noise_shape=(4, 6, 1), seed=2)
    keep = F.dropout_mask((4, 6, 1), 0.5, seed=2)
    assert torch.equal(y != 0, keep.expand_as(x))


def test_dropout_mask_edges_and_errors() -> None:
    assert F.dropout_mask((3,), 0.0, seed=0).all()
    assert not F.dropout_mask((3,), 1.0, seed=0).any()
    assert F.dropout_mask((0, 4), 0.5, seed=0).shape == (0, 4)
    with pytest.raises(ValueError, match="dropout_mask: expected p"):
        F.dropout_mask((3,), 2.0, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        F.dropout_mask((-1, 3), 0.5, seed=0)


def test_noise_shape_none_entries_take_the_input_size() -> None:
    x = torch.ones(3, 5, 4)
    assert torch.equal(
        F.dropout(x, 0.5, noise_shape=(None, None, 1), seed=3),
        F.dropout(x, 0.5, noise_shape=(3, 5, 1), seed=3),
    )


@pytest.mark.parametrize(
    ("noise_shape", "match"),
    [
        ((3, 5), r"noise_shape \[3, 5\] has 2 dims"),
        ((3, 2, 4), r"noise_shape\[1\]"),
        ((3, 5, "a"), r"noise_shape\[2\]"),
    ],
)
def test_bad_noise_shape(noise_shape, match) -> None:
    with pytest.raises(ValueError, match=f"dropout: {match}"):
        F.dropout(torch.ones(3, 5, 4), 0.5, noise_shape=noise_shape)


def test_dropout_matches_torch_statistically_and_in_eval() -> None:
    x = torch.ones(1000, 100)
    ours = (F.dropout(x, 0.3, seed=0) != 0).float().mean().item()
    theirs = (torch.nn.functional.dropout(x, 0.3) != 0).float().mean().item()
    assert abs(ours - theirs) < 0.01
    assert F.dropout(x, 0.3, False) is x


# ---------------------------------------------------------------- channel dropout


@pytest.mark.parametrize(
    ("fn", "channels_first_shape"),
    [(F.dropout1d, (6, 10, 5)), (F.dropout2d, (6, 10, 3, 4)), (F.dropout3d, (6, 10, 2, 3, 4))],
)
def test_channels_last_uses_the_same_mask_per_sample_and_channel(fn, channels_first_shape) -> None:
    x = torch.ones(channels_first_shape)
    first = fn(x, 0.5, seed=5)
    last = fn(x.movedim(1, -1).contiguous(), 0.5, channels_last=True, seed=5)
    assert torch.equal(last.movedim(-1, 1), first)


@pytest.mark.parametrize(
    ("fn", "shape", "memory_format"),
    [
        (F.dropout2d, (4, 8, 5, 5), torch.channels_last),
        (F.dropout3d, (4, 8, 2, 3, 5), torch.channels_last_3d),
    ],
)
def test_channel_dropout_keeps_torch_channels_last_memory_format(fn, shape, memory_format) -> None:
    x = torch.randn(shape).to(memory_format=memory_format)
    y = fn(x, 0.5, seed=3)
    assert y.is_contiguous(memory_format=memory_format)
    assert torch.equal(y, fn(x.contiguous(), 0.5, seed=3))
    assert fn(x, 0.5, training=False) is x
    leaf = x.detach().requires_grad_()
    fn(leaf, 0.5, seed=3).sum().backward()
    torch.testing.assert_close(leaf.grad, (y != 0).float() * 2)
    z = x.clone(memory_format=memory_format)
    assert fn(z, 0.5, inplace=True, seed=3) is z
    assert torch.equal(z, y)
    kept = (y != 0).flatten(2)
    assert torch.equal(kept.all(-1), kept.any(-1))


def test_dropout2d_on_torch_channels_last_memory_format() -> None:
    x = torch.randn(4, 8, 5, 5).to(memory_format=torch.channels_last)
    y = F.dropout2d(x, 0.5, seed=3)
    assert torch.equal(y, F.dropout2d(x.contiguous(), 0.5, seed=3))
    kept = (y != 0).flatten(2)
    assert torch.equal(kept.all(-1), kept.any(-1))


def test_dropout1d_unbatched_equals_a_batch_of_one() -> None:
    x = torch.randn(10, 7)
    assert torch.equal(F.dropout1d(x, 0.5, seed=1), F.dropout1d(x[None], 0.5, seed=1)[0])


@pytest.mark.parametrize(
    ("fn", "bad_rank", "match"),
    [
        (F.dropout1d, 4, r"dropout1d: expected a 2D or 3D input"),
        (F.dropout2d, 3, r"dropout2d: expected a 4D input \(N, C, H, W\), got 3D; use dropout1d"),
        (F.dropout2d, 5, r"dropout2d: expected a 4D input"),
        (F.dropout3d, 4, r"dropout3d: expected a 5D input .* got 4D; use dropout2d"),
        (F.dropout3d, 3, r"dropout3d: expected a 5D input"),
        (F.drop_block2d, 3, r"drop_block2d: expected a 4D input"),
        (F.drop_block3d, 4, r"drop_block3d: expected a 5D input"),
        (F.feature_alpha_dropout, 1, r"feature_alpha_dropout: expected an input \(N, C, \*\)"),
        (F.locked_dropout, 1, r"locked_dropout: expected an input \(T, N, \*\)"),
        (F.embedding_dropout, 3, r"embedding_dropout: expected a 2D input"),
        (F.drop_path, 0, r"drop_path: expected an input \(N, \*\)"),
    ],
)
def test_wrong_rank_raises_naming_the_expected_ranks(fn, bad_rank, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(torch.ones((2,) * bad_rank), 0.5)


# ---------------------------------------------------------------- locked dropout, drop_path


def test_locked_dropout_batch_first_is_constant_over_time() -> None:
    y = F.locked_dropout(torch.ones(4, 9, 6), 0.5, batch_first=True, seed=0)
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert (y == 0).any()
    assert (y != 0).any()


def test_drop_path_batch_mode_is_all_or_nothing() -> None:
    outcomes: set[tuple[float, ...]] = set()
    for seed in range(40):
        outcomes.add(
            tuple(F.drop_path(torch.ones(8, 3), 0.5, mode="batch", seed=seed).unique().tolist())
        )
    assert outcomes == {(0.0,), (2.0,)}


def test_drop_path_without_scale_by_keep() -> None:
    x = torch.randn(50, 4)
    y = F.drop_path(x, 0.5, scale_by_keep=False, seed=2)
    kept = (y != 0).all(1)
    assert torch.equal(y[kept], x[kept])
    assert 0 < int(kept.sum()) < 50


def test_drop_path_bad_mode() -> None:
    with pytest.raises(ValueError, match="drop_path: expected mode 'row' or 'batch', got 'col'"):
        F.drop_path(torch.ones(2, 2), 0.5, mode="col")  # type: ignore[arg-type]


def test_drop_path_rates() -> None:
    assert F.drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert F.drop_path_rates(0.2, 1) == [0.0]
    with pytest.raises(ValueError, match="drop_path_rates: expected depth"):
        F.drop_path_rates(0.2, 0)
    with pytest.raises(ValueError, match="drop_path_rates: expected p"):
        F.drop_path_rates(1.2, 4)


# ---------------------------------------------------------------- alpha dropout


@pytest.mark.parametrize("fn", [F.alpha_dropout, F.feature_alpha_dropout])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_alpha_dropout_keeps_zero_mean_unit_variance(fn, p) -> None:
    x = torch.randn(400, 500, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = fn(x, p, seed=2)
    assert abs(y.mean().item()) < 0.02
    assert abs(y.var().item() - 1.0) < 0.03


def test_alpha_dropout_dropped_value_and_mask() -> None:
    x = torch.randn(50, 60, dtype=torch.float64)
    p = 0.3
    a, b, fill = alpha_constants(p)
    keep = F.dropout_mask(x.shape, p, seed=3)
    y = F.alpha_dropout(x, p, seed=3)
    torch.testing.assert_close(y, torch.where(keep, a * x + b, torch.tensor(fill).double()))
    result = binomtest(int(keep.sum()), keep.numel(), 1 - p)
    assert result.pvalue > 0.001


def test_alpha_dropout_edges_and_gradients() -> None:
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert F.alpha_dropout(x, 0.0) is x
    assert F.alpha_dropout(x, 0.5, training=False) is x
    assert torch.equal(F.alpha_dropout(x, 1.0), torch.zeros_like(x))
    assert torch.autograd.gradcheck(lambda t: F.alpha_dropout(t, 0.3, seed=1), (x,))
    assert torch.autograd.gradcheck(lambda t: F.feature_alpha_dropout(t, 0.3, seed=1), (x,))


def test_alpha_dropout_defaults_to_training_unlike_torch() -> None:
    x = torch.randn(100)
    assert not torch.equal(F.alpha_dropout(x), x)
    assert not torch.equal(F.feature_alpha_dropout(x.view(10, 10)), x.view(10, 10))


def test_feature_alpha_dropout_is_per_channel() -> None:
    y = F.feature_alpha_dropout(torch.randn(30, 20, 5), 0.5, seed=0)
    _, _, fill = alpha_constants(0.5)
    dropped = (y == fill).all(-1)
    assert torch.equal(dropped, (y == fill).any(-1))
    assert binomtest(int(dropped.sum()), dropped.numel(), 0.5).pvalue > 0.001


# ---------------------------------------------------------------- gaussian dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_gaussian_dropout_moments(p) -> None:
    y = F.gaussian_dropout(torch.ones(200_000, dtype=torch.float64), p, seed=7)
    variance = p / (1 - p)
    std_err = math.sqrt(variance / y.numel())
    assert abs(y.mean().item() - 1.0) < 5 * std_err
    # The sample variance of n normals has std variance * sqrt(2 / (n - 1)).
    assert abs(y.var().item() - variance) < 5 * variance * math.sqrt(2 / (y.numel() - 1))


def test_gaussian_dropout_edges() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert F.gaussian_dropout(x, 0.0) is x
    assert F.gaussian_dropout(x, 0.4, training=False) is x
    assert torch.equal(F.gaussian_dropout(x, 0.4, seed=1), F.gaussian_dropout(x, 0.4, seed=1))
    assert torch.autograd.gradcheck(lambda t: F.gaussian_dropout(t, 0.4, seed=1), (x,))
    with pytest.raises(ValueError, match=r"gaussian_dropout: expected p in \[0, 1\), got 1.0"):
        F.gaussian_dropout(x, 1.0)


# ---------------------------------------------------------------- DropBlock


@pytest.mark.parametrize(
    ("fn", "shape", "block_size", "p"),
    [
        (F.drop_block2d, (8, 4, 16, 16), 5, 0.1),
        (F.drop_block2d, (8, 4, 15, 11), 4, 0.3),  # even block, odd maps
        (F.drop_block2d, (8, 4, 6, 6), 9, 0.3),  # block clipped to the map
        (F.drop_block3d, (4, 4, 6, 7, 5), 3, 0.2),
    ],
)
def test_drop_block_expected_dropped_fraction_is_p(fn, shape, block_size, p) -> None:
    fractions = torch.tensor(
        [
            (fn(torch.ones(shape), p, block_size=block_size, seed=s) == 0).double().mean().item()
            for s in range(60)
        ]
    )
    std_err = fractions.std().item() / math.sqrt(len(fractions))
    assert abs(fractions.mean().item() - p) < max(5 * std_err, 1e-3), fractions.mean()


def test_drop_block_drops_square_blocks() -> None:
    # At a tiny rate most maps get at most one block: then the dropped set is one full square.
    y = F.drop_block2d(torch.ones(400, 1, 12, 12), 0.02, block_size=3, seed=0)
    singles = 0
    for plane in y[:, 0] == 0:
        if plane.sum() == 9:
            rows, cols = plane.nonzero(as_tuple=True)
            assert rows.max() - rows.min() == 2
            assert cols.max() - cols.min() == 2
            singles += 1
    assert singles > 10


def test_drop_block_scales_kept_values_and_is_per_channel() -> None:
    x = torch.ones(16, 32, 8, 8)
    y = F.drop_block2d(x, 0.4, block_size=3, seed=1)
    assert set(y.unique().tolist()) == {0.0, torch.tensor(1 / 0.6).item()}
    # Different channels get different blocks.
    assert not torch.equal(y[:, 0], y[:, 1])


def test_drop_block_edges() -> None:
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert F.drop_block2d(x, 0.0) is x
    assert F.drop_block2d(x, 0.5, training=False) is x
    assert torch.equal(F.drop_block2d(x, 1.0, seed=0), torch.zeros_like(x))
    assert torch.autograd.gradcheck(lambda t: F.drop_block2d(t, 0.3, block_size=2, seed=3), (x,))
    with pytest.raises(ValueError, match="drop_block2d: expected block_size >= 1, got 0"):
        F.drop_block2d(x, 0.5, block_size=0)
    with pytest.raises(TypeError, match="drop_block2d: expected block_size to be an int"):
        F.drop_block2d(x, 0.5, block_size=2.5)  # type: ignore[arg-type]
    assert F.drop_block2d(torch.ones(2, 3, 0, 4), 0.5).shape == (2, 3, 0, 4)


def test_drop_block_backward_saves_no_mask() -> None:
    saved: list[int] = []
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        F.drop_block2d(x, 0.2, block_size=5, seed=1).sum().backward()
    assert sum(saved) < 1024


# ---------------------------------------------------------------- DropBlock's options


def block_intervals(size: int, block: int, placement: str) -> list[tuple[int, int]]:
    """The positions ``[first, last]`` that each block origin drops along one axis, written
    from the two descriptions: "inside" (Ghiasi et al.'s Algorithm 1, torchvision) puts a block
    wherever it fits; "centered" (timm) puts one on every position, clipped at the borders, an
    even block reaching ``block // 2`` before its origin and ``block // 2 - 1`` after."""
    if placement == "inside":
        return [(o, o + block - 1) for o in range(size - block + 1)]
    return [
        (max(0, s - block // 2), min(size - 1, s - block // 2 + block - 1)) for s in range(size)
    ]


def expected_block_fraction(
    spatial: tuple[int, ...], blocks: tuple[int, ...], placement: str, gamma: float
) -> float:
    """The expected dropped fraction when every origin is on with probability ``gamma``: a
    position covered by ``k`` origins stays with probability ``(1 - gamma) ** k``."""
    per_axis = []
    for size, block in zip(spatial, blocks, strict=True):
        intervals = block_intervals(size, block, placement)
        per_axis.append([sum(a <= i <= b for a, b in intervals) for i in range(size)])
    total = 0.0
    for position in torch.cartesian_prod(*(torch.arange(s) for s in spatial)).tolist():
        k = math.prod(per_axis[axis][i] for axis, i in enumerate(position))
        total += (1.0 - gamma) ** k
    return 1.0 - total / math.prod(spatial)


def paper_gamma(p: float, spatial: tuple[int, ...], blocks: tuple[int, ...], scale=1.0) -> float:
    """Eq. (1) of Ghiasi et al. 2018 on any number of axes."""
    valid = math.prod(s - b + 1 for s, b in zip(spatial, blocks, strict=True))
    return scale * p * math.prod(spatial) / (math.prod(blocks) * valid)


@pytest.mark.parametrize(
    ("fn", "shape", "block_size", "p", "options", "blocks"),
    [
        # torchvision's settings: the paper's gamma, a square block clipped to the smallest side
        (F.drop_block2d, (8, 4, 9, 7), 5, 0.2,
         {"gamma": "paper", "block_clip": "square", "rescale": "batch"}, (5, 5)),
        (F.drop_block2d, (8, 4, 9, 5), 7, 0.1, {"gamma": "paper", "block_clip": "square"}, (5, 5)),
        (F.drop_block3d, (4, 4, 5, 6, 7), 3, 0.15,
         {"gamma": "paper", "block_clip": "square", "rescale": "batch"}, (3, 3, 3)),
        # timm's: centred blocks clipped at the borders, gamma_scale, one mask per sample
        (F.drop_block2d, (8, 4, 8, 8), 5, 0.1,
         {"gamma": "paper", "gamma_scale": 0.25, "placement": "centered", "couple_channels": True},
         (5, 5)),
        (F.drop_block2d, (8, 4, 7, 6), 4, 0.2,
         {"gamma": "paper", "placement": "centered", "rescale": "none"}, (4, 4)),
        (F.drop_block2d, (8, 4, 9, 3), 7, 0.1, {"gamma": "paper", "placement": "centered"}, (7, 3)),
    ],
)  # fmt: skip
def test_drop_block_paper_gamma_and_placements_drop_their_expected_fraction(
    fn, shape, block_size, p, options, blocks
) -> None:
    spatial = shape[2:]
    gamma = paper_gamma(p, spatial, blocks, options.get("gamma_scale", 1.0))
    expected = expected_block_fraction(spatial, blocks, options.get("placement", "inside"), gamma)
    fractions = torch.tensor(
        [
            (fn(torch.ones(shape), p, block_size=block_size, seed=s, **options) == 0)
            .double()
            .mean()
            .item()
            for s in range(100)
        ]
    )
    std_err = fractions.std().item() / math.sqrt(len(fractions))
    assert abs(fractions.mean().item() - expected) < 5 * std_err, (fractions.mean(), expected)


@pytest.mark.parametrize("placement", ["inside", "centered"])
def test_drop_block_exact_gamma_drops_p_in_either_placement(placement) -> None:
    p = 0.25
    fractions = torch.tensor(
        [
            (F.drop_block2d(torch.ones(8, 4, 9, 8), p, block_size=4, seed=s, placement=placement)
             == 0).double().mean().item()
            for s in range(100)
        ]
    )  # fmt: skip
    std_err = fractions.std().item() / math.sqrt(len(fractions))
    assert abs(fractions.mean().item() - p) < 5 * std_err


def single_block_intervals(dropped: torch.Tensor, block: int) -> set[tuple[tuple[int, int], ...]]:
    """The ``(rows, cols)`` intervals of the maps whose dropped set is one rectangle no larger
    than a block: at a tiny rate, the blocks of single origins."""
    found = set()
    for plane in dropped:
        if not plane.any():
            continue
        rows, cols = plane.nonzero(as_tuple=True)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
        size = (r1 - r0 + 1) * (c1 - c0 + 1)
        if r1 - r0 < block and c1 - c0 < block and int(plane.sum()) == size:
            found.add(((r0, r1), (c0, c1)))
    return found


@pytest.mark.parametrize(("placement", "block"), [("inside", 3), ("centered", 3), ("centered", 4)])
def test_drop_block_single_blocks_sit_where_the_placement_says(placement, block) -> None:
    size = 6
    y = F.drop_block2d(
        torch.ones(3000, 1, size, size), 0.03, block_size=block, seed=5, gamma="paper",
        placement=placement,
    )  # fmt: skip
    found = single_block_intervals(y[:, 0] == 0, block)
    intervals = block_intervals(size, block, placement)
    assert found == {(r, c) for r in intervals for c in intervals}


def test_drop_block_square_clip_keeps_the_block_square() -> None:
    # A 9x4 map: clipped per axis the block is 5x4; clipped square (torchvision) it is 4x4.
    for clip, (rows, cols) in (("axis", (5, 4)), ("square", (4, 4))):
        y = F.drop_block2d(torch.ones(3000, 1, 9, 4), 0.03, block_size=5, seed=2, gamma="paper",
                           block_clip=clip)  # fmt: skip
        found = single_block_intervals(y[:, 0] == 0, rows)
        assert found == {((r, r + rows - 1), (0, cols - 1)) for r in range(9 - rows + 1)}


@pytest.mark.parametrize("couple_channels", [False, True])
def test_drop_block_batch_rescale_divides_by_the_kept_fraction(couple_channels) -> None:
    x = torch.ones(8, 4, 9, 9)
    for seed in range(5):
        y = F.drop_block2d(x, 0.3, block_size=3, seed=seed, rescale="batch", eps=1e-6,
                           couple_channels=couple_channels)  # fmt: skip
        mask = y[:, :1] != 0 if couple_channels else y != 0  # the mask as drawn
        kept = int(mask.sum())
        assert 0 < kept < mask.numel()
        scale = mask.numel() / (1e-6 + kept)
        torch.testing.assert_close(y[y != 0], torch.full((int((y != 0).sum()),), scale))
        # The normalisation torchvision and timm use: the batch's sum is kept.
        torch.testing.assert_close(y.sum(), x.sum(), rtol=1e-5, atol=0)
    y = F.drop_block2d(x, 0.3, block_size=3, seed=0, rescale="none")
    assert set(y.unique().tolist()) == {0.0, 1.0}


def test_drop_block_couple_channels_shares_one_mask_per_sample() -> None:
    y = F.drop_block2d(torch.ones(6, 5, 8, 8), 0.3, block_size=3, seed=0, couple_channels=True)
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert not torch.equal(y[0], y[1])


def test_drop_block_with_noise_fills_dropped_positions_with_standard_normals() -> None:
    x = torch.full((64, 8, 8, 8), 3.0, requires_grad=True)
    options = {"block_size": 3, "seed": 4, "rescale": "none"}
    y = F.drop_block2d(x, 0.3, with_noise=True, **options)
    keep = F.drop_block2d(torch.ones(64, 8, 8, 8), 0.3, **options) != 0  # the same mask
    assert torch.equal(y[keep], x[keep])
    z = y[~keep].detach().double()
    assert z.numel() > 5000
    assert abs(z.mean().item()) < 5 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt(2 / z.numel())
    # The gradient is the mask: the noise does not depend on the input.
    y.sum().backward()
    assert torch.equal(x.grad, keep.float())
    # Coupled, the noise is one map per sample too (timm draws it in the mask's shape).
    y = F.drop_block2d(torch.ones(4, 3, 8, 8), 0.3, with_noise=True, couple_channels=True, seed=1)
    assert torch.equal(y, y[:, :1].expand_as(y))


@pytest.mark.parametrize(
    "options",
    [
        {"rescale": "batch"},
        {"gamma": "paper", "placement": "centered", "couple_channels": True, "rescale": "batch",
         "eps": 1e-7},
        {"gamma": "paper", "block_clip": "square", "rescale": "batch"},
        {"with_noise": True, "rescale": "none", "placement": "centered", "couple_channels": True},
    ],
)  # fmt: skip
def test_drop_block_options_backward(options) -> None:
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.drop_block2d(t, 0.3, block_size=2, seed=3, **options)

    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)
    # The gradient is the forward's multiplier: y / x where x is nonzero, 0 where dropped.
    y = fn(x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    noiseless = F.drop_block2d(
        x.detach(), 0.3, block_size=2, seed=3, **{**options, "with_noise": False}
    )
    torch.testing.assert_close(grad, noiseless / x.detach())
    saved: list[int] = []
    big = torch.randn(4, 8, 32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        F.drop_block2d(big, 0.2, block_size=5, seed=1, **options).sum().backward()
    assert sum(saved) < 1024


def test_drop_block_options_inplace() -> None:
    options = {"block_size": 3, "seed": 2, "gamma": "paper", "placement": "centered",
               "couple_channels": True, "rescale": "batch", "with_noise": True}  # fmt: skip
    x = torch.randn(4, 3, 7, 7)
    expected = F.drop_block2d(x, 0.2, **options)
    y = x.clone()
    assert F.drop_block2d(y, 0.2, inplace=True, **options) is y
    assert torch.equal(y, expected)


def test_drop_block_option_errors() -> None:
    x = torch.ones(2, 3, 8, 8)
    cases = [
        ({"gamma": "approx"}, ValueError, r"drop_block2d: expected gamma to be one of 'exact', "),
        ({"placement": "center"}, ValueError, "drop_block2d: expected placement to be one of"),
        ({"block_clip": "cube"}, ValueError, "drop_block2d: expected block_clip to be one of"),
        ({"rescale": True}, ValueError, "drop_block2d: expected rescale to be one of"),
        ({"eps": -1.0}, ValueError, r"drop_block2d: expected eps >= 0 and finite, got -1.0"),
        ({"gamma_scale": "1"}, TypeError, "drop_block2d: expected gamma_scale to be a float"),
        ({"gamma_scale": 0.25}, ValueError, "gamma_scale=0.25 scales the paper's gamma; pass "
         "gamma='paper'"),
    ]  # fmt: skip
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            F.drop_block2d(x, 0.1, **options)
    # The paper's gamma can exceed 1 (where torchvision's and timm's bernoulli_ raise).
    message = (
        r"drop_block2d: gamma='paper' gives a block-origin rate of 2 > 1 for p=0\.5, "
        r"gamma_scale=4\.0, block 8x8 on a 8x8 map; lower p or gamma_scale"
    )
    with pytest.raises(ValueError, match=message):
        F.drop_block2d(x, 0.5, block_size=8, gamma="paper", gamma_scale=4)
    assert F.drop_block2d(x, 0.1, training=False, gamma="paper", rescale="batch") is x
    assert torch.equal(F.drop_block2d(x, 1.0, block_size=1, gamma="paper", rescale="batch"),
                       torch.zeros_like(x))  # fmt: skip


# ---------------------------------------------------------------- saved memory at scale


@pytest.mark.parametrize(
    ("fn", "saved_bytes"),
    [
        (F.dropout, 0),
        (F.alpha_dropout, 0),
        (F.gaussian_dropout, 0),
        # a shared mask of 1000 values is small: saved, scaled, for torch's native multiply
        (F.locked_dropout, 1000 * 4),
        (F.drop_path, 1000 * 4),
    ],
)
def test_backward_of_a_million_elements_saves_at_most_a_small_mask(fn, saved_bytes) -> None:
    saved: list[int] = []
    x = torch.randn(1000, 1000, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        y = fn(x, 0.5, seed=1)
    y.sum().backward()
    assert saved_bytes <= sum(saved) < saved_bytes + 1024
    assert x.grad is not None
