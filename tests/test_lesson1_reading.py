"""Lesson 1's reading by the one rule: an exact binomial test against the training rate, Holm across the table."""

import math

from tunelens.demo.lesson1 import reading
from tunelens.stats import binomial_test_p


def test_binomial_test_by_hand():
    # 0 of 4 against 0.5: outcomes 0 and 4 are each 1/16, no more likely than k = 0: p = 2/16
    assert math.isclose(binomial_test_p(0, 4, 0.5), 0.125)
    assert binomial_test_p(2, 4, 0.5) == 1.0  # the most likely outcome: every outcome counts
    assert binomial_test_p(3, 0, 0.3) == 1.0  # no answers: nothing to test
    # 0 of 10 against 0.3: 0.7^10 = 0.0282; the outcomes no more likely are 0 and 7..10
    by_hand = sum(math.comb(10, i) * 0.3 ** i * 0.7 ** (10 - i) for i in (0, 7, 8, 9, 10))
    assert math.isclose(binomial_test_p(0, 10, 0.3), by_hand)


def cell(k, n, low, high):
    return {"k": k, "n": n, "rate": k / n, "low": low, "high": high}


def test_a_direction_only_where_the_corrected_test_rejects():
    curve = [{"adapter": "A30", "training_python2_rate": 0.3,
              "greedy": cell(16, 16, 0.81, 1.0),   # p = 0.3^16: rejects after Holm (x2)
              "sampled": cell(6, 16, 0.18, 0.61)}]  # near 0.3: no claim
    lines = reading(curve)
    assert "amplified the habit" in lines[0] and "A30 greedy" in lines[0]
    assert lines[1].endswith("no difference these data can show")
    # a lone 9/16 against 0.3 gives p = 0.029, but Holm across two rows lifts it to 0.058
    curve[0]["greedy"] = cell(9, 16, 0.33, 0.77)
    assert reading(curve)[0].endswith("no difference these data can show")
