"""Runs trained together as one stacked model behave as separate runs."""

from __future__ import annotations

import pytest
import torch

from dropkit.experiments import TrainConfig, build_model, load_dataset
from dropkit.experiments.batched import StackedMLP, can_batch, train_batched
from dropkit.experiments.models import SlicedDropout, dropout_sites


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


CONFIG = TrainConfig(epochs=3, hidden=(32, 16))


def _curve(result):
    return [(e.train_loss, e.val_loss, e.val_acc) for e in result.history]


def test_stacked_model_starts_from_each_runs_own_weights(data) -> None:
    mlps = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        mlps.append(build_model("mlp", data.input_shape, 4, hidden=(32, 16)))
    stacked = StackedMLP(mlps, [torch.Generator(), torch.Generator()]).eval()
    x = data.x_val[:10]
    out = stacked(x.expand(2, *x.shape))
    for run, mlp in enumerate(mlps):
        torch.testing.assert_close(out[run], mlp.eval()(x))
    assert all(isinstance(site, SlicedDropout) for site in dropout_sites(stacked))


def test_batched_runs_are_deterministic_and_independent_of_grouping(data) -> None:
    together = train_batched(CONFIG, data, 0.3, [0, 1, 2])
    again = train_batched(CONFIG, data, 0.3, [0, 1, 2])
    alone = train_batched(CONFIG, data, 0.3, [1])
    assert [_curve(r) for r in together] == [_curve(r) for r in again]
    for a, b in zip(_curve(together[1]), _curve(alone[0]), strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert together[1].test_acc == pytest.approx(alone[0].test_acc, abs=1e-3)
    assert _curve(together[0]) != _curve(together[1])
    assert [r.seed for r in together] == [0, 1, 2]


def test_without_dropout_batched_equals_one_at_a_time(data) -> None:
    # With no dropout the only difference between the modes (where dropout seeds come from)
    # vanishes, so the stacked runs must match single runs.
    from dropkit.experiments.train import train

    stacked = train_batched(CONFIG, data, 0.0, [0, 1])
    for seed, result in zip((0, 1), stacked, strict=True):
        single = train(CONFIG, data, 0.0, seed)
        for a, b in zip(_curve(result), _curve(single), strict=True):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_batched_dropout_is_on_and_rates_follow_schedules(data) -> None:
    config = TrainConfig(epochs=4, hidden=(32,), schedule="late", schedule_epochs=2)
    result = train_batched(config, data, 0.5, [0])[0]
    assert [e.rate for e in result.history] == [0.0, 0.0, 0.5, 0.5]
    # Dropout makes fitting the training set harder: higher training loss, same seed.
    long = TrainConfig(epochs=8, hidden=(64,))
    with_dropout = train_batched(long, data, 0.5, [0])[0]
    without = train_batched(long, data, 0.0, [0])[0]
    assert with_dropout.history[-1].train_loss > without.history[-1].train_loss + 0.02


def test_only_mlps_without_early_stopping_batch(data) -> None:
    assert can_batch(TrainConfig())
    assert not can_batch(TrainConfig(model="cnn"))
    assert not can_batch(TrainConfig(early_stopping=5))
    with pytest.raises(ValueError, match="only the mlp model"):
        train_batched(TrainConfig(model="cnn"), data, 0.1, [0])


class _Stop(Exception):
    """Stands for Ctrl-C in the middle of the runs."""


def test_interrupted_batched_runs_resume_with_the_same_numbers(data, tmp_path) -> None:
    whole = train_batched(CONFIG, data, 0.3, [0, 1])
    state = tmp_path / "state.pt"

    def stop(metrics) -> None:
        if metrics.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train_batched(CONFIG, data, 0.3, [0, 1], state_path=state, on_epoch=stop)
    seen: list[int] = []
    resumed = train_batched(
        CONFIG, data, 0.3, [0, 1], state_path=state, on_epoch=lambda m: seen.append(m.epoch)
    )
    assert seen == [3]
    assert [_curve(r) for r in resumed] == [_curve(r) for r in whole]
    assert [r.test_acc for r in resumed] == [r.test_acc for r in whole]
    # The state of seeds (0, 1) is not taken for another set of seeds.
    seen.clear()
    train_batched(CONFIG, data, 0.3, [1], state_path=state, on_epoch=lambda m: seen.append(m.epoch))
    assert seen == [1, 2, 3]


def test_sliced_dropout_is_each_runs_own_dropout_in_one_multiply() -> None:
    # Run s gets dropkit's dropout with its generator's seed: the same output bits as S
    # separate calls, gradients equal in value (a dropped -0.0 may differ in sign only).
    import dropkit.functional as dk_F

    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    sliced = SlicedDropout(generators, 0.37).train()
    x = torch.randn(3, 64, 40, generator=torch.Generator().manual_seed(9), requires_grad=True)
    grad = torch.randn(3, 64, 40, generator=torch.Generator().manual_seed(10))
    y = sliced(x)
    y.backward(grad)
    again = [torch.Generator().manual_seed(i) for i in range(3)]
    seeds = [int(torch.randint(0, 2**62, (), generator=g)) for g in again]
    x_each = x.detach().clone().requires_grad_()
    y_each = torch.stack([dk_F.dropout(x_each[s], 0.37, seed=sd) for s, sd in enumerate(seeds)])
    y_each.backward(grad)
    assert torch.equal(y.detach().view(torch.int32), y_each.detach().view(torch.int32))
    assert torch.equal(x.grad, x_each.grad)


def test_a_copied_sliced_dropout_draws_into_its_own_seeds() -> None:
    import copy

    import dropkit.functional as dk_F

    sliced = SlicedDropout([torch.Generator().manual_seed(i) for i in range(2)], 0.5).train()
    x = torch.randn(2, 8, 16, requires_grad=True)
    sliced(x)  # its seed views exist now
    twin = copy.deepcopy(sliced)
    y_twin, y = twin(x), sliced(x)  # the generators were copied too: same second draws
    assert torch.equal(y_twin, y)
    again = [torch.Generator().manual_seed(i) for i in range(2)]
    seeds = [[int(torch.randint(0, 2**62, (), generator=g)) for _ in range(2)][1] for g in again]
    expected = torch.stack([dk_F.dropout(x[s], 0.5, seed=sd) for s, sd in enumerate(seeds)])
    assert torch.equal(y, expected)
    assert twin._seeds.data_ptr() != sliced._seeds.data_ptr()


def test_the_compare_benchmark_trains_at_the_rate_it_names() -> None:
    # It once timed every rate at p = 0: the stacked sites start at 0 and only set_rate sets them.
    from dropkit.bench._mlp import _stacked_epoch
    from dropkit.experiments.datasets import load_dataset

    data = load_dataset("digits")
    calls: list[float] = []
    original = SlicedDropout.forward

    def spy(self, x):  # type: ignore[no-untyped-def]
        calls.append(self.p)
        return original(self, x)

    SlicedDropout.forward = spy  # type: ignore[method-assign]
    try:
        _stacked_epoch(data, 0.5)()
    finally:
        SlicedDropout.forward = original  # type: ignore[method-assign]
    assert calls
    assert set(calls) == {0.5}


def test_sliced_dropout_refuses_an_input_that_is_not_one_row_per_run() -> None:
    import pytest

    sliced = SlicedDropout([torch.Generator().manual_seed(i) for i in range(3)], 0.5).train()
    for rows in (2, 4):
        with pytest.raises(ValueError, match="expected an input of 3 stacked runs"):
            sliced(torch.ones(rows, 5))
