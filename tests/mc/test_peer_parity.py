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


# ------------------------------------------------------------- ConsistentMasks (Baal)


def _baal_model() -> nn.Module:
    """Baal's ``a_model_with_dropout`` fixture."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(10, 5),
        nn.ReLU(),
        nn.Sequential(nn.Linear(5, 5), nn.Dropout(p=0.5), nn.ReLU()),
        nn.Sequential(nn.Linear(5, 5), nn.Dropout(p=0.5), nn.Linear(5, 2)),
    )


def test_consistent_1d_eval_is_not_stochastic() -> None:
    """Baal's ``test_1d_eval_is_not_stochastic``: with the masks kept, calls repeat."""
    dummy_input = torch.randn(8, 10)
    test_module = _baal_model()
    masks = mc.ConsistentMasks(10)
    torch.manual_seed(2019)
    with torch.no_grad():
        assert all(
            torch.equal(mc.predict(test_module, dummy_input, masks=masks).samples,
                        mc.predict(test_module, dummy_input, masks=masks).samples)
            for _ in range(10)
        )  # fmt: skip


def test_consistent_2d_eval_is_not_stochastic() -> None:
    """Baal's ``test_2d_eval_is_stochastic`` (ConsistentDropout2d): channel masks kept."""
    dummy_input = torch.randn(8, 1, 5, 5)
    test_module = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Dropout2d(p=0.5),
                                nn.Conv2d(1, 1, 1))  # fmt: skip
    masks = mc.ConsistentMasks(10)
    torch.manual_seed(2019)
    first = mc.predict(test_module, dummy_input, masks=masks).samples
    assert all(
        torch.equal(first, mc.predict(test_module, dummy_input, masks=masks).samples)
        for _ in range(10)
    )
    assert first.std(0).max() > 0  # the 10 networks differ


def test_consistent_masks_are_shared_by_every_row_unlike_baal() -> None:
    """Baal's ``test_intra_batch_is_stochastic`` asserts that two equal rows of one batch get
    different outputs (its masks are per row, so the networks are the same for every data point
    only at batch size 1). dropkit deliberately shares network s over every row (README,
    compatibility): equal rows get equal samples, and the samples still differ."""
    dummy_input = torch.randn(10)
    dummy_input = torch.stack([dummy_input, dummy_input])
    test_module = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(5, 2))
    torch.manual_seed(2019)
    pred = mc.predict(test_module, dummy_input, masks=mc.ConsistentMasks(8)).samples
    torch.testing.assert_close(pred[:, 0], pred[:, 1])  # equal rows, one network
    assert (pred[0] - pred[1]).abs().sum() > 0


def test_consistent_masks_change_after_reset() -> None:
    """Baal's ``_mask_tests``: after a reset (Baal: ``train(); eval()``) the masks are new."""
    model, x = _baal_model(), torch.randn(10, 10)
    masks = mc.ConsistentMasks(5)
    o1 = mc.predict(model, x, masks=masks).samples
    masks.reset()
    o2 = mc.predict(model, x, masks=masks).samples
    assert not torch.eq(o1, o2).all()


def test_consistent_masks_give_each_input_the_same_networks_in_any_batch() -> None:
    model, x = _baal_model(), torch.randn(9, 10)
    masks = mc.ConsistentMasks(6)
    whole = mc.predict(model, x, masks=masks).samples
    in_batches = mc.predict(model, x, masks=masks, batch_size=4).samples
    backwards = torch.cat(
        [mc.predict(model, x[i : i + 3], masks=masks).samples for i in (6, 3, 0)], dim=1
    )
    torch.testing.assert_close(in_batches, whole)
    torch.testing.assert_close(backwards, torch.cat([whole[:, 6:], whole[:, 3:6], whole[:, :3]], 1))
    # plain predict draws new masks in every call
    assert not torch.allclose(mc.predict(model, x, samples=6).samples, whole)


def test_consistent_masks_each_network_is_one_dropout_draw() -> None:
    """Network s is one mask: on a constant input its output has every element 0 or 1/(1-p),
    with the dropped count binomial over the S * D mask elements."""
    p, s, d = 0.3, 40, 50
    result = mc.predict(nn.Dropout(p), torch.ones(3, d), masks=mc.ConsistentMasks(s, seed=0))
    samples = result.samples  # [S, 3, D]
    assert torch.equal(samples, samples[:, :1].expand_as(samples))  # rows share the network
    values = samples.unique()
    assert len(values) == 2
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / (1 - p)]))
    dropped, n = int(samples[:, 0].eq(0).sum()), s * d
    assert abs(dropped - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    assert result.strategy == "consistent"


def test_consistent_masks_with_one_seed_are_the_same_networks() -> None:
    model, x = _baal_model(), torch.randn(4, 10)
    a = mc.predict(model, x, masks=mc.ConsistentMasks(5, seed=1)).samples
    b = mc.predict(model, x, masks=mc.ConsistentMasks(5, seed=1)).samples
    c = mc.predict(model, x, masks=mc.ConsistentMasks(5, seed=2)).samples
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    state = torch.get_rng_state()
    mc.predict(model, x, masks=mc.ConsistentMasks(5, seed=1))
    assert torch.equal(torch.get_rng_state(), state)


def test_consistent_masks_keep_dropconnect_weight_masks() -> None:
    from dropkit import nn as dk_nn

    model = dk_nn.add_dropconnect(_baal_model(), 0.3)
    x = torch.randn(10)
    x = torch.stack([x, x])
    masks = mc.ConsistentMasks(6)
    a = mc.predict(model, x, masks=masks).samples
    assert torch.equal(a, mc.predict(model, x, masks=masks).samples)
    torch.testing.assert_close(a[:, 0], a[:, 1])  # equal rows, one network (up to the GEMM)
    assert a.std(0).max() > 0


def test_consistent_masks_warn_when_a_new_shape_needs_new_masks() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x).mean(1)

    model, masks = Tokens(), mc.ConsistentMasks(4)
    mc.predict(model, torch.randn(2, 3, 8), masks=masks)
    with pytest.warns(RuntimeWarning, match="do not share the networks"):
        mc.predict(model, torch.randn(2, 5, 8), masks=masks)


def test_consistent_masks_are_redrawn_when_the_rate_changes() -> None:
    # Masks drawn at p = 0.1 are not draws at p = 0.9: reusing them would keep the old rate
    # silently. The new rate gets its own masks, and the change is said.
    layer = nn.Dropout(0.1)
    masks, x = mc.ConsistentMasks(50, seed=0), torch.ones(2, 40)
    low = mc.predict(layer, x, masks=masks).samples
    layer.p = 0.9
    with pytest.warns(RuntimeWarning, match=r"p=0\.1\).*p=0\.9\)"):
        high = mc.predict(layer, x, masks=masks).samples
    assert float(low.eq(0).float().mean()) < 0.3
    assert float(high.eq(0).float().mean()) > 0.7
    torch.testing.assert_close(high.unique(), torch.tensor([0.0, 10.0]))


def test_consistent_masks_refuse_what_they_cannot_keep() -> None:
    with pytest.raises(ValueError, match="alpha_dropout: alpha dropout adds"):
        mc.predict(nn.Sequential(nn.AlphaDropout(0.2)), torch.randn(3, 4),
                   masks=mc.ConsistentMasks(3))  # fmt: skip

    class RawDropPath(nn.Module):  # how timm writes stochastic depth
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return x
            keep = x.new_empty(x.shape[0], 1).bernoulli_(0.8)
            return x * keep / 0.8

    with (
        pytest.warns(RuntimeWarning, match="draws random numbers"),
        pytest.raises(ValueError, match=r"random draw \(bernoulli_\).*dropkit.convert"),
    ):
        mc.predict(nn.Sequential(nn.Linear(4, 4), RawDropPath()), torch.randn(3, 4),
                   masks=mc.ConsistentMasks(3))  # fmt: skip
    with pytest.raises(ValueError, match="samples=5 but masks holds 3 networks"):
        mc.predict(_baal_model(), torch.randn(2, 10), samples=5, masks=mc.ConsistentMasks(3))
    with pytest.raises(ValueError, match="positive int"):
        mc.ConsistentMasks(0)


# ------------------------------------------------------------- last_layer (torch-uncertainty)


def _tu_dummy_model(dropout_rate: float = 0.1) -> nn.Module:
    """torch-uncertainty's ``dummy_model(10, 5, dropout_rate)``: dropout between two layers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Dropout(dropout_rate), nn.Linear(8, 5))


def test_last_layer_eval_shapes() -> None:
    """torch-uncertainty's ``test_mc_dropout_eval_cls`` with ``last_layer=True``."""
    model = _tu_dummy_model().eval()
    result = mc.predict(model, torch.rand(1, 10), samples=5, last_layer=True)
    assert result.samples.size() == torch.Size([5, 1, 5])
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_last_layer_errors() -> None:
    """torch-uncertainty's ``test_mc_dropout_errors``: no dropout rate above 0 raises."""
    with pytest.raises(ValueError, match="nothing stochastic ran"):
        mc.predict(_tu_dummy_model(0.0), torch.rand(1, 10), samples=5, last_layer=True)


class TwoDropouts(nn.Module):
    """The dropout declared first runs last: torch-uncertainty would keep ``body_drop`` (the
    last declared), dropkit keeps ``head_drop`` (the last to run)."""

    def __init__(self) -> None:
        super().__init__()
        self.head_drop = nn.Dropout(0.5)
        self.body = nn.Linear(6, 6)
        self.body_drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_drop(self.head(torch.relu(self.body_drop(self.body(x)))))


def test_last_layer_keeps_only_the_last_dropout_that_runs() -> None:
    """Every sample is the deterministic output with the last dropout's mask: each element 0
    or twice the eval output. With every dropout on, that is not so."""
    torch.manual_seed(0)
    model, x = TwoDropouts(), torch.randn(16, 6)
    reference = model.eval()(x)
    last = mc.predict(model, x, samples=20, last_layer=True, seed=0).samples
    kept = last != 0
    torch.testing.assert_close(last[kept], (2 * reference).expand_as(last)[kept])
    assert 0 < kept.float().mean() < 1
    full = mc.predict(model, x, samples=20, seed=0).samples
    kept = full != 0
    assert not torch.allclose(full[kept], (2 * reference).expand_as(full)[kept])


def test_last_layer_in_mc_mode_switches_on_the_last_that_runs_and_restores_flags() -> None:
    model = TwoDropouts().train()
    with mc.mc_mode(model, last_layer=True):
        model(torch.randn(2, 6))
        assert (model.head_drop.training, model.body_drop.training) == (True, False)
        assert not model.head.training
    assert all(m.training for m in model.modules())


def test_last_layer_counts_functional_dropout() -> None:
    class FunctionalHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.fc(self.drop(x))
            return nn.functional.dropout(x, 0.5, self.training)

    model = FunctionalHead()
    with mc.mc_mode(model, last_layer=True):
        model(torch.randn(2, 6))
        assert (model.training, model.drop.training) == (True, False)


@pytest.mark.parametrize("inplace", [False, True])
def test_consistent_one_pass_equals_one_pass_per_network(inplace: bool) -> None:
    """The replicated pass and the pass per network (taken where a mask is on a weight) apply
    the same kept masks; neither writes into the caller's input."""
    from dropkit import nn as dk_nn

    torch.manual_seed(0)
    body = [nn.Dropout(0.3, inplace=inplace), nn.Linear(6, 6), nn.ReLU(), nn.Dropout(0.2)]
    plain = nn.Sequential(*body, nn.Linear(6, 4))
    # The same layers with a weight mask last (call 2, after the two dropouts' calls 0 and 1)
    # that drops (almost) nothing: it takes the pass per network.
    weighted = nn.Sequential(*body, dk_nn.WeightDrop(plain[-1], "weight", p=1e-9))
    x = torch.randn(5, 6)
    before = x.clone()
    masks = mc.ConsistentMasks(7, seed=0)
    one = mc.predict(plain, x, masks=masks)
    assert one.strategy == "consistent"
    per_network = mc.predict(weighted, x, masks=masks)
    assert per_network.strategy.startswith("consistent (one pass per network")
    torch.testing.assert_close(per_network.samples, one.samples)
    assert torch.equal(x, before)
