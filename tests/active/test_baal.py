"""dropkit.active against Baal 2.1, the anchor: the same stored probabilities, the same scores.

Baal is a test-only dependency (requirements/baal.txt). These tests skip when it is missing,
except under ``DROPKIT_REQUIRE_BAAL=1`` (CI), where a missing Baal fails the run.

Baal takes probabilities laid out ``[N, C, S]``; dropkit's samples are ``[S, N, C]``. Both sides
get the same float64 numbers (the float64 softmax of the logits, which dropkit's scores start
from), and compute in float64.
"""

import os

import numpy as np
import pytest
import torch

from dropkit import active
from dropkit.mc import MCResult

if os.environ.get("DROPKIT_REQUIRE_BAAL") == "1":
    import baal  # noqa: F401  (CI: a missing Baal is a failure, not a skip)
else:
    pytest.importorskip(
        "baal", reason="Baal is not installed: pip install -r requirements/baal.txt"
    )

from baal.active.heuristics import BALD, BatchBALD, Certainty, Entropy, Margin, Variance
from baal.active.heuristics.stochastics import GibbsSampling, PowerSampling, RankBasedSampling

# float64 on both sides, from the same inputs: only summation order differs
ATOL = 1e-12


def _stored(s=20, n=200, c=6, seed=0):
    """An MCResult whose probabilities are exactly representable in float64 on both sides, and
    the same probabilities in Baal's layout."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(1, n, 1, generator=g) * 4  # from nearly uniform to confident examples
    result = MCResult(scale * torch.randn(s, n, c, generator=g), "stored")
    return result, _baal_layout(result)


def _baal_layout(result):
    """The float64 softmax of ``result``'s logits (what dropkit's scores start from), as Baal's
    ``[N, C, S]``."""
    return torch.softmax(result.samples.double(), -1).permute(1, 2, 0).numpy()


@pytest.fixture(params=[0, 1, 2])
def stored(request):
    return _stored(seed=request.param)


def test_bald_equals_baals_bald(stored):
    result, probs = stored
    np.testing.assert_allclose(
        active.bald(result).numpy(), BALD().get_uncertainties(probs), atol=ATOL
    )
    # and ranks the pool the same way (continuous scores: no ties)
    assert active.top_k(active.bald(result), 200).tolist() == BALD()(probs).tolist()


def test_entropy_equals_baals_entropy(stored):
    result, probs = stored
    # scipy.stats.entropy renormalises each row: float64 rounding of a sum of C terms
    np.testing.assert_allclose(
        active.entropy(result).numpy(), Entropy().get_uncertainties(probs), atol=1e-12
    )
    assert active.top_k(active.entropy(result), 200).tolist() == Entropy()(probs).tolist()


def test_margin_is_minus_baals_margin(stored):
    result, probs = stored
    np.testing.assert_allclose(
        active.margin(result).numpy(), -Margin().get_uncertainties(probs), atol=ATOL
    )
    # Baal ranks the smallest margin first; dropkit's score is minus the margin, highest first
    assert active.top_k(active.margin(result), 200).tolist() == Margin()(probs).tolist()


def test_least_confidence_is_one_minus_baals_certainty(stored):
    result, probs = stored
    np.testing.assert_allclose(
        active.least_confidence(result).numpy(), 1 - Certainty().get_uncertainties(probs), atol=ATOL
    )
    assert (
        active.top_k(active.least_confidence(result), 200).tolist() == Certainty()(probs).tolist()
    )


def test_mean_std_is_baals_variance_as_a_mean_standard_deviation(stored):
    result, probs = stored
    heuristic = Variance(reduction=lambda var: np.sqrt(var).mean(axis=1))
    np.testing.assert_allclose(
        active.mean_std(result).numpy(), heuristic.get_uncertainties(probs), atol=ATOL
    )


@pytest.mark.parametrize(
    ("mode", "baal_class"),
    [("power", PowerSampling), ("softmax", GibbsSampling), ("rank", RankBasedSampling)],
)
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_stochastic_weights_equal_baals_distributions(stored, mode, baal_class, beta):
    result, probs = stored
    heuristic = baal_class(BALD(), query_size=10, temperature=1 / beta)
    np.random.seed(0)  # noqa: NPY002  (Baal draws from numpy's global generator)
    picked, distribution = heuristic.get_ranks(probs)
    ours = active.stochastic_weights(active.bald(result), mode, beta)
    np.testing.assert_allclose(ours.numpy(), distribution, rtol=1e-10, atol=1e-15)
    assert len(set(picked.tolist())) == 10


def _baal_batch_bald(probs, k, num_draw, seed):
    """Baal's picks: its history is BALD's top pick plus ``num_samples`` greedy ones, each with
    a nonzero score in the returned array."""
    torch.manual_seed(seed)
    scores = BatchBALD(num_samples=k - 1, num_draw=num_draw).compute_score(probs)
    return set(np.flatnonzero(scores).tolist())


def _duplicated(seed):
    """Near one-hot samples with BALD's top example repeated: BatchBALD takes one copy. The
    copies differ by a little noise, so that BALD has one top pick (on exact ties dropkit
    takes the lowest index, Baal the highest)."""
    g = torch.Generator().manual_seed(seed)
    base = 20 * torch.randn(16, 15, 3, generator=g)
    top = int(active.bald(MCResult(base, "s")).argmax())
    copies = base[:, top : top + 1].expand(16, 3, 3) + 0.05 * torch.randn(16, 3, 3, generator=g)
    pool = MCResult(torch.cat([base, copies], dim=1), "stored")
    return pool, _baal_layout(pool)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_batch_bald_picks_equal_baals_on_pools_with_copies(seed, k):
    # joint of at most 3 picks of 3 classes: dropkit is exact; Baal's sampled estimate is
    # close to exact with 2000 draws per sample, and the gains here are far apart
    result, probs = _duplicated(seed)
    ours = active.batch_bald(result, k).tolist()
    assert set(ours) == _baal_batch_bald(probs, k, num_draw=2000, seed=seed)


@pytest.mark.parametrize("seed", [13, 14, 15, 17, 19, 21, 23, 28])
def test_batch_bald_second_pick_equals_baals_where_the_gains_are_clear(seed):
    # the second pick needs the joint with one chosen example: exact in dropkit, estimated
    # from S * num_draw configurations in Baal; compared on pools (these seeds) where the best
    # gain leads the runner-up by far more than Baal's sampling error
    result, probs = _stored(s=10, n=40, c=3, seed=seed)
    first = int(active.bald(result).argmax())
    gains = {
        n: active.joint_mutual_information(result, [first, n]) for n in range(40) if n != first
    }
    ranked = sorted(gains.values(), reverse=True)
    assert ranked[0] - ranked[1] > 0.025  # the premise of the comparison
    ours = active.batch_bald(result, 2).tolist()
    assert ours[0] == first
    assert set(ours) == _baal_batch_bald(probs, 2, num_draw=2000, seed=seed)
