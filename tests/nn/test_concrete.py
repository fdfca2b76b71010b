"""Concrete dropout layers: the learned rate, the regularizer, ``concrete``, mc and moments."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import dropkit
from dropkit import mc
from dropkit import nn as dk_nn
from dropkit.functional._concrete import relaxed_moments

LAYERS = {
    dk_nn.ConcreteDropout: (5, 12),
    dk_nn.ConcreteDropout1d: (5, 3, 7),
    dk_nn.ConcreteDropout2d: (5, 3, 4, 4),
    dk_nn.ConcreteDropout3d: (5, 3, 2, 2, 2),
}


def _mlp(p: float = 0.2) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(p),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(p),
        torch.nn.Linear(32, 1),
    )


@pytest.mark.parametrize("cls", LAYERS)
def test_rate_is_the_init_and_learned_by_backward(cls: type[torch.nn.Module]) -> None:
    layer = cls(0.25, weight_regularizer=0)
    assert math.isclose(layer.p, 0.25, rel_tol=1e-6)
    x = torch.randn(LAYERS[cls])
    (layer(x) * torch.randn_like(x)).sum().backward()
    assert layer.p_logit.grad is not None
    assert float(layer.p_logit.grad) != 0.0
    assert dropkit.layer_spec(layer) is not None
    assert [p for _, _, p in dropkit.dropout_layers(torch.nn.Sequential(layer))] == [layer.p]


@pytest.mark.parametrize("cls", LAYERS)
def test_eval_is_the_identity(cls: type[torch.nn.Module]) -> None:
    x = torch.randn(LAYERS[cls])
    assert cls().eval()(x) is x


def test_bounds_keep_the_rate_inside() -> None:
    layer = dk_nn.ConcreteDropout(0.2, bounds=(0.05, 0.5), weight_regularizer=0)
    assert math.isclose(layer.p, 0.2, rel_tol=1e-6)
    with torch.no_grad():
        layer.p_logit.fill_(50.0)
    assert layer.p <= 0.5
    with torch.no_grad():
        layer.p_logit.fill_(-50.0)
    assert layer.p >= 0.05
    assert "bounds=(0.05, 0.5)" in repr(layer)


def test_the_rate_cannot_be_set() -> None:
    with pytest.raises(AttributeError, match="is learned"):
        dk_nn.ConcreteDropout().p = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_p": 0.0}, "strictly inside the bounds"),
        ({"init_p": 0.6, "bounds": (0.0, 0.5)}, "strictly inside the bounds"),
        ({"bounds": (0.5, 0.2)}, "expected bounds"),
        ({"temperature": -1.0}, "temperature > 0"),
        ({"weight_regularizer": -1.0}, "weight_regularizer >= 0"),
        ({"feeds": torch.ones(3)}, "expected an nn.Module"),
    ],
)
def test_bad_settings_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        dk_nn.ConcreteDropout(**kwargs)  # type: ignore[arg-type]


def test_regularization_is_the_papers_formula() -> None:
    fc = torch.nn.Linear(6, 3)
    layer = dk_nn.ConcreteDropout(0.3, weight_regularizer=1e-2, dropout_regularizer=1e-3, feeds=fc)
    layer(torch.randn(2, 6))
    p = 0.3
    squares = float(fc.weight.detach().square().sum() + fc.bias.detach().square().sum())
    expected = 1e-2 * squares / (1 - p) + 1e-3 * 6 * (p * math.log(p) + (1 - p) * math.log(1 - p))
    assert math.isclose(layer.regularization().item(), expected, rel_tol=1e-5)
    # the gradient reaches both the rate and the weights it feeds
    layer.regularization().backward()
    assert fc.weight.grad is not None
    assert layer.p_logit.grad is not None


def test_channel_layers_count_channels() -> None:
    conv = torch.nn.Conv2d(3, 2, 1)
    layer = dk_nn.ConcreteDropout2d(0.4, weight_regularizer=0, dropout_regularizer=1.0, feeds=conv)
    layer(torch.randn(2, 3, 5, 5))
    assert layer.in_features == 3
    p = 0.4
    assert math.isclose(
        layer.regularization().item(),
        3 * (p * math.log(p) + (1 - p) * math.log(1 - p)),
        rel_tol=1e-5,
    )


def test_regularization_needs_the_fed_layer_and_the_input_dimension() -> None:
    with pytest.raises(ValueError, match="pass feeds="):
        dk_nn.ConcreteDropout().regularization()
    with pytest.raises(ValueError, match="run a training forward first"):
        dk_nn.ConcreteDropout(weight_regularizer=0).regularization()
    assert dk_nn.ConcreteDropout(weight_regularizer=0, in_features=4).regularization().item() < 0


def test_model_regularization_sums_the_layers() -> None:
    model = dropkit.concrete(_mlp())
    model(torch.randn(3, 4))
    expected = model[2].regularization() + model[5].regularization()
    torch.testing.assert_close(dropkit.regularization(model), expected)
    with pytest.raises(ValueError, match="has no concrete dropout layer"):
        dropkit.regularization(_mlp())


def test_concrete_converts_a_copy_and_finds_the_fed_layers() -> None:
    model = _mlp(0.3)
    learned = dropkit.concrete(model)
    assert isinstance(model[2], torch.nn.Dropout)  # the original is untouched
    assert isinstance(learned[2], dk_nn.ConcreteDropout)
    assert learned[2].feeds is learned[3]
    assert learned[5].feeds is learned[6]
    assert math.isclose(learned[2].p, 0.3, rel_tol=1e-6)
    assert "2.p_logit" in learned.state_dict()
    # the reference is not a submodule: each Linear once in the module tree
    assert sum(isinstance(m, torch.nn.Linear) for m in learned.modules()) == 3
    copied = copy.deepcopy(learned)
    assert copied[2].feeds is copied[3]


def test_concrete_maps_channel_dropout_and_nested_blocks() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.Dropout2d(0.2),
        torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)),
    )
    learned = dropkit.concrete(model, init_p=0.1)
    assert type(learned[1]) is dk_nn.ConcreteDropout2d
    assert learned[1].feeds is learned[2][1]
    assert math.isclose(learned[1].p, 0.1, rel_tol=1e-6)


class _Custom(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.drop = torch.nn.Dropout(0.2)
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def test_concrete_outside_a_sequential_needs_feeds() -> None:
    with pytest.raises(ValueError, match=r"cannot tell which layer 'drop'.*feeds=\{'drop'"):
        dropkit.concrete(_Custom())
    learned = dropkit.concrete(_Custom(), feeds={"drop": "fc2"})
    assert learned.drop.feeds is learned.fc2
    assert dropkit.concrete(_Custom(), weight_regularizer=0).drop.feeds is None
    with pytest.raises(ValueError, match="no module of the model"):
        dropkit.concrete(_Custom(), feeds={"drop": "fc9"})
    last = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    with pytest.raises(ValueError, match="no module with parameters follows it"):
        dropkit.concrete(last)
    with pytest.raises(ValueError, match="no element or channel dropout"):
        dropkit.concrete(torch.nn.Linear(2, 2))


def test_training_step_moves_the_rate() -> None:
    model = dropkit.concrete(_mlp())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model[2].p
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for _ in range(5):
        optimizer.zero_grad()
        loss = (model(x) - y).square().mean() + dropkit.regularization(model)
        loss.backward()
        optimizer.step()
    assert model[2].p != before


def test_mc_predict_uses_the_learned_rate_and_eval_does_not() -> None:
    model = dropkit.concrete(_mlp(0.3)).eval()
    x = torch.randn(6, 4)
    assert torch.equal(model(x), model(x))
    result = mc.predict(model, x, samples=20, seed=0)
    assert bool((result.samples.std(0) > 0).all())
    assert not model[2].training  # flags restored


def test_moments_match_sampling_for_one_layer() -> None:
    # One concrete layer and a linear map: moment propagation is exact there.
    fc = torch.nn.Linear(16, 2)
    model = torch.nn.Sequential(dk_nn.ConcreteDropout(0.3, feeds=fc), fc).double().eval()
    x = torch.randn(3, 16, dtype=torch.float64)
    moments = mc.predict(model, x, method="moments")
    n = 4000
    sampled = mc.predict(model, x, samples=n, seed=1)
    sd = sampled.samples.std(0)
    assert bool(((moments.mean - sampled.samples.mean(0)).abs() < 5 * sd / math.sqrt(n)).all())
    # the variance's standard error: sd^2 * sqrt(2 / n) for a near-Gaussian sum of 16 terms
    rel = (moments.variance / sampled.samples.var(0) - 1).abs()
    assert bool((rel < 5 * math.sqrt(2 / n) + 0.05).all())
    mean_m, _ = relaxed_moments(0.3, 0.1)
    torch.testing.assert_close(moments.mean, fc(x * mean_m))


def test_concrete_converts_dropkits_own_layers_but_not_shaped_masks() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        dk_nn.Dropout(0.2),
        torch.nn.Linear(8, 8),
        dk_nn.Dropout(0.2, noise_shape=(1, 8)),  # one mask for the batch: no concrete equivalent
        torch.nn.Linear(8, 1),
    )
    with pytest.warns(UserWarning, match=r"left 3 \(Dropout\) as they were"):
        learned = dropkit.concrete(model)
    assert type(learned[1]) is dk_nn.ConcreteDropout
    assert type(learned[3]) is dk_nn.Dropout
