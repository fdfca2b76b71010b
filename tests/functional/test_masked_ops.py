"""Properties shared by every mask-based op (inverted dropout with some mask sharing).

Each op is described by the input shape it takes and by how its output groups into decision
units (elements, channels, samples, rows) that are kept or dropped together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from scipy.stats import binomtest

import dropkit.functional as F
from dropkit.functional._autograd import SAVED_MASK_BELOW


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable[..., torch.Tensor]
    shape: tuple[int, ...]
    # Reshapes an output to (units, values per unit); every value of a unit shares one decision.
    units: Callable[[torch.Tensor], torch.Tensor]
    takes_inplace: bool = True

    def __call__(self, x, p=0.5, training=True, inplace=False, **kw):
        if self.takes_inplace:
            return self.fn(x, p, training, inplace, **kw)
        assert not inplace
        return self.fn(x, p, training, **kw)


def _per_element(y):
    return y.reshape(-1, 1)


def _per_channel(y):
    return y.flatten(2).reshape(y.shape[0] * y.shape[1], -1)


def _per_sample(y):
    return y.reshape(y.shape[0], -1)


def _per_row(y):
    return y


def _locked_units(y):  # (T, N, F): one decision per (n, f), shared over T
    return y.permute(1, 2, 0).reshape(-1, y.shape[0])


OPS = [
    Op("dropout", F.dropout, (64, 40), _per_element),
    Op("dropout1d", F.dropout1d, (40, 30, 7), _per_channel),
    Op("dropout2d", F.dropout2d, (40, 30, 3, 4), _per_channel),
    Op("dropout3d", F.dropout3d, (40, 30, 2, 2, 3), _per_channel),
    Op("locked_dropout", F.locked_dropout, (9, 40, 30), _locked_units),
    Op("drop_path", F.drop_path, (1200, 3, 2), _per_sample),
    Op("embedding_dropout", F.embedding_dropout, (1200, 6), _per_row, takes_inplace=False),
    Op("dropconnect", F.dropconnect, (60, 40), _per_element, takes_inplace=False),
]
IDS = [op.name for op in OPS]
INPLACE_OPS = [op for op in OPS if op.takes_inplace]


@pytest.fixture(params=OPS, ids=IDS)
def op(request) -> Op:
    return request.param


def _decisions(op: Op, y: torch.Tensor) -> torch.Tensor:
    units = op.units(y)
    kept = units != 0
    # All-or-nothing: every value in a unit shares the decision.
    assert torch.equal(kept.all(1), kept.any(1)), f"{op.name}: a unit was partly dropped"
    return kept[:, 0]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_passes_binomial_test(op: Op, p: float) -> None:
    x = torch.ones(op.shape)
    kept = torch.cat([_decisions(op, op(x, p, seed=seed)) for seed in range(3)])
    result = binomtest(int(kept.sum()), kept.numel(), 1 - p)
    assert result.pvalue > 0.001, (op.name, p, kept.float().mean().item())


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_mean_of_constant_input_is_preserved(op: Op, p: float) -> None:
    x = torch.full(op.shape, 3.0, dtype=torch.float64)
    runs = torch.stack([op(x, p, seed=seed).mean() for seed in range(20)])
    units = op.units(x).shape[0]
    # The mean over n independent units of 3 * Bernoulli(1-p) / (1-p) has std 3 sqrt(p/((1-p) n)).
    std_err = 3 * (p / ((1 - p) * units * len(runs))) ** 0.5
    assert abs(runs.mean().item() - 3.0) < 5 * std_err


def test_kept_values_are_scaled_by_inverse_keep(op: Op) -> None:
    x = torch.rand(op.shape, generator=torch.Generator().manual_seed(0)) + 0.5
    y = op(x, 0.25, seed=4)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)


def test_p_zero_and_eval_return_the_input(op: Op) -> None:
    x = torch.randn(op.shape)
    assert op(x, 0.0) is x
    assert op(x, 0.5, training=False) is x


def test_p_one_gives_zeros(op: Op) -> None:
    x = torch.randn(op.shape, requires_grad=True)
    y = op(x, 1.0, seed=0)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_same_seed_same_output_other_seed_other_mask(op: Op) -> None:
    x = torch.randn(op.shape)
    assert torch.equal(op(x, 0.5, seed=11), op(x, 0.5, seed=11))
    assert not torch.equal(op(x, 0.5, seed=11) != 0, op(x, 0.5, seed=12) != 0)


def test_manual_seed_reproduces_default_seed(op: Op) -> None:
    x = torch.randn(op.shape)
    torch.manual_seed(5)
    first = op(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(first, op(x, 0.5))
    assert not torch.equal(first, op(x, 0.5))


def test_gradcheck_float64(op: Op) -> None:
    shape = tuple(min(n, 4) for n in op.shape)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op(t, 0.4, seed=9), (x,))
    assert torch.autograd.gradgradcheck(lambda t: op(t, 0.4, seed=9), (x,))


def test_gradient_is_the_mask_over_keep(op: Op) -> None:
    x = torch.randn(op.shape, requires_grad=True)
    y = op(x, 0.3, seed=2)
    y.backward(torch.ones_like(y))
    expected = (y != 0).float() / 0.7
    torch.testing.assert_close(x.grad, expected)


def test_backward_saves_at_most_a_small_mask(op: Op) -> None:
    # Small masks are saved (the saved-mask path), never more than SAVED_MASK_BELOW elements;
    # with that path closed, nothing input-sized is saved (tests/functional/test_paths.py).
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randn(op.shape, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        op(x, 0.5, seed=1).sum().backward()
    assert sum(saved) <= max(SAVED_MASK_BELOW * 4, 1024)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_match_float32_rounded_once(op: Op, dtype: torch.dtype) -> None:
    x = torch.randn(op.shape).to(dtype)
    y = op(x, 0.3, seed=3)
    assert y.dtype == dtype
    expected = op(x.float(), 0.3, seed=3).to(dtype)
    if dtype == torch.float64:
        expected = op(x, 0.3, seed=3)
    assert torch.equal(y, expected)


def test_non_contiguous_input_matches_contiguous(op: Op) -> None:
    x = torch.randn(op.shape[::-1]).permute(*reversed(range(len(op.shape))))
    assert not x.is_contiguous()
    assert torch.equal(op(x, 0.5, seed=8), op(x.contiguous(), 0.5, seed=8))


def test_empty_input(op: Op) -> None:
    x = torch.empty((0, *op.shape[1:]))
    assert op(x, 0.5, seed=0).shape == x.shape


def test_the_mask_multiplies_as_in_torch_nan_inf_and_signed_zero(op: Op) -> None:
    # torch's dropout multiplies by the scaled mask: a dropped NaN or inf gives NaN (a NaN is
    # never hidden by the draw) and a dropped negative gives -0.0. So does every dropkit op.
    x = torch.full(op.shape, float("inf"))
    x.view(-1)[::3] = float("nan")
    x.view(-1)[1::3] = -1.5
    y = op(x, 0.5, seed=6)
    dropped = op(torch.ones(op.shape), 0.5, seed=6) == 0
    assert dropped.any()
    assert (~dropped).any()
    negative = x == -1.5
    assert torch.isnan(y[dropped & ~negative]).all()
    zeros = y[dropped & negative]
    assert torch.equal(zeros, torch.zeros_like(zeros))
    assert torch.signbit(zeros).all()
    assert torch.equal(y[~dropped & negative], torch.full_like(y[~dropped & negative], -3.0))
    kept_rest = y[~dropped & ~negative]
    assert torch.equal(torch.isnan(kept_rest), torch.isnan(x[~dropped & ~negative]))
    assert torch.isinf(kept_rest[~torch.isnan(kept_rest)]).all()


def test_torch_dropout_multiplies_the_same_way() -> None:
    # The semantics above are torch's own, so dropkit stays a drop-in: checked against torch.
    torch.manual_seed(0)
    x = torch.tensor([float("inf"), -1.5] * 200)
    y = torch.nn.functional.dropout(x, 0.5)
    inf_dropped = torch.isinf(x) & ~torch.isinf(y)
    negative_dropped = (x == -1.5) & (y == 0)
    assert inf_dropped.any()
    assert negative_dropped.any()
    assert torch.isnan(y[inf_dropped]).all()
    assert torch.signbit(y[negative_dropped]).all()


@pytest.mark.parametrize("op", INPLACE_OPS, ids=[op.name for op in INPLACE_OPS])
def test_inplace_matches_out_of_place(op: Op) -> None:
    x = torch.randn(op.shape)
    expected = op(x, 0.5, seed=4)
    y = x.clone()
    out = op(y, 0.5, inplace=True, seed=4)
    assert out is y
    assert torch.equal(y, expected)


@pytest.mark.parametrize("op", INPLACE_OPS, ids=[op.name for op in INPLACE_OPS])
def test_inplace_gradient(op: Op) -> None:
    leaf = torch.randn(op.shape, requires_grad=True)
    y = op(leaf * 1.0, 0.5, inplace=True, seed=4)
    y.sum().backward()
    torch.testing.assert_close(leaf.grad, (y != 0).float() * 2.0)


@pytest.mark.parametrize("op", INPLACE_OPS, ids=[op.name for op in INPLACE_OPS])
def test_inplace_on_leaf_requiring_grad_raises_like_torch(op: Op) -> None:
    leaf = torch.randn(op.shape, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        op(leaf, 0.5, inplace=True)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_p_raises_value_error_naming_the_function(op: Op, bad) -> None:
    with pytest.raises(ValueError, match=rf"^{op.name}: expected p"):
        op(torch.ones(op.shape), bad)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_bool_inputs_raise_type_error(op: Op, dtype) -> None:
    with pytest.raises(TypeError, match=rf"^{op.name}: expected a floating-point tensor"):
        op(torch.ones(op.shape, dtype=dtype), 0.5)


def test_non_tensor_input_raises_type_error(op: Op) -> None:
    with pytest.raises(TypeError, match=op.name):
        op([1.0, 2.0], 0.5)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "1", True])
def test_bad_seed(op: Op, seed) -> None:
    with pytest.raises((ValueError, TypeError), match=op.name):
        op(torch.ones(op.shape), 0.5, seed=seed)


def test_default_seed_is_torch_randint_of_the_default_generator() -> None:
    # Eager mode draws what a compiled graph draws in-graph (``torch.randint(0, 2**62)``), so
    # a compiled model and its eager twin draw the same masks after one manual_seed.
    x = torch.ones(300)
    torch.manual_seed(21)
    drawn = [F.dropout(x, 0.5) for _ in range(3)]
    torch.manual_seed(21)
    seeds = [int(torch.randint(0, 2**62, (), dtype=torch.int64)) for _ in range(3)]
    for y, seed in zip(drawn, seeds, strict=True):
        assert torch.equal(y, F.dropout(x, 0.5, seed=seed))


def test_threads_draw_their_own_masks() -> None:
    import threading

    masks: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        values = [(F.dropout(torch.ones(64), 0.5) != 0).numpy().tobytes() for _ in range(100)]
        with lock:
            masks.extend(values)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 400 masks of 64 fair coins: a repeat has probability about 400**2 / 2**65.
    assert len(set(masks)) == 400


# From 1 - 2**-33 on, the 32-bit keep threshold rounds to 2**32: nothing can be kept.
@pytest.mark.parametrize(
    "p", [1.0 - 2**-33, 0.9999999998999999, 1.0 - 1e-10, 1.0 - 1e-11, 1.0 - 1e-15]
)
@pytest.mark.parametrize("seed", [0, None])
def test_p_within_2_33_of_one_gives_zeros(op: Op, p: float, seed: int | None) -> None:
    x = torch.randn(op.shape, requires_grad=True)
    y = op(x, p, seed=seed)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_p_just_under_that_keeps_about_one_in_2_32(op: Op) -> None:
    x = torch.ones(op.shape)
    assert torch.isfinite(op(x, 1.0 - 2**-32, seed=0)).all()


def test_p_as_a_0d_tensor_is_accepted(op: Op) -> None:
    x = torch.randn(op.shape)
    assert torch.equal(op(x, torch.tensor(0.3), seed=1), op(x, 0.3, seed=1))
    with pytest.raises(ValueError, match=rf"^{op.name}: expected p"):
        op(x, torch.tensor([0.3, 0.4]))


@pytest.mark.parametrize("bad", ["yes", None, 1, 0.0, torch.tensor(True)])
def test_training_must_be_a_bool_like_torch(op: Op, bad) -> None:
    with pytest.raises(TypeError):
        torch.nn.functional.dropout(torch.ones(3), 0.5, bad)  # torch's behaviour
    with pytest.raises(TypeError, match=rf"^{op.name}: expected training to be a bool"):
        op(torch.ones(op.shape), 0.5, training=bad)
