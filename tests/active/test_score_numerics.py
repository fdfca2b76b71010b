"""The per-example scores' numerics: equal to their plain definitions in float64, exact on
extreme logits (against a 50-digit reference), no NaN where a probability is 0, and the
checks that must still raise.

The definitions below are the textbook ones, written with ``xlogy`` on the float64 softmax of
the logits; the scores compute the same quantities another way (classes first, a sample's
entropy from its logits), so any slip in that way shows up here.
"""

import pytest
import torch

from dropkit import active
from dropkit.mc import MCResult

mpmath = pytest.importorskip("mpmath")

# float64, values of at most log(C) nats summed over C <= 10 classes and S <= 20 samples
ATOL = 1e-12


def _h(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def _definitions(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    p = torch.softmax(samples.double(), -1)  # [S, N, C]
    mean = p.mean(0)
    votes = torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).sum(0)
    top2 = mean.topk(2, dim=-1).values
    return {
        "entropy": _h(mean),
        "bald": (_h(mean) - _h(p).mean(0)).clamp_min(0.0),
        "variation-ratio": 1.0 - votes.max(-1).values.double() / p.shape[0],
        "mean-std": p.var(0, unbiased=False).sqrt().mean(-1),
        "margin": -(top2[:, 0] - top2[:, 1]),
        "least-confidence": 1.0 - mean.max(-1).values,
    }


def _logits(s, n, c, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    spread = scale * torch.rand(1, n, 1, generator=g, dtype=torch.float64)
    return (spread * torch.randn(s, n, c, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("scale", "seed"), [(0.1, 0), (3.0, 1), (40.0, 2)])
def test_every_score_equals_its_definition(dtype, scale, seed):
    samples = _logits(20, 300, 7, scale, dtype, seed)
    result = MCResult(samples, "stored")
    for name, expected in _definitions(samples).items():
        # float64 [N], whatever the logits' dtype (assert_close checks dtype and shape)
        torch.testing.assert_close(
            active.score(result, name), expected, rtol=0, atol=ATOL, msg=name
        )


def _exact_entropies(row: list[float]) -> tuple[float, list[float]]:
    """(entropy, probabilities) of softmax(row), with 50 digits."""
    with mpmath.workdps(50):
        top = max(row)
        weights = [mpmath.exp(mpmath.mpf(v) - top) for v in row]
        total = mpmath.fsum(weights)
        probs = [w / total for w in weights]
        entropy = -mpmath.fsum(q * mpmath.log(q) for q in probs if q > 0)
        return float(entropy), [float(q) for q in probs]


@pytest.mark.parametrize("spread", [30.0, 200.0, 400.0, 1000.0])
def test_entropy_of_extreme_logits_matches_a_50_digit_reference(spread):
    # Probabilities from about e^-60 (exact in float64) to e^-2000 (0 in float64): log of a
    # probability that underflowed is -inf, and 0 * -inf is NaN in a naive p * log(p).
    g = torch.Generator().manual_seed(5)
    logits = spread * (2 * torch.rand(1, 50, 6, generator=g, dtype=torch.float64) - 1)
    result = MCResult(logits, "stored")
    got = active.entropy(result)
    assert torch.isfinite(got).all()
    for n in range(50):
        exact, _ = _exact_entropies(logits[0, n].tolist())
        assert abs(float(got[n]) - exact) <= 1e-14 * max(1.0, exact), (n, float(got[n]), exact)
    # one sample: the prediction is that sample's, so there is no epistemic part at all
    assert (active.bald(result).abs() <= 1e-14).all()


def test_bald_of_extreme_logits_matches_a_50_digit_reference():
    g = torch.Generator().manual_seed(6)
    logits = 200 * (2 * torch.rand(4, 30, 5, generator=g, dtype=torch.float64) - 1)
    got = active.bald(MCResult(logits, "stored"))
    assert torch.isfinite(got).all()
    for n in range(30):
        rows = [_exact_entropies(logits[s, n].tolist()) for s in range(4)]
        with mpmath.workdps(50):
            mean = [mpmath.fsum(r[1][k] for r in rows) / 4 for k in range(5)]
            predictive = -mpmath.fsum(q * mpmath.log(q) for q in mean if q > 0)
            exact = float(predictive - mpmath.fsum(r[0] for r in rows) / 4)
        assert abs(float(got[n]) - exact) <= 1e-13, (n, float(got[n]), exact)


def test_bald_is_zero_when_samples_agree_even_on_extreme_logits():
    one = 200 * torch.randn(1, 40, 10, generator=torch.Generator().manual_seed(7))
    for s in (2, 20):
        agree = MCResult(one.expand(s, 40, 10).clone(), "stored")
        scores = active.bald(agree)
        assert (scores >= 0).all(), s
        assert scores.max() < 1e-12, s
        assert active.mean_std(agree).max() == 0.0
        assert active.variation_ratio(agree).max() == 0.0


def test_a_logit_of_minus_infinity_is_a_class_of_probability_zero():
    g = torch.Generator().manual_seed(8)
    finite = torch.randn(6, 20, 4, generator=g, dtype=torch.float64)
    masked = torch.cat([finite, torch.full((6, 20, 1), -torch.inf, dtype=torch.float64)], -1)
    # the same probabilities as the four finite classes, with a fifth at exactly 0
    plain, with_zero = MCResult(finite, "stored"), MCResult(masked, "stored")
    for name in active.SCORES:
        got = active.score(with_zero, name)
        assert torch.isfinite(got).all(), name
        expected = active.score(plain, name)
        if name == "mean-std":  # a mean over classes: the fifth adds a std of 0
            expected = expected * 4 / 5
        torch.testing.assert_close(got, expected, rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize(
    ("where", "value"),
    [((0, 1, 2), float("nan")), ((1, 0, 0), float("inf")), ((0, 3), -float("inf"))],
    ids=["nan", "plus-inf", "all-minus-inf"],
)
def test_nan_or_infinite_logits_raise_for_every_score(where, value):
    samples = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(9))
    samples[where] = value  # (0, 3): every logit of one sample of one example
    result = MCResult(samples, "stored")
    for name in active.SCORES:
        with pytest.raises(ValueError, match="NaN or infinite logits"):
            active.score(result, name)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        active.acquire(result, "random", 2)


def test_variation_ratio_votes_for_the_first_of_equal_top_probabilities():
    # votes 1, 1, 2: the first two samples tie classes 1 and 2 and vote for class 1
    logits = torch.tensor([[[0.0, 5.0, 5.0]], [[0.0, 5.0, 5.0]], [[0.0, 0.0, 5.0]]])
    got = active.variation_ratio(MCResult(logits, "stored"))
    torch.testing.assert_close(got, torch.tensor([1 / 3], dtype=torch.float64))


def test_empty_samples_or_classes_raise():
    for shape in ((0, 4, 3), (2, 4, 0)):
        with pytest.raises(ValueError, match="at least one sample and one class"):
            active.bald(MCResult(torch.zeros(shape), "stored"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scoring_leaves_the_samples_as_they_were(dtype):
    # samples laid out classes first in memory (a [C, S, N] buffer seen as [S, N, C]): the
    # scores work classes first in place, on a copy, never on the caller's tensor
    g = torch.Generator().manual_seed(10)
    buffer = torch.randn(4, 6, 5, generator=g, dtype=torch.float64).to(dtype)
    samples = buffer.permute(1, 2, 0)
    before = samples.clone()
    result = MCResult(samples, "stored")
    for name in active.SCORES:
        active.score(result, name)
        assert torch.equal(samples, before), name
    assert active.batch_bald(result, 2).shape == (2,)
    assert torch.equal(samples, before)


def test_minus_infinity_logits_in_float64_samples_stay_in_the_samples():
    # float64 samples' .double() is the samples themselves: a clamp in place of that "copy"
    # wrote the lowest finite float over the caller's -inf logits
    g = torch.Generator().manual_seed(11)
    samples = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    samples[:, :, 3] = -torch.inf
    samples[0, 2, 1] = -torch.inf
    before = samples.clone()
    result = MCResult(samples, "stored")
    for name in active.SCORES:
        assert torch.isfinite(active.score(result, name)).all(), name
        assert torch.equal(samples, before), name
    assert active.batch_bald(result, 2).shape == (2,)
    assert torch.equal(samples, before)


def test_float64_logits_further_apart_than_the_largest_float():
    # z = -1e308 - 1e308 overflows to -inf without a logit of -inf: a class of probability 0,
    # as with a logit of -inf (this recursed without end)
    logits = torch.tensor([[[1e308, -1e308, 0.0]], [[0.0, 0.0, 0.0]]], dtype=torch.float64)
    result = MCResult(logits, "stored")
    # sample 0 is certain (entropy 0), sample 1 uniform: BALD = H(mean) - log(3) / 2
    mean = torch.tensor([4 / 6, 1 / 6, 1 / 6], dtype=torch.float64)
    expected = _h(mean) - torch.log(torch.tensor(3.0, dtype=torch.float64)) / 2
    torch.testing.assert_close(active.bald(result), expected[None], rtol=0, atol=ATOL)
    torch.testing.assert_close(active.entropy(result), _h(mean)[None], rtol=0, atol=ATOL)


def test_a_single_output_is_not_scored_as_a_classifier():
    # [S, N, 1]: a regression model's predictions; every score would be 0 (a ranking of ties)
    result = MCResult(torch.randn(4, 6, 1, generator=torch.Generator().manual_seed(12)), "s")
    for name in active.SCORES:
        with pytest.raises(ValueError, match="at least two classes"):
            active.score(result, name)
    for strategy in ("random", "batchbald", "power-bald"):
        with pytest.raises(ValueError, match="at least two classes"):
            active.acquire(result, strategy, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_scores_are_the_same_bits_for_any_dtype_holding_the_logits_and_any_layout(dtype):
    # the scores are those of the logits' values, in float64: the same bits from half logits
    # as from the same values in float64, from a classes-first view, and on a second call
    g = torch.Generator().manual_seed(13)
    samples = torch.randn(5, 7, 4, generator=g).to(dtype)
    samples[:, :, 2] = -torch.inf
    samples[1, 3, 0] = -torch.inf
    view = samples.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    for name in active.SCORES:
        got = active.score(MCResult(samples, "stored"), name)
        assert torch.equal(got, active.score(MCResult(samples.double(), "stored"), name)), name
        assert torch.equal(got, active.score(MCResult(view, "stored"), name)), name
        assert torch.equal(got, active.score(MCResult(samples, "stored"), name)), name
