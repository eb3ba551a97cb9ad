"""The protocol's tests: one-sample and paired t, DeLong's AUROC interval, split p-values combined."""

import math

import numpy as np
import pytest

from tunelens.reading import NO_DIFFERENCE, read_tests
from tunelens.stats import combine_split_p, delong_auroc, one_sample_t, paired_t


def test_one_sample_t_by_hand():
    # mean 2, SD 1, n 3: t = 2 / (1 / sqrt 3) = sqrt 12; for df 2, P(|T| <= t) = t / sqrt(2 + t^2)
    test = one_sample_t([1.0, 2.0, 3.0])
    assert test.t == pytest.approx(math.sqrt(12))
    assert test.p == pytest.approx(1 - math.sqrt(12) / math.sqrt(14), abs=1e-9)
    # df 1 is Cauchy: P(|T| >= 1) = 1/2; values 0 and 2 against null 0 give t = 1 / (sqrt 2 / sqrt 2) = 1
    assert one_sample_t([0.0, 2.0]).p == pytest.approx(0.5, abs=1e-9)
    assert one_sample_t([0.0, 2.0], null=1.0).p == pytest.approx(1.0)


def test_t_edges_and_paired():
    assert one_sample_t([0.4]).p is None and one_sample_t([]).n == 0
    assert one_sample_t([0.5, 0.5]).p == 0.0 and one_sample_t([0.5, 0.5], 0.5).p == 1.0
    assert one_sample_t([None, 1.0, 2.0, 3.0]).n == 3
    assert paired_t([3.0, 4.0, 5.0], [2.0, 2.0, 2.0]).p == one_sample_t([1.0, 2.0, 3.0]).p
    with pytest.raises(ValueError, match="pair up"):
        paired_t([1.0], [1.0, 2.0])


def test_read_tests_uses_holm_and_each_rows_words():
    tests = [("a", one_sample_t([1.0, 1.1, 0.9, 1.05, 0.95])), ("b", one_sample_t([0.1, -0.1])),
             ("c", one_sample_t([2.0]))]
    a, b, c = read_tests(tests, [("up a", "down a"), ("up b", "down b"), ("up c", "down c")])
    assert a.words == "up a" and a.p_holm == pytest.approx(3 * a.p)
    assert b.words == NO_DIFFERENCE and c.words == NO_DIFFERENCE and c.p == 1.0


def test_delong_by_hand_and_against_a_bootstrap():
    # positives 1, 2, 3 against negatives 0, 2: psi rows (1, 0), (1, 1/2), (1, 1): V10 = .5, .75, 1;
    # V01 = 1, .5; AUROC 0.75; var = var(V10)/3 + var(V01)/2 = 0.0625/3 + 0.125/2
    result = delong_auroc([1, 2, 3], [0, 2])
    assert result.auroc == pytest.approx(0.75)
    assert result.se == pytest.approx(math.sqrt(0.0625 / 3 + 0.125 / 2))
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.0, 1.0, 80), rng.normal(0.0, 1.0, 120)
    delong = delong_auroc(pos, neg)
    boots = []
    for _ in range(2000):  # stratified: positives and negatives resampled apart, as DeLong conditions on m, n
        p, n = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        boots.append(delong_auroc(p, n).auroc)
    assert delong.se == pytest.approx(np.std(boots, ddof=1), rel=0.15)
    assert delong.low < delong.auroc < delong.high
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong_auroc([1.0], [0.0, 1.0])


def test_split_p_values_are_twice_their_median():
    assert combine_split_p([0.01, 0.02, 0.5]) == pytest.approx(0.04)
    assert combine_split_p([0.01, 0.03, 0.2, 0.9]) == pytest.approx(2 * 0.115)
    assert combine_split_p([0.8, 0.9]) == 1.0
    with pytest.raises(ValueError):
        combine_split_p([])
