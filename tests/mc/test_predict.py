"""predict: shapes, analytic moments, shared prefix == replication, seeds, scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import nn as dk_nn
from dropkit.mc import predict


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout2d(0.25),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.ReLU(),
        dk_nn.Dropout(0.5),
        nn.Linear(32, 5),
    ).eval()


class Skip(nn.Module):
    """A skip connection across the first dropout: h is computed before it and used after."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(self.drop(h) + h)


def test_shapes_and_probabilities() -> None:
    result = predict(_cnn(), torch.randn(7, 3, 8, 8), samples=11, seed=0)
    assert result.samples.shape == (11, 7, 5)
    assert result.strategy == "shared-prefix"
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(7))
    torch.testing.assert_close(result.probs, torch.softmax(result.samples, -1).mean(0))
    assert not torch.allclose(result.probs, torch.softmax(result.samples.mean(0), -1))
    for score in (result.predictive_entropy, result.expected_entropy, result.mutual_information):
        assert score.shape == (7,)
        assert (score >= 0).all()
    assert (result.predictive_entropy >= result.expected_entropy - 1e-6).all()
    assert ((result.variation_ratio >= 0) & (result.variation_ratio < 1)).all()
    assert result.std.shape == (7, 5)


@pytest.mark.parametrize("model_fn", [_cnn, Skip])
def test_shared_prefix_equals_replicating_the_input(model_fn) -> None:
    model = model_fn().eval()
    x = torch.randn(6, 3, 8, 8) if model_fn is _cnn else torch.randn(6, 6)
    shared = predict(model, x, samples=9, seed=3)
    replicated = predict(model, x, samples=9, seed=3, share_prefix=False)
    assert shared.strategy == "shared-prefix"
    assert replicated.strategy == "replicate"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-5, atol=1e-6)


def test_single_dropout_on_a_constant_gives_the_analytic_moments() -> None:
    p, value = 0.3, 2.0
    result = predict(nn.Dropout(p), torch.full((1, 400), value), samples=500, seed=1)
    samples = result.samples.flatten()
    # Each sample is value / (1-p) with probability 1-p, else 0.
    mean_se = value * (p / (1 - p)) ** 0.5 / samples.numel() ** 0.5
    assert abs(samples.mean().item() - value) < 5 * mean_se
    expected_var = value**2 * p / (1 - p)
    assert abs(result.variance.mean().item() - expected_var) < 0.05 * expected_var
    assert result.mean.shape == (1, 400)


def test_seed_reproduces_and_leaves_the_global_rng_alone() -> None:
    model, x = _cnn(), torch.randn(4, 3, 8, 8)
    state = torch.get_rng_state()
    a = predict(model, x, samples=5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.samples, predict(model, x, samples=5, seed=7).samples)
    assert not torch.equal(a.samples, predict(model, x, samples=5, seed=8).samples)


def test_batch_size_bounds_the_chunk() -> None:
    model, x = _cnn(), torch.randn(10, 3, 8, 8)
    seen = []
    model[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    result = predict(model, x, samples=4, batch_size=3, seed=0)
    assert result.samples.shape == (4, 10, 5)
    assert max(seen) == 3  # conv runs before the first dropout: never on more than a chunk
    assert seen[-1] == 1


def test_shapes_read_after_the_first_dropout_follow_the_replication() -> None:
    class Flatten(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x).reshape(x.shape[0], -1)  # x.shape read after the dropout

    result = predict(Flatten(), torch.randn(3, 2, 2), samples=2, seed=0)
    assert result.strategy == "shared-prefix"
    assert result.samples.shape == (2, 3, 4)


def test_unshareable_models_fall_back_and_say_why() -> None:
    class EarlyBatchSize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]  # read before the first dropout: a plain int
            return self.drop(x).reshape(n, -1)

    result = predict(EarlyBatchSize(), torch.randn(3, 4), samples=2, seed=0)
    assert result.strategy.startswith("replicate (shared prefix not possible")
    assert result.samples.shape == (2, 3, 4)
    replicated = predict(EarlyBatchSize(), torch.randn(3, 4), samples=2, seed=0, share_prefix=False)
    assert replicated.samples.shape == (2, 3, 4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="samples to be a positive int"):
        predict(_cnn(), torch.randn(2, 3, 8, 8), samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        predict(_cnn(), torch.randn(2, 3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match=r"nothing stochastic ran .* of Linear") as error:
        predict(nn.Linear(3, 3), torch.randn(2, 3))
    assert "require_dropout" not in str(error.value)
    with pytest.raises(TypeError, match="expected inputs to be a tensor"):
        predict(_cnn(), "x")  # type: ignore[arg-type]


def test_batchnorm_statistics_are_untouched() -> None:
    model = _cnn()
    before = model[1].running_mean.clone()
    predict(model, torch.randn(8, 3, 8, 8) * 5 + 3, samples=4, seed=0)
    assert torch.equal(model[1].running_mean, before)


@pytest.mark.parametrize("first", [nn.Dropout(0.5, inplace=True), dk_nn.Dropout(0.5, inplace=True)])
def test_an_in_place_dropout_never_writes_into_the_callers_input(first: nn.Module) -> None:
    # The first call under MC probes the model in train mode; the probe works on copies.
    model = nn.Sequential(first, nn.Linear(8, 3)).eval()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    result = predict(model, x, samples=8, seed=0)
    assert torch.equal(x, before)
    assert result.samples.std(0).gt(0).all()


# ---------------------------------------------------------------- samples in groups of passes


class _CountPasses(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.rows.append(out.shape[0])
        return out


@pytest.mark.parametrize("model_fn", [_cnn, Skip])
def test_groups_of_passes_equal_replication_and_one_pass_distribution(
    model_fn, monkeypatch
) -> None:
    # A budget that holds 4 samples of the first dropout's input: 9 samples run as 4 + 4 + 1,
    # on both strategies alike, so they still give the same samples for a seed.
    x = torch.randn(6, 3, 8, 8) if model_fn is _cnn else torch.randn(6, 6)
    first_numel = 6 * 8 * 4 * 4 if model_fn is _cnn else 6 * 6
    monkeypatch.setattr("dropkit.mc._sampler.REPLICATED_ELEMENTS", 4 * first_numel + 1)
    monkeypatch.setattr("dropkit.mc._sampler.PREFIX_SHARE_ABOVE", 10**6)  # call any prefix cheap
    model = _CountPasses(model_fn().eval())
    shared = predict(model, x, samples=9, seed=3)
    shared_rows = list(model.rows[-3:])
    replicated = predict(model, x, samples=9, seed=3, share_prefix=False)
    assert shared.samples.shape[:2] == (9, 6)
    assert shared_rows == [4 * 6, 4 * 6, 1 * 6]
    assert model.rows[-3:] == [4 * 6, 4 * 6, 1 * 6]
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-5, atol=1e-6)
    again = predict(model, x, samples=9, seed=3)
    assert torch.equal(again.samples, shared.samples)
    # every sample has its own masks: no two samples of an input are equal
    flat = shared.samples.flatten(2)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(9) for j in range(i + 1, 9))


def test_a_small_first_activation_runs_all_samples_in_one_pass() -> None:
    model = _CountPasses(_cnn())
    predict(model, torch.randn(6, 3, 8, 8), samples=9, seed=3)
    assert model.rows[-1] == 9 * 6


def test_an_expensive_prefix_is_shared_by_all_samples_in_one_pass(monkeypatch) -> None:
    # The cnn's convolutions produce far more than its first dropout's input: even with a
    # budget that holds one sample, all samples run in one pass over the shared prefix.
    monkeypatch.setattr("dropkit.mc._sampler.REPLICATED_ELEMENTS", 1)
    model = _CountPasses(_cnn())
    predict(model, torch.randn(6, 3, 8, 8), samples=9, seed=3)
    assert model.rows[-1] == 9 * 6
