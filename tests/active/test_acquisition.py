"""Acquisition functions: their defining properties, ties, sizes, seeds and moments results."""

import itertools
import math

import pytest
import torch
from scipy import stats

from dropkit import active, mc
from dropkit.mc import MCResult


def _result(s=12, n=40, c=4, scale=2.0, seed=0) -> MCResult:
    g = torch.Generator().manual_seed(seed)
    return MCResult(scale * torch.randn(s, n, c, generator=g), "stored")


def _net(p=0.5):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(32, 4)
    )


# ---------------------------------------------------------------- per-example scores


def test_bald_is_zero_when_every_sample_agrees_and_positive_when_they_differ():
    one = torch.randn(1, 30, 5, generator=torch.Generator().manual_seed(1))
    agree = MCResult(one.expand(8, 30, 5).clone(), "stored")
    assert active.bald(agree).abs().max() < 1e-12
    assert (active.bald(_result(n=30, c=5)) > 1e-6).all()


def test_scores_agree_with_mc_result_summaries():
    result = _result()
    # float32 softmax in MCResult vs float64 here: float32 rounding of nats-sized values
    torch.testing.assert_close(
        active.entropy(result).float(), result.predictive_entropy, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        active.bald(result).float(), result.mutual_information, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(active.variation_ratio(result).float(), result.variation_ratio)
    torch.testing.assert_close(
        active.mean_std(result).float(), result.std.mean(-1), atol=1e-6, rtol=0
    )


def test_bounds_of_each_score():
    result = _result(c=5)
    log_c = math.log(5)
    assert (active.bald(result) <= active.entropy(result) + 1e-12).all()
    assert (active.entropy(result) <= log_c + 1e-12).all()
    assert ((active.margin(result) <= 0) & (active.margin(result) >= -1)).all()
    assert ((active.least_confidence(result) >= 0) & (active.least_confidence(result) <= 0.8)).all()
    assert ((active.variation_ratio(result) >= 0) & (active.variation_ratio(result) <= 0.8)).all()


def test_variation_ratio_counts_votes():
    # 5 samples, 3 examples: votes (0,0,0,0,0), (0,1,1,2,1), (2,2,0,0,1)
    votes = torch.tensor([[0, 0, 2], [0, 1, 2], [0, 1, 0], [0, 2, 0], [0, 1, 1]])
    logits = torch.nn.functional.one_hot(votes, 3).double() * 5
    scores = active.variation_ratio(MCResult(logits, "stored"))
    torch.testing.assert_close(scores, torch.tensor([0.0, 0.4, 0.6], dtype=torch.float64))


def test_margin_and_least_confidence_on_known_probabilities():
    probs = torch.tensor(
        [[[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]], [[0.2, 0.7, 0.1], [0.4, 0.35, 0.25]]]
    )
    result = MCResult(probs.double().log(), "stored")  # mean: [0.4, 0.5, 0.1], [0.4, 0.35, 0.25]
    torch.testing.assert_close(
        active.margin(result), torch.tensor([-0.1, -0.05], dtype=torch.float64)
    )
    torch.testing.assert_close(
        active.least_confidence(result), torch.tensor([0.5, 0.6], dtype=torch.float64)
    )


def test_scores_of_a_moments_result_are_those_of_its_draws():
    model = _net()
    x = torch.randn(25, 6, generator=torch.Generator().manual_seed(2))
    moments = mc.predict(model, x, samples=16, method="moments", seed=3)
    assert isinstance(moments, mc.MomentResult)
    same = MCResult(moments.samples, "stored")
    for name in active.SCORES:
        torch.testing.assert_close(active.score(moments, name), active.score(same, name))
    again = mc.predict(model, x, samples=16, method="moments", seed=3)
    torch.testing.assert_close(active.bald(again), active.bald(moments))  # seeded draws


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(TypeError, match="MCResult"):
        active.bald(torch.zeros(3, 4, 5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[S, N, C\]"):
        active.entropy(MCResult(torch.zeros(3, 4), "stored"))
    bad = torch.zeros(2, 3, 4)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        active.bald(MCResult(bad, "stored"))
    with pytest.raises(ValueError, match="unknown score"):
        active.score(_result(), "bold")
    with pytest.raises(ValueError, match="unknown strategy 'bold'"):
        active.acquire(_result(), "bold", 3)


# ---------------------------------------------------------------- top-k, sizes, ties


def test_top_k_breaks_ties_by_lowest_index_and_returns_the_whole_pool_when_asked_for_more():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1])
    assert active.top_k(scores, 3).tolist() == [1, 3, 0]
    assert active.top_k(scores, 50).tolist() == [1, 3, 0, 2, 4]
    result = _result(n=7)
    for name in ("random", "bald", "batchbald", "power-bald", "margin"):
        picked = active.acquire(result, name, 20)
        assert sorted(picked.tolist()) == list(range(7)), name
    with pytest.raises(ValueError, match="query_size"):
        active.top_k(scores, 0)
    with pytest.raises(ValueError, match="NaN"):
        active.top_k(torch.tensor([0.1, float("nan")]), 1)


def test_every_strategy_returns_distinct_indices_and_is_seeded():
    result = _result(n=60)
    for name in active.STRATEGIES:
        a = active.acquire(result, name, 10, seed=4)
        b = active.acquire(result, name, 10, seed=4)
        assert a.tolist() == b.tolist(), name
        assert len(set(a.tolist())) == 10, name
        assert a.dtype == torch.long, name
    draws = {tuple(active.acquire(result, "power-bald", 10, seed=s).tolist()) for s in range(5)}
    assert len(draws) > 1


# ---------------------------------------------------------------- stochastic batch acquisition


def test_stochastic_weights_follow_their_definitions():
    s = torch.tensor([0.5, 2.0, 1.0, 0.0])
    torch.testing.assert_close(
        active.stochastic_weights(s, "power", 2.0), (s.double() ** 2) / (s.double() ** 2).sum()
    )
    torch.testing.assert_close(
        active.stochastic_weights(s, "softmax", 3.0), torch.softmax(3.0 * s.double(), 0)
    )
    ranks = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(
        active.stochastic_weights(s, "rank", 1.0), (1 / ranks) / (1 / ranks).sum()
    )
    with pytest.raises(ValueError, match="scores >= 0"):
        active.stochastic_weights(torch.tensor([-1.0, 1.0]), "power")
    with pytest.raises(ValueError, match="mode"):
        active.stochastic_weights(s, "gibbs")


@pytest.mark.parametrize("mode", ["power", "softmax", "rank"])
def test_stochastic_first_pick_is_drawn_with_the_weights(mode):
    scores = torch.tensor([0.1, 0.4, 0.2, 0.8, 0.5])
    weights = active.stochastic_weights(scores, mode, 1.0)
    draws = 3000
    counts = torch.zeros(5)
    for seed in range(draws):
        counts[active.stochastic_batch(scores, 1, mode=mode, seed=seed)[0]] += 1
    result = stats.chisquare(counts.numpy(), (weights * draws).numpy())
    assert result.pvalue > 1e-3, (counts, weights * draws)


def test_power_sampling_never_draws_zero_scores_while_positive_ones_remain():
    scores = torch.tensor([0.0, 0.3, 0.0, 0.6, 0.1, 0.0])
    for seed in range(50):
        picked = active.stochastic_batch(scores, 4, mode="power", seed=seed).tolist()
        assert set(picked[:3]) == {1, 3, 4}
        assert picked[3] == 0  # then the zero scores, in index order


# ---------------------------------------------------------------- BatchBALD


def test_batch_bald_with_one_pick_is_balds_top_pick():
    for seed in range(5):
        result = _result(seed=seed)
        assert active.batch_bald(result, 1).tolist() == [int(active.bald(result).argmax())]


def test_joint_mutual_information_of_one_is_bald_and_a_copy_adds_less():
    result = _result(c=3)
    scores = active.bald(result)
    assert abs(active.joint_mutual_information(result, [5]) - float(scores[5])) < 1e-12
    twice = MCResult(torch.cat([result.samples, result.samples[:, 5:6]], dim=1), "stored")
    last = twice.samples.shape[1] - 1
    pair = active.joint_mutual_information(twice, [5, last])
    assert float(scores[5]) < pair < 2 * float(scores[5]) - 1e-3
    # sub-additive: I(a, b) <= I(a) + I(b)
    assert active.joint_mutual_information(result, [1, 2]) <= float(scores[1] + scores[2]) + 1e-12


def test_a_copy_of_a_deterministic_example_adds_nothing():
    # each sample one-hot: the label is a function of the weights, so a copy tells nothing new
    votes = torch.randint(0, 3, (10, 4), generator=torch.Generator().manual_seed(0))
    logits = 60.0 * torch.nn.functional.one_hot(votes, 3).double()
    result = MCResult(torch.cat([logits, logits[:, :1]], dim=1), "stored")
    single = active.joint_mutual_information(result, [0])
    assert single > 0.3
    assert abs(active.joint_mutual_information(result, [0, 4]) - single) < 1e-9


def test_each_greedy_step_maximises_the_exact_joint_mutual_information():
    result = _result(s=10, n=15, c=3, seed=7)
    picked = active.batch_bald(result, 4).tolist()
    for step in range(1, 4):
        before = picked[:step]
        gains = {
            n: active.joint_mutual_information(result, [*before, n])
            for n in range(15)
            if n not in before
        }
        assert picked[step] == max(gains, key=lambda n: (gains[n], -n))


def _duplicated_pool(copies=3, seed=0):
    """A pool whose most informative examples are repeated: BALD's top-k takes the copies,
    BatchBALD takes each once."""
    base = _result(s=16, n=12, c=3, scale=20.0, seed=seed).samples  # near one-hot samples
    top = int(active.bald(MCResult(base, "s")).argmax())
    pool = torch.cat([base] + [base[:, top : top + 1]] * copies, dim=1)
    return MCResult(pool, "stored"), top, list(range(12, 12 + copies))


@pytest.mark.parametrize("configurations", [4096, 27])
def test_batch_bald_takes_one_of_each_duplicate_where_bald_takes_them_all(configurations):
    # 27 = 3**3: exact for three picks, drawn configurations after
    result, top, copies = _duplicated_pool()
    by_bald = active.top_k(active.bald(result), 4).tolist()
    assert {top, *copies} <= set(by_bald)
    picked = active.batch_bald(result, 6, configurations=configurations, seed=0).tolist()
    assert len({top, *copies} & set(picked)) == 1, picked


def test_drawn_configurations_choose_as_the_exact_joint_where_the_gains_are_clear():
    result = _result(s=16, n=30, c=2, scale=3.0, seed=11)
    exact = active.batch_bald(result, 6, configurations=1 << 12)
    drawn = active.batch_bald(result, 6, configurations=2, seed=1)  # drawn after the first pick
    gains = [
        active.joint_mutual_information(result, exact[: k + 1].tolist())
        - active.joint_mutual_information(result, exact[:k].tolist())
        for k in range(1, 6)
    ]
    assert exact[0] == drawn[0]
    # drawn with 2 configurations is a poor estimate: its set's exact value is at most a bit lower
    assert active.joint_mutual_information(result, drawn.tolist()) > 0.8 * (
        active.joint_mutual_information(result, exact.tolist())
    )
    assert min(gains) > 0


def test_batch_bald_refuses_a_moments_result():
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(0))
    moments = mc.predict(_net(), x, samples=8, method="moments", seed=0)
    with pytest.raises(ValueError, match="method='sampling'"):
        active.batch_bald(moments, 3)
    with pytest.raises(ValueError, match="method='sampling'"):
        active.acquire(moments, "batchbald", 3)
    assert len(active.acquire(moments, "power-bald", 3)) == 3  # per-example scores are fine


def test_batch_bald_on_sampled_mc_predictions():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    result = mc.predict(_net(), x, samples=20, seed=0)
    picked = active.batch_bald(result, 5)
    assert len(set(picked.tolist())) == 5
    best = max(
        itertools.combinations(range(50), 1),
        key=lambda c: active.joint_mutual_information(result, list(c)),
    )
    assert picked[0] == best[0]
