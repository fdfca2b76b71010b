"""predict and mc_mode against the peers' own tests: Baal's MC-dropout and ConsistentDropout
tests and torch-uncertainty's ``mc_dropout`` wrapper tests, ported onto dropkit's API with the
same calls and assertions (and, where dropkit deliberately differs, the documented behaviour)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


# ------------------------------------------------------------- fresh samples on every call


def test_two_calls_without_a_seed_give_fresh_samples() -> None:
    """Baal's ``test_mc_dropout``: two stochastic calls on the same input differ."""
    model, x = _mlp(), torch.randn(5, 4)
    torch.manual_seed(2019)
    with torch.no_grad():
        assert not all(
            torch.equal(mc.predict(model, x, samples=10).samples,
                        mc.predict(model, x, samples=10).samples)
            for _ in range(10)
        )  # fmt: skip


def test_predict_without_a_seed_advances_the_global_generator() -> None:
    """As torch's own random ops do: the global RNG moves, and a second call continues it."""
    model, x = _mlp(), torch.randn(5, 4)
    before = torch.get_rng_state()
    mc.predict(model, x, samples=4)
    assert not torch.equal(torch.get_rng_state(), before)


def test_batches_of_one_shape_get_different_masks() -> None:
    """Predicting batch after batch: the same rows in two batches do not see the same masks."""
    model, x = _mlp(), torch.randn(5, 4)
    first = mc.predict(model, x, samples=8).samples
    second = mc.predict(model, x, samples=8).samples
    assert not torch.equal(first, second)


def test_with_a_seed_two_calls_are_equal_and_the_global_stream_is_left_alone() -> None:
    model, x = _mlp(), torch.randn(5, 4)
    state = torch.get_rng_state()
    a = mc.predict(model, x, samples=10, seed=3).samples
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, mc.predict(model, x, samples=10, seed=3).samples)


def test_manual_seed_repeats_a_sequence_of_calls() -> None:
    """torch-uncertainty's and Baal's pattern: after ``torch.manual_seed`` the same calls give the
    same samples, call by call, and the calls of one sequence differ from each other."""
    model, x = _mlp(), torch.randn(5, 4)

    def sequence() -> list[torch.Tensor]:
        torch.manual_seed(0)
        return [mc.predict(model, x, samples=6).samples for _ in range(3)]

    first, second = sequence(), sequence()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[1], first[2])


def test_a_seeded_call_inside_a_sequence_does_not_shift_it() -> None:
    """``seed=`` forks the generator: the unseeded calls around it draw as if it were not there."""
    model, x = _mlp(), torch.randn(5, 4)
    torch.manual_seed(0)
    plain = [mc.predict(model, x, samples=6).samples for _ in range(2)]
    torch.manual_seed(0)
    a = mc.predict(model, x, samples=6).samples
    mc.predict(model, x, samples=6, seed=11)
    b = mc.predict(model, x, samples=6).samples
    assert torch.equal(plain[0], a)
    assert torch.equal(plain[1], b)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_fresh_samples_on_both_strategies(share_prefix: bool) -> None:
    model, x = _mlp(), torch.randn(5, 4)
    a = mc.predict(model, x, samples=10, share_prefix=share_prefix).samples
    b = mc.predict(model, x, samples=10, share_prefix=share_prefix).samples
    assert not torch.equal(a, b)
