"""predict in several passes: the prefix is computed by two of them and answered from the
second for the rest, without changing a sample; where the prefix writes in place or calls
differently from pass to pass, every pass computes it."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dropkit.mc import predict


@pytest.fixture
def one_sample_per_pass(monkeypatch):
    """A budget that holds one sample of a first dropout's input of at most 64 elements."""
    monkeypatch.setattr("dropkit.mc._sampler.REPLICATED_ELEMENTS", 64)
    monkeypatch.setattr("dropkit.mc._sampler.PREFIX_SHARE_ABOVE", 10**6)  # call any prefix cheap


def _mlp(inplace_relu: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(inplace=inplace_relu), nn.Dropout(0.5),
        nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3),
    ).eval()  # fmt: skip


class Skip(nn.Module):
    """h is computed before the first dropout and used after it, twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(self.drop(h) + h) * h.sum(-1, keepdim=True)


class _Count(TorchFunctionMode):
    """Counts the calls of ``func`` on (a view of all of) the tensor ``on`` that reach torch."""

    def __init__(self, func, on: torch.Tensor) -> None:
        super().__init__()
        self.func, self.on, self.calls = func, on, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        x = args[0] if args else None
        if (
            func is self.func
            and isinstance(x, torch.Tensor)
            and x.data_ptr() == self.on.data_ptr()
            and x.shape == self.on.shape
        ):
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model_fn", [_mlp, lambda: _mlp(inplace_relu=True), Skip])
def test_passes_give_the_samples_of_replicating_the_input(model_fn, one_sample_per_pass) -> None:
    x = torch.randn(7, 5)
    model = model_fn()
    shared = predict(model, x, samples=6, seed=3)
    replicated = predict(model, x, samples=6, seed=3, share_prefix=False)
    assert shared.strategy == "shared-prefix"
    torch.testing.assert_close(shared.samples, replicated.samples, rtol=1e-5, atol=1e-6)
    assert torch.equal(predict(model, x, samples=6, seed=3).samples, shared.samples)
    flat = shared.samples.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))


def test_the_prefix_runs_in_two_passes_however_many_there_are(one_sample_per_pass) -> None:
    x = torch.randn(7, 5)
    model = _mlp()
    counts = []
    for samples in (2, 9):
        with _Count(torch.nn.functional.linear, x) as count:
            result = predict(model, x, samples=samples, seed=0)
        assert result.samples.shape == (samples, 7, 3)
        counts.append(count.calls)
    assert counts[0] >= 2  # at least the passes' own
    assert counts[1] == counts[0]  # computing it in every pass: 7 calls more


class Counter(nn.Module):
    """Its prefix scales by a buffer that it increments in place on every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count.add_(1)
        return self.drop(x * self.count)


class Alternate(nn.Module):
    """Its prefix scales by 2 and 3 on alternate forwards (a Python-level choice)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scales = torch.tensor(2.0), torch.tensor(3.0)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.drop(x * self.scales[self.calls % 2])


def _scales(result: torch.Tensor, x: torch.Tensor) -> list[float]:
    """The prefix's scale in each sample: a kept element is 2 * scale * x."""
    ratio = result / (2 * x)
    return [float(r[r != 0].round(decimals=4).unique().item()) for r in ratio.flatten(1)]


def test_a_prefix_that_writes_in_place_is_computed_in_every_pass(one_sample_per_pass) -> None:
    x = torch.rand(4, 10) + 1  # 40 elements: one sample a pass
    scales = _scales(predict(Counter(), x, samples=6, seed=0).samples, x)
    assert [b - a for a, b in itertools.pairwise(scales)] == [1.0] * 5


def test_a_prefix_that_calls_differently_is_computed_in_every_pass(one_sample_per_pass) -> None:
    x = torch.rand(4, 10) + 1  # 40 elements: one sample a pass
    scales = _scales(predict(Alternate(), x, samples=6, seed=0).samples, x)
    assert set(scales) == {2.0, 3.0}
    assert all(a != b for a, b in itertools.pairwise(scales))


def test_under_inference_mode_the_samples_are_the_same(one_sample_per_pass) -> None:
    x = torch.randn(7, 5)
    model = _mlp()
    expected = predict(model, x, samples=5, seed=1).samples
    with torch.inference_mode():
        inference = predict(model, x, samples=5, seed=1).samples
    assert torch.equal(inference, expected)
