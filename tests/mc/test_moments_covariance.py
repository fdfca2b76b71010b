"""``predict(method="moments", covariance="lowrank")``: the low-rank covariance between units."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc
from dropkit import nn as dk_nn


def _mc_moments(model: nn.Module, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, ...]:
    """MC covariance [N, K, K] and the standard error of each entry."""
    s = mc.predict(model, x, samples, seed=0).samples.double()
    d = s - s.mean(0)
    prod = d.unsqueeze(-1) * d.unsqueeze(-2)  # [S, N, K, K]
    cov = prod.mean(0)
    se = ((prod - cov).square().mean(0) / samples).sqrt()
    return cov, se


def _exact_linear_chain(p: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Dropout -> Linear -> Dropout -> Linear on fixed inputs, and its exact covariance."""
    torch.manual_seed(0)
    first, second = nn.Linear(8, 6), nn.Linear(6, 3)
    model = nn.Sequential(dk_nn.Dropout(p), first, dk_nn.Dropout(p), second).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    w1, w2 = first.weight.double(), second.weight.double()
    r = p / (1 - p)
    # z = W1 (m1 x): Cov(z) = W1 diag(r x^2) W1^T. The second mask keeps the cross terms
    # (E[m] = 1, masks independent) and gives each unit (Var z + E[z]^2) / (1 - p) - E[z]^2.
    cov_z = torch.einsum("oi,ni,ki->nok", w1, r * x * x, w1)
    mean_z = first(x)
    inner = cov_z.clone()
    idx = torch.arange(6)
    inner[:, idx, idx] = (cov_z[:, idx, idx] + mean_z**2) / (1 - p) - mean_z**2
    return model, x, torch.einsum("ai,nij,bj->nab", w2, inner, w2)


def test_linear_chain_covariance_is_exact() -> None:
    model, x, exact = _exact_linear_chain(0.3)
    result = mc.predict(model, x, method="moments", seed=0, covariance="lowrank")
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.variance, torch.diagonal(exact, dim1=-2, dim2=-1))
    # The diagonal form misses the cross terms of the second layer.
    diagonal = mc.predict(model, x, method="moments", seed=0)
    gap = (diagonal.variance - torch.diagonal(exact, dim1=-2, dim2=-1)).abs().max()
    assert gap > 1e-2 * exact.diagonal(dim1=-2, dim2=-1).abs().max()
    assert diagonal.output_covariance is None
    assert diagonal.covariance == {}


def test_draws_have_the_propagated_covariance() -> None:
    model, x, exact = _exact_linear_chain(0.5)
    samples = 20_000
    s = mc.predict(
        model, x, samples, method="moments", seed=3, covariance="lowrank"
    ).samples.double()
    d = s - s.mean(0)
    prod = d.unsqueeze(-1) * d.unsqueeze(-2)
    cov = prod.mean(0)
    se = ((prod - cov).square().mean(0) / samples).sqrt()
    assert ((cov - exact).abs() <= 5 * se + 1e-9).all()


@pytest.mark.parametrize("kind", ["channel", "path"])
def test_shared_masks_covariance_is_exact(kind: str) -> None:
    """Channel dropout and DropPath: the units under one mask move together."""
    torch.manual_seed(1)
    p = 0.4
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    head = nn.Linear(16, 5).double()
    drop = dk_nn.Dropout2d(p) if kind == "channel" else dk_nn.DropPath(p)
    model = nn.Sequential(drop, nn.Flatten(), head)
    flat = x.flatten(1)
    # y = W (m * x): Cov = W S W^T, S_ij = r x_i x_j where units i, j share a mask.
    group = torch.arange(16) // 4 if kind == "channel" else torch.zeros(16, dtype=torch.long)
    same = (group[:, None] == group[None, :]).double()
    inner = p / (1 - p) * flat[:, :, None] * flat[:, None, :] * same
    exact = head.weight @ inner @ head.weight.T
    result = mc.predict(model, x, method="moments", seed=0, covariance="lowrank")
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)


def test_relu_network_against_monte_carlo() -> None:
    """dropout -> linear -> ReLU -> linear, against MC with S = 100,000.

    The ReLU's cross terms are first order (E[relu'] = Phi(m / s) on the factor; Mehler's
    higher terms are left out) and the pre-activations are sums of Bernoulli-masked inputs,
    not exactly Gaussian: the output variances are right in the median (within 3%), each
    within 15%, and the covariances within 0.1 of the product of standard deviations, beyond
    5 of MC's standard errors. The diagonal form, which has no cross terms, is off by more
    than 10% in the median (15% on this network).
    """
    torch.manual_seed(2)
    model = nn.Sequential(
        dk_nn.Dropout(0.3), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4)
    ).double()
    x = torch.randn(6, 32, dtype=torch.float64) + 0.5
    cov, se = _mc_moments(model, x, 100_000)
    var, var_se = cov.diagonal(dim1=-2, dim2=-1), se.diagonal(dim1=-2, dim2=-1)
    auto = mc.predict(model, x, method="moments", seed=0, covariance="lowrank")
    diagonal = mc.predict(model, x, method="moments", seed=0, covariance="diagonal")
    excess = ((auto.variance - var).abs() - 5 * var_se).clamp_min(0.0) / var
    assert excess.median() <= 0.03
    assert excess.max() <= 0.15
    assert auto.output_covariance is not None
    scale = var.sqrt()
    off = ~torch.eye(4, dtype=torch.bool)
    error = ((auto.output_covariance - cov).abs() - 5 * se).clamp_min(0.0)
    assert (error[:, off] <= 0.1 * (scale[:, :, None] * scale[:, None, :])[:, off]).all()
    assert ((diagonal.variance - var).abs() / var).median() > 0.1


def test_result_names_the_form_per_layer() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(5, 16),
        nn.ReLU(),
        dk_nn.Dropout(0.2),
        nn.Linear(16, 8),
        nn.ReLU(),
        dk_nn.Dropout(0.2),
        nn.Linear(8, 3),
    )
    forms = mc.predict(mlp, torch.randn(2, 5), method="moments", covariance="lowrank").covariance
    assert forms == {
        "3 (torch.nn.functional.linear)": "lowrank",
        "6 (torch.nn.functional.linear)": "lowrank",
    }
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        dk_nn.Dropout2d(0.2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    forms = mc.predict(
        cnn, torch.randn(2, 1, 4, 4), method="moments", covariance="lowrank"
    ).covariance
    assert forms["2 (dropkit.functional._channel.dropout2d)"] == "lowrank"
    assert forms["3 (torch.conv2d)"] == "diagonal: convolution maps"
    assert forms["5 (torch.nn.functional.linear)"] == "lowrank"
    # A layer whose factor would be too big stays diagonal, and says why.
    wide = nn.Sequential(dk_nn.Dropout(0.2), nn.Linear(300, 300), nn.Linear(300, 2))
    result = mc.predict(wide, torch.randn(2, 300), method="moments", covariance="lowrank")
    assert result.covariance["1 (torch.nn.functional.linear)"].startswith(
        "diagonal: a factor of 300 x 300 sources exceeds max_factor"
    )
    # The next layer is narrow: it carries the covariance its inputs create from there on.
    assert result.covariance["2 (torch.nn.functional.linear)"] == "lowrank"


def test_a_layer_diagonal_in_one_chunk_is_reported_diagonal() -> None:
    # The factor's width depends on the inputs (a zero input is no noise source): with
    # batch_size=, one chunk can fit max_factor and another not. The result must not name the
    # layer "lowrank" because the last chunk fitted.
    from dropkit.mc._moments import predict_moments

    torch.manual_seed(0)
    model = nn.Sequential(dk_nn.Dropout(0.5), nn.Linear(8, 4))
    dense = torch.randn(4, 8)  # 8 sources: 4 x 8 = 32 > 16
    sparse = torch.zeros(4, 8)
    sparse[:, :2] = torch.randn(4, 2)  # 2 sources: 4 x 2 = 8 <= 16
    x = torch.cat([dense, sparse])
    result = predict_moments(model, x, batch_size=4, covariance="lowrank", max_factor=16)
    form = result.covariance["1 (torch.nn.functional.linear)"]
    assert form.startswith("diagonal: a factor of 4 x 8 sources exceeds max_factor 16")
    alone = predict_moments(model, sparse, covariance="lowrank", max_factor=16)
    assert alone.covariance["1 (torch.nn.functional.linear)"] == "lowrank"


def test_an_op_without_a_covariance_rule_is_named() -> None:
    class Clamped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = dk_nn.Dropout(0.3)
            self.fc = nn.Linear(6, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(self.drop(x))
            return self.out(torch.cat([h[:, :2], h[:, 2:]], 1))

    result = mc.predict(Clamped(), torch.randn(3, 6), method="moments", covariance="lowrank")
    assert result.covariance["Clamped (torch.Tensor.__getitem__)"] == (
        "diagonal: no covariance rule for this op"
    )
    assert result.covariance["out (torch.nn.functional.linear)"] == "lowrank"


def test_bad_covariance_option() -> None:
    model = nn.Sequential(dk_nn.Dropout(0.3), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="expected covariance 'diagonal' or 'lowrank', got 'full'"):
        mc.predict(model, torch.randn(2, 4), method="moments", covariance="full")
    with pytest.raises(ValueError, match="covariance= is an option of method='moments'"):
        mc.predict(model, torch.randn(2, 4), covariance="diagonal")


def _masked_covariance(
    layer: nn.Linear, x: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and exact covariance of ``layer(m * x)``, ``m`` inverted dropout's mask."""
    w = layer.weight
    return layer(x), torch.einsum("oi,ni,ki->nok", w, p / (1 - p) * x * x, w)


def test_a_tensor_used_twice_shares_its_own_variance() -> None:
    """``h + W h`` with ``h = dropout(z)``: the skip and the branch carry the same noise.

    ``h``'s own variance (its mask's) becomes sources at the branch's linear map; the skip
    must hold the same sources, or Var(h + W h) loses 2 Cov(h, W h). Exact: the output is
    ``H (I + W) h``, linear in ``h``.
    """
    torch.manual_seed(4)
    p = 0.3

    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop0, self.inner = dk_nn.Dropout(p), nn.Linear(5, 6)
            self.drop, self.branch, self.head = dk_nn.Dropout(p), nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(self.inner(self.drop0(x)))
            return self.head(h + self.branch(h))

    model = Fork().double()
    x = torch.randn(3, 5, dtype=torch.float64)
    mean_z, cov_h = _masked_covariance(model.inner, x, p)
    idx = torch.arange(6)  # the second mask adds (Var z + E[z]^2) r on the diagonal
    cov_h[:, idx, idx] = (cov_h[:, idx, idx] + mean_z**2) / (1 - p) - mean_z**2
    lin = model.head.weight @ (torch.eye(6, dtype=torch.float64) + model.branch.weight)
    exact = lin @ cov_h @ lin.T
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)


class _PreNorm(nn.Module):
    """``x + dropout(W2 dropout(relu(W1 LN(x))))``, the benchmark's residual block."""

    def __init__(self, width: int, p: float) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = (
            nn.LayerNorm(width),
            nn.Linear(width, 2 * width),
            nn.Linear(2 * width, width),
        )
        self.drop1, self.drop2 = dk_nn.Dropout(p), dk_nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop2(self.fc2(self.drop1(torch.relu(self.fc1(self.norm(x))))))


def test_residual_layer_norm_network_against_monte_carlo() -> None:
    """Two pre-norm residual blocks, a final LayerNorm and a classifier, against S = 100,000.

    LayerNorm goes through its Jacobian, the normalization's own dependence on the input
    included (noise along the centered mean, which rescales the stream, leaves the output as
    it is), and a tensor used twice (the skip beside the block) shares its sources with the
    block. The ReLU is first order and the pre-activations not exactly Gaussian, so the check
    is statistical, beyond 5 of MC's standard errors: variances within 1% in the median and
    15% each, correlations within 0.06. On seeds 0-3 of this test the form meets them with
    medians 0.000-0.002, worst 0.00-0.13, correlations 0.005-0.054 off; with the statistics
    held fixed and the skip's share independent of the block (the form before), the medians
    were 0.024-0.044 and the correlations 0.08-0.22 off.
    """
    torch.manual_seed(0)
    width, p = 32, 0.1
    model = nn.Sequential(
        nn.Linear(5, width),
        _PreNorm(width, p),
        _PreNorm(width, p),
        nn.LayerNorm(width),
        nn.Linear(width, 3),
    ).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    cov, se = _mc_moments(model, x, 100_000)
    var, var_se = cov.diagonal(dim1=-2, dim2=-1), se.diagonal(dim1=-2, dim2=-1)
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert result.output_covariance is not None
    assert set(result.covariance.values()) == {"lowrank"}
    excess = ((result.variance - var).abs() - 5 * var_se).clamp_min(0.0) / var
    assert excess.median() <= 0.01
    assert excess.max() <= 0.15
    scale = var.sqrt()
    off = ~torch.eye(3, dtype=torch.bool)
    error = ((result.output_covariance - cov).abs() - 5 * se).clamp_min(0.0)
    assert (error[:, off] <= 0.06 * (scale[:, :, None] * scale[:, None, :])[:, off]).all()


class _SharedMask(nn.Module):
    """dropout -> linear -> a mask shared by groups of units -> linear."""

    def __init__(self, shared: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.drop, self.inner = dk_nn.Dropout(0.3), nn.Linear(5, 12)
        self.shared, self.shape, self.head = shared, shape, nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(self.drop(x)).view(-1, *self.shape)
        return self.head(self.shared(z).flatten(1))


# the layer, the shape it sees (channels first), whether it scales by 1 / (1 - p)
_SHARED = {
    "channel1d": lambda p: (dk_nn.Dropout1d(p), (3, 4), True),
    "channel2d": lambda p: (dk_nn.Dropout2d(p), (3, 2, 2), True),
    "path": lambda p: (dk_nn.DropPath(p), (12,), True),
    "path, not scaled by keep": lambda p: (dk_nn.DropPath(p, scale_by_keep=False), (12,), False),
}


@pytest.mark.parametrize("kind", list(_SHARED))
def test_shared_mask_on_a_factored_input_is_exact(kind: str) -> None:
    """A mask ``c`` shared by a group, on an input that already covaries (a factor):

    ``Cov(c x_i, c x_j) = E[c^2] Cov(x_i, x_j) + Var(c) E[x_i] E[x_j]`` within a group and
    ``E[c]^2 Cov(x_i, x_j)`` across groups. The form before left out ``Var(c) Cov(x_i, x_j)``
    within a group (and took E[c] = 1 without ``scale_by_keep``).
    """
    torch.manual_seed(5)
    p = 0.25
    shared, shape, scaled = _SHARED[kind](p)
    model = _SharedMask(shared, shape).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    mean, cov = _masked_covariance(model.inner, x, 0.3)
    scale = 1 / (1 - p) if scaled else 1.0
    mu, var_c = scale * (1 - p), scale * scale * p * (1 - p)
    group = torch.arange(12) // 4 if len(shape) > 1 else torch.zeros(12, dtype=torch.long)
    same = (group[:, None] == group[None, :]).double()
    inner = (mu * mu + var_c * same) * cov + var_c * same * mean[:, :, None] * mean[:, None, :]
    exact = model.head.weight @ inner @ model.head.weight.T
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)
    # and the sampler agrees with the closed form, within 5 of its standard errors
    mc_cov, se = _mc_moments(model, x, 100_000)
    assert ((mc_cov - exact).abs() <= 5 * se + 1e-12).all()


@pytest.mark.vision
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_timm_drop_path_on_a_residual_branch_against_monte_carlo(scale_by_keep: bool) -> None:
    """timm's ``DropPath``, converted, on ``z + drop_path(z)``: the branch's mask multiplies
    noise the skip shares. The propagated covariance is exact here; MC with S = 100,000
    agrees within 5 of its standard errors (the form before was 80-200 of them off)."""
    import dropkit

    timm = pytest.importorskip("zoo_models").import_timm()

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop, self.inner, self.head = (
                dk_nn.Dropout(0.3),
                nn.Linear(5, 12),
                nn.Linear(12, 3),
            )
            self.path = timm.layers.DropPath(0.25, scale_by_keep=scale_by_keep)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.inner(self.drop(x))
            return self.head(z + self.path(z))

    torch.manual_seed(5)
    model = dropkit.convert(Residual().double())
    x = torch.randn(3, 5, dtype=torch.float64)
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert result.output_covariance is not None
    assert set(result.covariance.values()) == {"lowrank"}
    cov, se = _mc_moments(model, x, 100_000)
    assert ((result.output_covariance - cov).abs() <= 5 * se + 1e-12).all()


def test_a_shared_mask_over_max_factor_stays_diagonal_and_says_so() -> None:
    # One source per channel and, per channel, the input's 5 sources again: 5 + 3 * 6 = 23
    # sources on 12 units, over a max_factor of 100.
    from dropkit.mc._moments import predict_moments

    torch.manual_seed(5)
    model = _SharedMask(dk_nn.Dropout1d(0.25), (3, 4)).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    result = predict_moments(model, x, covariance="lowrank", max_factor=100)
    [(where, form)] = [(k, v) for k, v in result.covariance.items() if k.startswith("shared ")]
    assert form == "diagonal: 23 sources exceed max_factor 100", where
    assert result.covariance["inner (torch.nn.functional.linear)"] == "lowrank"
    diagonal = mc.predict(model, x, method="moments")
    torch.testing.assert_close(result.variance, diagonal.variance)  # the diagonal form's


def test_a_conv_map_too_wide_to_complete_still_reaches_the_linear_map() -> None:
    """Element then channel dropout on a [8, 16, 16] map, flattened into a linear map: the
    map's own variance cannot become 2048 sources at the flatten (over max_factor), so it
    passes to the linear map, which makes it sources of its input. Exact."""
    torch.manual_seed(6)
    pe, pc = 0.2, 0.3
    head = nn.Linear(8 * 16 * 16, 3).double()
    model = nn.Sequential(dk_nn.Dropout(pe), dk_nn.Dropout2d(pc), nn.Flatten(), head)
    x = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    flat = x.flatten(1)
    rc, re = pc / (1 - pc), pe / (1 - pe)
    group = torch.arange(flat.shape[1]) // 256
    same = (group[:, None] == group[None, :]).double()
    inner = rc * same * flat[:, :, None] * flat[:, None, :]
    idx = torch.arange(flat.shape[1])
    inner[:, idx, idx] = ((1 + rc) * (1 + re) - 1) * flat * flat
    exact = head.weight @ inner @ head.weight.T
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert set(result.covariance.values()) == {"lowrank"}, result.covariance
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)


def test_a_map_used_twice_whose_own_variance_is_too_wide_is_named() -> None:
    """``h + relu(h)`` on a [8, 16, 16] map: ``h``'s own variance (2048 units) cannot become
    sources shared by both uses, so the sum is diagonal, and says why."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop, self.channel = dk_nn.Dropout(0.2), dk_nn.Dropout2d(0.3)
            self.head = nn.Linear(8 * 16 * 16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.channel(self.drop(x))
            return self.head((h + torch.relu(h)).flatten(1))

    result = mc.predict(Twice(), torch.randn(2, 8, 16, 16), method="moments", covariance="lowrank")
    assert result.covariance["Twice (torch.Tensor.add)"] == (
        "diagonal: an input used again, whose own variance of 2048 units x 8 sources exceeds "
        "max_factor 65536"
    )


@pytest.mark.parametrize("order", ["dropout first", "linear first", "two dropouts first"])
def test_a_dropout_input_used_again_is_tied_to_what_dropout_passed_on(order: str) -> None:
    """``y = dropout(h)`` and ``W h``: the element dropout hands ``h``'s own variance on inside
    ``y``'s, unnamed; the second use of ``h`` gets its covariance with the sources that became
    of it. Exact: ``Cov(y, h) = Cov(h)`` (``E[mask] = 1``), whichever use comes first, and
    through two dropouts in a row."""
    torch.manual_seed(7)
    p = 0.3

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop0, self.inner = dk_nn.Dropout(p), nn.Linear(5, 6)
            self.drop1, self.drop2 = dk_nn.Dropout(p), dk_nn.Dropout(p)
            self.drop3 = dk_nn.Dropout(p)
            self.branch, self.head = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop1(self.inner(self.drop0(x)))
            if order == "dropout first":
                y = self.drop2(h)
                return self.head(y + self.branch(h))
            if order == "two dropouts first":
                y = self.drop3(self.drop2(h))
                return self.head(y + self.branch(h))
            b = self.branch(h)
            return self.head(self.drop2(h) + b)

    model = Both().double()
    x = torch.randn(3, 5, dtype=torch.float64)
    mean_z, cov_h = _masked_covariance(model.inner, x, p)
    idx = torch.arange(6)
    cov_h[:, idx, idx] = (cov_h[:, idx, idx] + mean_z**2) / (1 - p) - mean_z**2
    cov_y = cov_h.clone()
    masks = 2 if order == "two dropouts first" else 1
    cov_y[:, idx, idx] = (cov_h[:, idx, idx] + mean_z**2) / (1 - p) ** masks - mean_z**2
    w = model.branch.weight
    inner = cov_y + w @ cov_h @ w.T + cov_h @ w.T + w @ cov_h
    exact = model.head.weight @ inner @ model.head.weight.T
    result = mc.predict(model, x, method="moments", covariance="lowrank")
    assert result.output_covariance is not None
    torch.testing.assert_close(result.output_covariance.double(), exact, rtol=1e-9, atol=1e-12)
