"""Lesson 4 as docs/protocol.md fixes it: cross-fitted routing over many random splits, exact McNemar per
split, the split p-values combined as min(1, 2 x median), and AUROCs with DeLong intervals.

Each split is 2-fold cross-fitted (each half routed by a rule fitted on the other), so every query gets an
out-of-sample decision and each split's McNemar sees all queries. The splits share queries, so their
p-values are combined by 2 x median, valid under any dependence (Meinshausen, Meier and Buehlmann 2009).
The per-adapter estimand is the routed minus always-B bad rate averaged over the splits; across training
seeds it is tested by a one-sample t (`lesson4_seed_table`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from tunelens.gate.calibration import threshold_for_coverage
from tunelens.gate.failure import fit_failure_rule, split_held_out
from tunelens.gate.outcomes import conformal_risk_threshold
from tunelens.reading import read_table, read_tests
from tunelens.stats import across_seeds, combine_split_p, delong_auroc, mcnemar, one_sample_t

# fit(calibration indices) -> route(indices) -> bool per index (True: serve the adapter's answer)
Router = Callable[[np.ndarray], np.ndarray]
Fitter = Callable[[np.ndarray], Router]
COMPARISONS = ("routed vs always-B", "routed vs always-base")


def score_fitter(scores: Sequence[float], bad: Sequence[bool], target_coverage: float | None = None,
                 conformal_alpha: float | None = None) -> Fitter:
    """A fitter for one fixed score per query (high = trust the adapter): the threshold is chosen on the
    calibration indices for a coverage target or a split-conformal risk target (exactly one of the two)."""
    if (target_coverage is None) == (conformal_alpha is None):
        raise ValueError("score_fitter: give exactly one of a target coverage and a conformal alpha")
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)

    def fit(calibration: np.ndarray) -> Router:
        threshold = (threshold_for_coverage(scores[calibration], target_coverage) if target_coverage is not None
                     else conformal_risk_threshold(scores[calibration], bad[calibration], conformal_alpha))
        return lambda indices: scores[indices] >= threshold

    return fit


def failure_rule_fitter(items: Sequence, names: Sequence[str], bad: Sequence[bool],
                        target_coverage: float | None = None, conformal_alpha: float | None = None) -> Fitter:
    """A fitter that refits the gate's failure rule (gate.failure.fit_failure_rule) on the calibration
    indices, then picks its threshold there as score_fitter does."""
    bad = np.asarray(bad, bool)

    def fit(calibration: np.ndarray) -> Router:
        rule = fit_failure_rule([items[i] for i in calibration], list(names), bad[calibration])
        scores = rule.scores(list(items))
        return score_fitter(scores, bad, target_coverage, conformal_alpha)(calibration)

    return fit


def cross_fitted_routes(bad: Sequence[bool], fit: Fitter, seed: int, strata: Sequence | None = None) -> np.ndarray:
    """One split's routing: the queries halved (seeded, stratified as the gate's own split), each half routed
    by the rule fitted on the other half."""
    bad = np.asarray(bad, bool)
    held = split_held_out(bad, 0.5, seed, strata)
    routes = np.zeros(len(bad), bool)
    for part in (held, ~held):
        if part.any():
            routes[part] = fit(np.flatnonzero(~part))(np.flatnonzero(part))
    return routes


def split_result(routes: np.ndarray, adapter_bad: np.ndarray, base_bad: np.ndarray) -> dict:
    """Bad rates of routed, always-B and always-base on all queries, and the exact McNemar p of routed
    against each (pairs: (other ok, routed ok))."""
    routed_bad = np.where(routes, adapter_bad, base_bad)
    n = len(routed_bad)
    vs_b, vs_base = (mcnemar([(not o, not r) for o, r in zip(other_bad, routed_bad)])
                     for other_bad in (adapter_bad, base_bad))
    return {"coverage": float(routes.mean()), "routed_bad": float(routed_bad.sum() / n),
            "always_b_bad": float(adapter_bad.sum() / n), "always_base_bad": float(base_bad.sum() / n),
            "routed_minus_b": float((routed_bad.sum() - adapter_bad.sum()) / n),
            "routed_minus_base": float((routed_bad.sum() - base_bad.sum()) / n),
            "p_vs_b": vs_b.p_value, "p_vs_base": vs_base.p_value,
            "discordant_vs_b": [vs_b.base_only, vs_b.tuned_only],
            "discordant_vs_base": [vs_base.base_only, vs_base.tuned_only]}


def split_comparisons(adapter_bad: Sequence[bool], base_bad: Sequence[bool], fit: Fitter, splits: int = 20,
                      seed: int = 0, strata: Sequence | None = None) -> dict:
    """One adapter's lesson 4: `splits` cross-fitted splits (seeds seed ... seed + splits - 1), their rates
    and McNemar p-values with mean and spread, and each comparison's combined p read by the rule (Holm)."""
    adapter_bad, base_bad = np.asarray(adapter_bad, bool), np.asarray(base_bad, bool)
    if len(adapter_bad) != len(base_bad) or not len(adapter_bad):
        raise ValueError(f"split_comparisons: {len(adapter_bad)} adapter and {len(base_bad)} base outcomes")
    if splits < 1:
        raise ValueError(f"split_comparisons needs at least one split, got {splits}")
    per_split = [split_result(cross_fitted_routes(adapter_bad, fit, seed + k, strata), adapter_bad, base_bad)
                 for k in range(splits)]

    def spread(key):
        values = np.array([s[key] for s in per_split])
        return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                "min": float(values.min()), "max": float(values.max())}

    rows = [(name, spread(f"routed_minus_{key}")["mean"], combine_split_p([s[f"p_vs_{key}"] for s in per_split]))
            for name, key in zip(COMPARISONS, ("b", "base"))]
    readings = read_table(rows, up="routing serves more bad answers", down="routing serves fewer bad answers")
    return {"queries": len(adapter_bad), "splits": splits,
            "summary": {key: spread(key) for key in ("coverage", "routed_bad", "routed_minus_b", "routed_minus_base")},
            "always_b_bad": float(adapter_bad.mean()), "always_base_bad": float(base_bad.mean()),
            "rows": [{"row": r.name, "estimate": r.estimate, "p_combined": r.p, "p_holm": r.p_holm,
                      "direction": r.direction, "words": r.words} for r in readings],
            "per_split": per_split}


def lesson4_seed_table(per_seed_routed_minus_b: Sequence[float | None]) -> dict:
    """Across training seeds: the one-sample t of the per-seed (routed - always-B) against 0, a table of one."""
    test = one_sample_t(per_seed_routed_minus_b)
    (reading,) = read_tests([("routed minus always-B", test)],
                            [("routing serves more bad answers", "routing serves fewer bad answers")])
    return {"seeds": across_seeds(per_seed_routed_minus_b).to_dict(), "test": test.to_dict(),
            "direction": reading.direction, "words": reading.words}


def auroc_table(signals: dict[str, Sequence[float]], good: Sequence[bool],
                kinds: Sequence[str] | None = None) -> list[dict]:
    """AUROC per signal (good answers positive, high = trust) with its DeLong interval, overall and per kind
    of query, each against 0.5 by the normal test on DeLong's SE, Holm over the table (a secondary table:
    it never decides a headline). A cell with fewer than 2 good or 2 bad answers is None."""
    good = np.asarray(good, bool)
    groups = [("all", np.ones(len(good), bool))]
    if kinds is not None:
        groups += [(kind, np.array([k == kind for k in kinds])) for kind in sorted(set(kinds))]
    cells = []
    for name, values in signals.items():
        values = np.asarray(values, float)
        for group, mask in groups:
            pos, neg = values[mask & good], values[mask & ~good]
            cell = {"signal": name, "kind": group, "auroc": None}
            if len(pos) >= 2 and len(neg) >= 2:
                result = delong_auroc(pos, neg)
                cell |= result.to_dict() | {"p": _p_against_half(result.auroc, result.se)}
            cells.append(cell)
    tested = [c for c in cells if c["auroc"] is not None]
    readings = read_table([(f"{c['signal']} / {c['kind']}", c["auroc"] - 0.5, c["p"]) for c in tested],
                          up="separates good from bad", down="ranks bad above good")
    for cell, reading in zip(tested, readings):
        cell |= {"p_holm": reading.p_holm, "direction": reading.direction, "words": reading.words}
    return cells


def _p_against_half(auroc: float, se: float) -> float:
    """Two-sided normal p of AUROC = 0.5 given DeLong's SE; zero SE (every pair ordered alike) gives 0, or 1
    when every pair ties."""
    if se == 0:
        return 1.0 if auroc == 0.5 else 0.0
    return math.erfc(abs(auroc - 0.5) / se / math.sqrt(2))
