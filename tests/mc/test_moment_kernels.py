"""The numba moment kernels against the plain-PyTorch reference (float32, CPU).

Ground truth is the reference's closed form in float64 on the same float32 inputs. Each
kernel's error is bounded by a few float32 epsilons times the sum of the magnitudes of the
closed form's terms (the rounding a float32 evaluation of those terms can make), and the
float32 reference is held to the same bound, so that the bound is the reference's accuracy and
not a tolerance fitted to the kernel. Inputs are seeded and include extreme standardized values
(|m / sd| far beyond the clamp at 9), zero and huge variances, and NaN.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit
from dropkit import nn as dk_nn
from dropkit.mc import predict
from dropkit.mc._moments._gaussian import dropout_moments, max_moments, relu_moments

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _kernels_on():  # type: ignore[no-untyped-def]
    """The kernels run (whatever DROPKIT_BACKEND says); ``_reference`` switches them off."""
    with dropkit.backend("numba"):
        yield


EPS = torch.finfo(torch.float32).eps
BOUND = 16 * EPS  # a few roundings in each of a handful of terms


def _inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and variances over many scales, with the edge cases in the first rows."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, generator=g) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    v = torch.rand(n, generator=g) * 10.0 ** torch.randint(-6, 7, (n,), generator=g)
    edges_m = [0.0, 1.0, -1.0, 50.0, -50.0, 1e-3, -1e-3, 1e3, -1e3, 0.0, 3.0, -3.0, 9.5, -9.5]
    edges_v = [0.0, 0.0, 0.0, 0.0, 0.0, 1e6, 1e6, 1e-6, 1e-6, 1e12, 1.0, 1.0, 1.0, 1.0]
    m[: len(edges_m)] = torch.tensor(edges_m)
    v[: len(edges_v)] = torch.tensor(edges_v)
    return m, v


def _reference(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with dropkit.backend("reference"):
        return fn(*args, **kwargs)


def _phi_cdf(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi and Phi in float64, Phi by erfc: accurate to float64 in the lower tail too."""
    return torch.exp(-0.5 * z * z) / (2 * torch.pi) ** 0.5, 0.5 * torch.erfc(-z / 2**0.5)


def _relu_truth(m: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rectified Gaussian's closed form in float64 (z clamped to [-9, 9], as the rule)."""
    m, v = m.double(), v.double()
    sd = v.sqrt()
    z = torch.nan_to_num(m / sd, nan=0.0).clamp(-9, 9)
    pdf, cdf = _phi_cdf(z)
    a, b = m * cdf, sd * pdf
    var = cdf * v + m * (a * (1 - cdf) + b * (1 - 2 * cdf)) - b * b
    return a + b, var.clamp_min(0.0)


def test_relu_kernel_is_as_accurate_as_the_reference() -> None:
    """Within a few epsilons of |m| + sd (mean) and its square (variance): the rounding of
    Phi's absolute error through the terms, which the float32 reference makes too."""
    m, v = _inputs(20_000, seed=1)
    truth_mean, truth_var = _relu_truth(m, v)
    mean, var = relu_moments(m, v)
    ref_mean, ref_var = _reference(relu_moments, m, v)
    scale = m.double().abs() + v.double().sqrt()
    for got_mean, got_var in ((mean, var), (ref_mean, ref_var)):  # the reference: a fair bound
        assert got_mean.dtype == got_var.dtype == torch.float32
        assert bool(((got_mean.double() - truth_mean).abs() <= BOUND * scale).all())
        assert bool(((got_var.double() - truth_var).abs() <= BOUND * scale * scale).all())
    assert bool((var >= 0).all())
    # Zero variance is the deterministic ReLU; where m = v = 0 the output is 0 with variance 0.
    assert mean[:5].tolist() == pytest.approx([0.0, 1.0, 0.0, 50.0, 0.0], abs=1e-15)
    assert var[:5].tolist() == pytest.approx([0.0] * 5, abs=1e-12)


def test_relu_kernel_is_close_in_the_moderate_range() -> None:
    """Where |z| <= 3 little cancels: a relative bound that any wrong term breaks. At z = -3
    the variance is 0.0045 v out of terms of about v (condition about 200, so 400 eps); the
    float32 reference is 7e-4 off there, this kernel's float32 Phi is relatively accurate."""
    g = torch.Generator().manual_seed(2)
    sd = torch.rand(10_000, generator=g) * 4 + 0.1
    m = (torch.rand(10_000, generator=g) * 6 - 3) * sd
    v = sd * sd
    truth_mean, truth_var = _relu_truth(m, v)
    mean, var = relu_moments(m, v)
    torch.testing.assert_close(mean.double(), truth_mean, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(var.double(), truth_var, rtol=400 * EPS, atol=0.0)


def test_relu_kernel_mean_is_positive_in_the_lower_tail() -> None:
    """E[relu(x)] > 0 for v > 0: the kernel's Phi keeps its relative accuracy down to z = -9,
    so the mean, a cancelling sum there (m Phi + sd phi), stays positive and close."""
    z = torch.linspace(-9.0, -3.0, 1000)
    m, v = z * 2.0, torch.full((1000,), 4.0)
    mean, _ = relu_moments(m, v)
    truth_mean, _ = _relu_truth(m, v)
    assert bool((mean > 0).all())
    rel = (mean.double() - truth_mean).abs() / truth_mean
    assert float(rel.max()) < 100 * 81 * EPS  # the sum's condition number is about z**2


def test_relu_kernel_keeps_nan() -> None:
    m = torch.tensor([float("nan"), 1.0, float("nan")])
    v = torch.tensor([1.0, float("nan"), float("nan")])
    mean, var = relu_moments(m, v)
    ref_mean, ref_var = _reference(relu_moments, m, v)
    assert torch.isnan(mean).tolist() == torch.isnan(ref_mean).tolist() == [True, True, True]
    assert torch.isnan(var).tolist() == torch.isnan(ref_var).tolist() == [True, True, True]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("with_var", [True, False])
def test_dropout_kernel_matches_the_reference(p: float, with_var: bool) -> None:
    m, v = _inputs(5_000, seed=3)
    variance = v if with_var else None
    for scale in (1.0 / (1.0 - p), 1.0):  # scale_by_keep on and off
        mean, var = dropout_moments(m, variance, p, scale, 0.0, 0.0)
        ref_mean, ref_var = _reference(dropout_moments, m, variance, p, scale, 0.0, 0.0)
        torch.testing.assert_close(mean, ref_mean, rtol=2 * EPS, atol=0.0)
        torch.testing.assert_close(var, ref_var, rtol=4 * EPS, atol=0.0)
        assert mean.data_ptr() != m.data_ptr()  # a new tensor, as the reference's


def _max_truth(m1, v1, m2, v2):  # type: ignore[no-untyped-def]
    """Clark's closed form in float64 (z clamped to [-9, 9], as the rule)."""
    m1, v1, m2, v2 = (t.double() for t in (m1, v1, m2, v2))
    d, theta = m1 - m2, (v1 + v2).sqrt()
    z = torch.nan_to_num(d / theta, nan=0.0).clamp(-9, 9)
    pdf, cdf = _phi_cdf(z)
    b, tail = theta * pdf, 1 - cdf
    var = cdf * v1 + tail * v2 + d * (d * cdf * tail - b * (cdf - tail)) - b * b
    return m2 + d * cdf + b, var.clamp_min(0.0)


@pytest.mark.parametrize("absent", [False, True])
def test_max_kernel_is_as_accurate_as_the_reference(absent: bool) -> None:
    m1, v1 = _inputs(20_000, seed=4)
    m2, v2 = _inputs(20_000, seed=5)
    m2[1::2] = m1[1::2] + torch.randn(10_000, generator=torch.Generator().manual_seed(6))
    if absent:  # padding: -inf is "no element" on either side
        m1[100:110] = -torch.inf
        m2[110:120] = -torch.inf
        v1[100:110] = 0.0
        v2[110:120] = 0.0
    args = (m1, v1, m2, v2)
    truth = _max_truth(*args)
    got = max_moments(*args, absent=absent)
    ref = _reference(max_moments, *args, absent=absent)
    scale = m1.double().abs() + m2.double().abs() + (v1.double() + v2.double()).sqrt()
    present = torch.isfinite(m1) & torch.isfinite(m2)
    for mean, var in (got, ref):  # the reference: a fair bound
        assert bool(((mean.double() - truth[0]).abs() <= BOUND * scale)[present].all())
        assert bool(((var.double() - truth[1]).abs() <= BOUND * scale * scale)[present].all())
    for k in range(2):
        assert torch.equal(got[k][~present], ref[k][~present])  # the other operand, as it is


def test_max_kernel_takes_strided_views() -> None:
    """Max pooling hands it window views (strided): the kernel reads them as the reference."""
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(7))
    xv = torch.rand(3, 4, 6, 6, generator=torch.Generator().manual_seed(8))
    views = (x[..., ::2, ::2], xv[..., ::2, ::2], x[..., 1::2, ::2], xv[..., 1::2, ::2])
    got = max_moments(*views)
    ref = _reference(max_moments, *views)
    for k in range(2):
        assert got[k].shape == (3, 4, 3, 3)
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)


def _models() -> list[tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 16), nn.ReLU(),
        dk_nn.Dropout(0.5), nn.Linear(16, 4),
    )  # fmt: skip
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.3),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Flatten(),
        nn.Linear(8 * 3 * 3, 4),
    )  # fmt: skip
    return [(mlp, (12,)), (cnn, (1, 8, 8))]


@pytest.mark.parametrize("which", [0, 1])
def test_predict_with_kernels_matches_the_reference_pass(which: int) -> None:
    model, shape = _models()[which]
    x = torch.randn(50, *shape, generator=torch.Generator().manual_seed(9))
    fast = predict(model, x, 4, method="moments", seed=0)
    with dropkit.backend("reference"):
        ref = predict(model, x, 4, method="moments", seed=0)
    torch.testing.assert_close(fast.mean, ref.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.variance, ref.variance, rtol=1e-4, atol=1e-6)
    assert bool((fast.variance > 0).all())


def test_kernels_on_several_threads_equal_one_thread() -> None:
    """Large tensors run in chunks on numba's threads: the same arithmetic, so the same bits."""
    m, v = _inputs(100_000, seed=10)  # above the serial threshold
    m2, v2 = _inputs(100_000, seed=11)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(
                (
                    *relu_moments(m, v),
                    *dropout_moments(m, v, 0.3, 1 / 0.7, 0.0, 0.0),
                    *max_moments(m, v, m2, v2),
                )
            )
    finally:
        torch.set_num_threads(threads)
    for one, several in zip(*results, strict=True):
        assert torch.equal(one, several)


def test_empty_and_scalar_tensors() -> None:
    for shape in ((0,), (3, 0), ()):
        m, v = torch.zeros(shape), torch.ones(shape)
        for got, ref in zip(relu_moments(m, v), _reference(relu_moments, m, v), strict=True):
            assert got.shape == ref.shape == shape
            torch.testing.assert_close(got, ref)


def test_a_weight_changed_between_calls_changes_the_moments() -> None:
    """Nothing derived from the weights outlives a call: an update in place (by the optimizer's
    no-grad ops or through ``.data``, which does not bump the version counter) is seen."""
    model, shape = _models()[0]
    x = torch.randn(20, *shape, generator=torch.Generator().manual_seed(12))
    first = predict(model, x, 2, method="moments", seed=0)
    with torch.no_grad():
        model[-1].weight.mul_(2.0)
    second = predict(model, x, 2, method="moments", seed=0)
    model[-1].weight.data.mul_(2.0)
    third = predict(model, x, 2, method="moments", seed=0)
    bias = model[-1].bias
    # The last layer's variance scales with the squared weights, its mean's weighted part with them.
    torch.testing.assert_close(second.variance, 4 * first.variance, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(third.variance, 16 * first.variance, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(third.mean - bias, 4 * (first.mean - bias), rtol=1e-5, atol=1e-6)


_SPECIAL = [0.0, 1.0, -1.0, 1e-40, -1e-40, 1e30, -1e30, 3e38, -3e38]
_SPECIAL += [float("inf"), -float("inf"), float("nan")]


def _agree(
    got: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...], atol: float = 1e-17
) -> None:
    """Equal NaN-ness and infinities, and close elsewhere (by default below 1e-17: both 0 to
    float32's resolution of the terms, which are at least 1 where the inputs are not
    subnormal)."""
    for g, r in zip(got, ref, strict=True):
        assert torch.isnan(g).tolist() == torch.isnan(r).tolist()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=atol, equal_nan=True)


def test_kernels_agree_with_the_reference_on_special_values() -> None:
    """Infinities, NaN, subnormal and float32's largest values, every pairing: a ReLU at
    -inf, or a mean of -1e30 with variance 0, must not come out -inf or -1e11 where the
    reference says NaN or 0."""
    pairs = torch.cartesian_prod(torch.tensor(_SPECIAL), torch.tensor([*_SPECIAL[:4], 3e38]))
    m, v = pairs[:, 0].contiguous(), pairs[:, 1].abs().contiguous()
    _agree(relu_moments(m, v), _reference(relu_moments, m, v))
    args = (0.3, 1 / 0.7, 0.0, 0.0)
    _agree(dropout_moments(m, v, *args), _reference(dropout_moments, m, v, *args))
    quads = torch.cartesian_prod(
        torch.tensor(_SPECIAL), torch.tensor([0.0, 1.0, 3e38]),
        torch.tensor(_SPECIAL), torch.tensor([0.0, 1.0, float("inf")]),
    )  # fmt: skip
    operands = [quads[:, k].contiguous() for k in range(4)]
    for absent in (False, True):
        got = max_moments(*operands, absent=absent)
        _agree(got, _reference(max_moments, *operands, absent=absent))


def test_fixed_inputs_give_the_exact_moments() -> None:
    """Variance 0: relu(m) and max(m1, m2) exactly, with variance 0, at every scale (z is
    clamped to -9 there, and m Phi(-9) is not the limit's term: it made the ReLU's mean of
    -1e30 -1.1e11 and the variance of a fixed -1e20 1.1e21)."""
    g = torch.Generator().manual_seed(13)
    # |m| >= 1e-10: far above the rule's sd floor sqrt(1e8 * tiny) = 1e-15, so z is clamped
    m = torch.randn(4000, generator=g).sign() * 10.0 ** torch.randint(-10, 31, (4000,), generator=g)
    zero = torch.zeros_like(m)
    mean, var = relu_moments(m, zero)
    assert torch.equal(mean, m.clamp_min(0.0))
    assert torch.equal(var, zero)
    mean, var = max_moments(m, zero, zero, zero)
    assert torch.equal(mean, m.clamp_min(0.0))
    assert torch.equal(var, zero)
    other = m.roll(1)
    mean, var = max_moments(m, zero, other, zero)
    # m2 + (m1 - m2) Phi: the larger to within the rounding of the difference (Clark's form,
    # the reference's too)
    bound = 2 * EPS * (m.abs() + other.abs())
    assert bool(((mean - torch.maximum(m, other)).abs() <= bound).all())
    assert torch.equal(var, zero)


@pytest.mark.parametrize(
    ("rule", "which"), [("relu", 0), ("relu", 1), ("dropout", 0), ("dropout", 1)]
    + [("max", k) for k in range(4)],
)  # fmt: skip
def test_an_input_that_needs_gradients_takes_the_reference(rule: str, which: int) -> None:
    """Any input, not only the first, that requires grad (grad mode on): the outputs are in
    the autograd graph, as the reference's; the kernel's outputs have no grad_fn. Under
    no_grad the kernel runs (the same numbers)."""
    g = torch.Generator().manual_seed(14)
    leaves = [torch.randn(64, generator=g), torch.rand(64, generator=g) + 0.1]
    leaves += [torch.randn(64, generator=g), torch.rand(64, generator=g) + 0.1]
    leaves[which].requires_grad_(True)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        if rule == "relu":
            return relu_moments(leaves[0], leaves[1])
        if rule == "dropout":
            return dropout_moments(leaves[0], leaves[1], 0.3, 1 / 0.7, 0.0, 0.0)
        return max_moments(*leaves)

    got = run()
    assert got[1].grad_fn is not None  # every variance depends on every input
    assert got[0].grad_fn is not None or (rule, which) == ("dropout", 1)
    with torch.no_grad():
        fast = run()
    for a, b in zip(got, fast, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-6)


def test_outputs_share_no_memory_with_the_inputs() -> None:
    """An in-place op on an output (a later rule's, or the caller's) leaves the inputs as
    they were: dropout at p = 0 and scale 1 copies its mean, and max pooling's contiguous
    windows are read, not returned."""
    g = torch.Generator().manual_seed(15)
    m, v = torch.randn(3000, generator=g), torch.rand(3000, generator=g)
    m2, v2 = torch.randn(3000, generator=g), torch.rand(3000, generator=g)
    before = [t.clone() for t in (m, v, m2, v2)]
    outputs = [
        *relu_moments(m, v),
        *dropout_moments(m, v, 0.0, 1.0, 0.0, 0.0),
        *dropout_moments(m, None, 0.0, 1.0, 0.0, 0.0),
        *max_moments(m, v, m2, v2),
    ]
    for out in outputs:
        out.add_(1.0)
    for t, b in zip((m, v, m2, v2), before, strict=True):
        assert torch.equal(t, b)


def test_strided_broadcast_and_expanded_inputs_match_the_reference() -> None:
    """Transposed, sliced, stride-0 and broadcast inputs: the kernels read them as the
    reference does (or leave them to it)."""
    g = torch.Generator().manual_seed(16)
    m, v = torch.randn(40, 30, generator=g), torch.rand(40, 30, generator=g)
    row = torch.rand(30, generator=g)
    cases = [
        (m.t(), v.t()),
        (m[:, ::3], v[:, ::3]),
        (m[:1].expand(40, 30), v),
        (m, row.expand(40, 30)),
        (m, row),  # broadcast
    ]
    for a, b in cases:
        args = (0.2, 1 / 0.8, 0.0, 0.0)
        if b.shape == a.shape:  # the reference's ReLU and dropout take no broadcast variance
            _agree(relu_moments(a, b), _reference(relu_moments, a, b), 1e-6)
            _agree(dropout_moments(a, b, *args), _reference(dropout_moments, a, b, *args), 1e-6)
        m_o, v_o = torch.randn(a.shape, generator=g), torch.rand(a.shape, generator=g)
        _agree(max_moments(a, b, m_o, v_o), _reference(max_moments, a, b, m_o, v_o), 1e-6)
        _agree(max_moments(m_o, v_o, a, b), _reference(max_moments, m_o, v_o, a, b), 1e-6)


@pytest.mark.parametrize(
    ("pool", "shape"),
    [
        (nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 9, 9)),
        (nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True), (2, 7, 8)),
        (nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), (3, 10)),
        (nn.MaxPool3d(2, stride=2, padding=1, dilation=1, ceil_mode=True), (2, 5, 5, 5)),
        (nn.MaxPool2d(2, dilation=3), (2, 8, 8)),
    ],
    ids=["padded-dilated-ceil", "rect-ceil", "1d-ceil", "3d-padded", "dilated"],
)
def test_max_pooling_windows_match_the_reference_pass(pool: nn.Module, shape: tuple) -> None:
    """Padded (-inf, ``absent``), dilated and ceil_mode windows through the kernel against the
    reference, and the means against Monte Carlo's ordering: each output at least its mean
    input's largest element is not asserted (Clark's is an approximation), only the pass."""
    torch.manual_seed(17)
    conv = nn.Conv3d if len(shape) == 4 else nn.Conv2d if len(shape) == 3 else nn.Conv1d
    model = nn.Sequential(conv(shape[0], 3, 1), nn.ReLU(), nn.Dropout(0.4), pool, nn.Flatten())
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(18))
    fast = predict(model, x, 2, method="moments", seed=0)
    with dropkit.backend("reference"):
        ref = predict(model, x, 2, method="moments", seed=0)
    assert bool(torch.isfinite(fast.mean).all() and torch.isfinite(fast.variance).all())
    torch.testing.assert_close(fast.mean, ref.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.variance, ref.variance, rtol=1e-4, atol=1e-6)


def test_the_reference_backend_runs_the_torch_formulas() -> None:
    """``dropkit.backend("reference")`` (every comparison above runs under it) must reach the
    torch formulas: at m = -8, v = 1 their float32 ndtr is 0, so the ReLU's mean is phi(8)
    = 5.05e-15, where the kernel's Phi gives the exact 7.55e-17 (mpmath: 7.5502624e-17)."""
    m, v = torch.tensor([-8.0]), torch.tensor([1.0])
    fast, _ = relu_moments(m, v)
    ref, _ = _reference(relu_moments, m, v)
    pdf = float(torch.exp(torch.tensor(-32.0, dtype=torch.float64))) / (2 * torch.pi) ** 0.5
    assert float(ref) == pytest.approx(pdf, rel=1e-5, abs=0)
    assert float(fast) == pytest.approx(7.5502624e-17, rel=1e-4, abs=0)
