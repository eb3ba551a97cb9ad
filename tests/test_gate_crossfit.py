"""Lesson 4 as the protocol fixes it: cross-fitted routing per split, McNemar per split, 2 x median, AUROCs."""

import numpy as np
import pytest

from tunelens.gate.crossfit import (auroc_table, cross_fitted_routes, failure_rule_fitter, lesson4_seed_table,
                                    score_fitter, split_comparisons, split_result)
from tunelens.gate.signals import TrustSignals
from tunelens.stats import delong_auroc, mcnemar_exact_p


def test_each_half_is_routed_by_a_rule_fitted_on_the_other():
    bad = np.array([i % 5 == 0 for i in range(40)])
    seen = []

    def fit(calibration):
        seen.append(set(calibration.tolist()))
        return lambda indices: (seen.append(set(indices.tolist())) or np.ones(len(indices), bool))

    routes = cross_fitted_routes(bad, fit, seed=1)
    first_fit, first_routed, second_fit, second_routed = seen
    assert routes.all() and first_fit == second_routed and second_fit == first_routed
    assert not first_fit & first_routed and first_fit | first_routed == set(range(40))
    assert sum(bad[list(first_fit)]) == sum(bad[list(first_routed)]) == 4  # failures split evenly


def test_score_fitter_targets():
    scores = np.arange(10.0)
    bad = np.array([True, True] + [False] * 8)
    coverage = score_fitter(scores, bad, target_coverage=0.8)(np.arange(10))
    assert coverage(np.arange(10)).tolist() == [False, False] + [True] * 8
    risk = score_fitter(scores, bad, conformal_alpha=0.2)(np.arange(10))
    assert risk(np.arange(10)).sum() >= 8  # (10/11) * served bad + 1/11 <= 0.2 allows one bad served
    with pytest.raises(ValueError, match="exactly one"):
        score_fitter(scores, bad)


def test_split_result_by_hand():
    routes = np.array([True, False, True, False])
    adapter_bad = np.array([False, True, True, False])
    base_bad = np.array([True, False, False, False])
    result = split_result(routes, adapter_bad, base_bad)
    # routed bad: [F, F, T, F] -> 1 of 4; always-B 2 of 4; routed fixes query 1 and breaks none against B
    assert result["routed_bad"] == 0.25 and result["routed_minus_b"] == -0.25 and result["coverage"] == 0.5
    assert result["discordant_vs_b"] == [0, 1] and result["p_vs_b"] == 1.0
    assert result["routed_minus_base"] == 0.0 and result["discordant_vs_base"] == [1, 1]


def test_the_case_studys_effect_is_seen_in_every_split_and_combined():
    # 200 queries: B bad on the 10 lowest-scored, the base right on them: routing fixes all ten
    scores = np.arange(200.0)
    adapter_bad = scores < 10
    base_bad = np.zeros(200, bool)
    result = split_comparisons(adapter_bad, base_bad, score_fitter(scores, adapter_bad, target_coverage=0.9),
                               splits=5, seed=0)
    assert all(s["routed_bad"] == 0 and s["discordant_vs_b"] == [0, 10] for s in result["per_split"])
    vs_b, vs_base = result["rows"]
    assert vs_b["p_combined"] == pytest.approx(min(1, 2 * mcnemar_exact_p(0, 10)))
    assert vs_b["words"] == "routing serves fewer bad answers" and vs_b["estimate"] == pytest.approx(-0.05)
    assert vs_base["direction"] == "none" and result["summary"]["routed_minus_b"]["sd"] == 0.0


def test_failure_rule_fitter_refits_the_gates_rule():
    rng = np.random.default_rng(0)
    bad = np.array([i % 4 == 0 for i in range(60)])
    items = [TrustSignals(max_similarity=float((0.2 if b else 0.8) + rng.normal(0, 0.05)),
                          mean_similarity=float(rng.normal(0.5, 0.1))) for b in bad]
    fit = failure_rule_fitter(items, ["max_similarity", "mean_similarity"], bad, target_coverage=0.7)
    routes = cross_fitted_routes(bad, fit, seed=2)
    assert not (routes & bad).any()  # the separating signal sends every failure to the base


def test_seed_table_and_auroc_table():
    table = lesson4_seed_table([-0.05, -0.06, -0.04])
    assert table["words"] == "routing serves fewer bad answers" and table["seeds"]["k"] == 3
    good = np.array([True] * 6 + [False] * 6)
    signal = np.array([5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 11.0])
    kinds = ["a", "b"] * 6
    cells = auroc_table({"s": signal}, good, kinds)
    overall = cells[0]
    assert overall["kind"] == "all"
    assert overall["auroc"] == pytest.approx(delong_auroc(signal[good], signal[~good]).auroc)
    assert {c["kind"] for c in cells} == {"all", "a", "b"}
    assert all("p_holm" in c for c in cells if c["auroc"] is not None)
    assert auroc_table({"s": signal[:3]}, good[:3])[0]["auroc"] is None  # no bad answer: no AUROC
