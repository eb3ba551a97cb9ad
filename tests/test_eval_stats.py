"""Wilson intervals and the exact McNemar test against values computed by hand."""

import math

import pytest

from tunelens.stats import Z95, binomial_cdf_half, mcnemar, mcnemar_exact_p, rate, wilson_interval


def test_wilson_at_zero_is_z2_over_n_plus_z2():
    # k = 0: the interval is [0, z^2 / (n + z^2)]; for n = 10 that is 3.8415 / 13.8415 = 0.27753
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2)) and high == pytest.approx(0.27753, abs=1e-5)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.27753, abs=1e-5)


def test_wilson_half_and_a_textbook_value():
    # 5/10: centre 0.5, half-width (z / 1.38415) * sqrt(0.025 + z^2/400) = 0.26340
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 1/134 (one bad output in 134 generations): centre (1/134 + z^2/268) / (1 + z^2/134)
    centre = (1 / 134 + Z95 ** 2 / 268) / (1 + Z95 ** 2 / 134)
    half = Z95 / (1 + Z95 ** 2 / 134) * math.sqrt((1 / 134) * (133 / 134) / 134 + Z95 ** 2 / (4 * 134 ** 2))
    assert wilson_interval(1, 134) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(1, 134) == pytest.approx((0.00132, 0.04105), abs=1e-5)


def test_wilson_rejects_nonsense_and_rate_handles_empty():
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    empty = rate(0, 0)
    assert (empty.rate, empty.low, empty.high) == (None, None, None)
    assert rate(3, 4).rate == 0.75


def test_binomial_tail_sums():
    # P(X <= 1), X ~ Bin(10, 1/2) = (1 + 10) / 1024
    assert binomial_cdf_half(1, 10) == pytest.approx(11 / 1024)
    assert binomial_cdf_half(2, 10) == pytest.approx(56 / 1024)
    assert binomial_cdf_half(-1, 5) == 0.0 and binomial_cdf_half(5, 5) == 1.0


@pytest.mark.parametrize("b,c,expected", [
    (0, 5, 2 / 32),            # 0.0625: five discordant pairs all one way is not yet significant
    (0, 6, 2 / 64),            # 0.03125: six is
    (1, 9, 2 * 11 / 1024),     # 0.02148
    (2, 8, 2 * 56 / 1024),     # 0.109375
    (5, 5, 1.0),               # 2 * P(X <= 5) > 1, capped
    (0, 0, 1.0),               # no discordant pairs: no evidence either way
])
def test_mcnemar_exact_by_hand(b, c, expected):
    assert mcnemar_exact_p(b, c) == pytest.approx(expected)
    assert mcnemar_exact_p(c, b) == pytest.approx(expected)


def test_mcnemar_counts_pairs():
    pairs = [(True, False)] * 6 + [(True, True)] * 3 + [(False, False)] * 2
    result = mcnemar(pairs)
    assert (result.n_pairs, result.both, result.base_only, result.tuned_only, result.neither) == (11, 3, 6, 0, 2)
    assert result.tuned_worse and result.significant() and result.p_value == pytest.approx(1 / 32)
    assert not mcnemar([(False, True)] * 6).tuned_worse


def test_bootstrap_mean_of_constant_values_has_zero_width():
    from tunelens.stats import bootstrap_mean

    result = bootstrap_mean([2.0] * 7)
    assert (result.n, result.mean, result.low, result.high) == (7, 2.0, 2.0, 2.0)
    assert bootstrap_mean([]).mean is None


def test_bootstrap_interval_covers_the_mean_and_matches_the_normal_width():
    import random

    from tunelens.stats import bootstrap_mean

    rng = random.Random(1)
    values = [rng.gauss(1.0, 2.0) for _ in range(400)]
    result = bootstrap_mean(values, resamples=4000)
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = Z95 * sd / math.sqrt(len(values))  # the normal-theory half-width, about 0.2 here
    assert result.low < mean < result.high
    assert (result.high - result.low) / 2 == pytest.approx(half, rel=0.1)


def test_sign_test_drops_zeros_and_is_two_sided():
    from tunelens.stats import sign_test_p

    # 8 positive, 0 negative: 2 * (1/2)^8 = 0.0078125
    assert sign_test_p([1] * 8 + [0] * 5) == pytest.approx(0.0078125)
    assert sign_test_p([1, -1]) == 1.0
