"""``compare(..., auto=True)`` from Python: the learned-rate runs start where the grid's do."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from dropkit.experiments import compare, load_dataset
from dropkit.experiments.train import TrainConfig, layer_rates, make_learned_model, make_model


def net(p: float) -> torch.nn.Module:
    layers = [torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(p)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, 2))


def blobs() -> tuple[TensorDataset, TensorDataset]:
    x = torch.randn(120, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    return TensorDataset(x[:80], y[:80]), TensorDataset(x[80:], y[80:])


def test_compare_with_auto_returns_the_learned_runs_last() -> None:
    results = compare(net, blobs, rates=(0.0,), seeds=2, epochs=2, auto=True)
    assert [(r.learned, r.seed) for r in results] == [(False, 0), (False, 1), (True, 0), (True, 1)]
    for run in results[2:]:
        assert len(run.layer_rates) == 1
        assert run.rate == run.layer_rates[0]  # the mean of one layer's rate
        assert len(run.history) == 2


def test_the_learned_model_starts_from_the_grids_weights_at_the_same_seed() -> None:
    data = load_dataset("synthetic")
    config = TrainConfig(hidden=(32, 16))
    torch.manual_seed(3)
    grid = make_model(config, data, 0.5)
    torch.manual_seed(3)
    learned = make_learned_model(config, data)
    weights = {k: v for k, v in learned.state_dict().items() if not k.endswith("p_logit")}
    assert weights.keys() == grid.state_dict().keys()
    for name, tensor in grid.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    assert [round(p, 6) for p in layer_rates(learned)] == [0.1, 0.1]
    # The paper's regularizer weights for a mean NLL: l**2 / N and 2 / N.
    n = len(data.y_train)
    drops = [m for m in learned.modules() if hasattr(m, "p_logit")]
    assert {(m.weight_regularizer, m.dropout_regularizer) for m in drops} == {(1e-4 / n, 2 / n)}


def test_with_early_stopping_the_learned_rates_are_the_best_epochs() -> None:
    # lr 0.3 overshoots: validation loss rises after the first epoch and the run stops.
    results = compare(
        net, blobs, rates=(0.0,), seeds=2, epochs=12, lr=0.3, early_stopping=1, auto=True
    )
    learned = [r for r in results if r.learned]
    assert all(r.epochs_run < 12 for r in learned)
    for run in learned:
        losses = [e.val_loss for e in run.history]
        best = run.history[losses.index(min(losses))]
        assert best is not run.history[-1]  # the case where keeping the best epoch matters
        assert run.layer_rates == best.layer_rates  # its weights and rates were kept
