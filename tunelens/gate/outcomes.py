"""Outcomes: which queries the adapter answers badly (from eval results), and the maths of trusting it.

A query's label is the eval's own verdict in results.jsonl (`answer_is_bad`), never a second reading of
the answer. The rest is selective-prediction arithmetic on a trust score (higher = keep the query on the
adapter): risk-coverage, the threshold for a target risk, split conformal risk control, and routed vs
always-adapter vs always-base with Wilson intervals and exact McNemar tests (tunelens.stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.evaluate.scoring import answered_badly
from tunelens.evaluate.results import read_results
from tunelens.stats import mcnemar, rate

ADAPTER_ROLE, BASE_ROLE = "tuned", "base"  # the eval's model roles (tunelens.evaluate.backends)


def answer_is_bad(row: dict) -> bool:
    """The eval's one verdict on an answer (tunelens.evaluate.scoring.answered_badly) for a results.jsonl row."""
    return answered_badly(SimpleNamespace(**row))


@dataclass(frozen=True)
class Outcome:
    """One query answered by both the adapter and the base model, with the eval's verdict on each."""

    suite: str
    case_id: str
    prompt: str
    expect: str
    adapter_bad: bool
    base_bad: bool


def outcomes_from_rows(rows: Iterable[dict], decoding: str = "greedy", sample: int = 0) -> tuple[list[Outcome], dict]:
    """Pair each case's adapter and base answers (one decoding, one sample) into Outcomes, in (suite, case_id)
    order, with counts that reconcile: cases seen, paired, and left out for a missing answer."""
    answers: dict[tuple, dict] = {}
    for row in rows:
        if row["decoding"] == decoding and row["sample"] == sample and row["model"] in (ADAPTER_ROLE, BASE_ROLE):
            answers[(row["suite"], row["case_id"], row["model"])] = row
    cases = sorted({(suite, case_id) for suite, case_id, _ in answers})
    outcomes, unpaired = [], []
    for suite, case_id in cases:
        tuned, base = answers.get((suite, case_id, ADAPTER_ROLE)), answers.get((suite, case_id, BASE_ROLE))
        if tuned is None or base is None:
            unpaired.append(f"{suite}/{case_id}: no {'adapter' if tuned is None else 'base'} answer")
            continue
        outcomes.append(Outcome(suite, case_id, tuned["prompt"], tuned["expect"], answer_is_bad(tuned),
                                answer_is_bad(base)))
    counts = {"cases": len(cases), "paired": len(outcomes), "unpaired": len(unpaired), "unpaired_cases": unpaired}
    return outcomes, counts


def read_outcomes(paths: Sequence[str | Path], decoding: str = "greedy", sample: int = 0) -> tuple[list[Outcome], dict]:
    """Outcomes from one or more results.jsonl files (the adapter's and the base's, or one holding both)."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"eval results not found: {path}")
        for row in read_results(path):
            key = tuple(row[name] for name in ("suite", "case_id", "model", "decoding", "sample"))
            rows[key] = row  # the same answer in two files counts once
    outcomes, counts = outcomes_from_rows(rows.values(), decoding, sample)
    if not outcomes:
        raise UserError(f"{', '.join(map(str, paths))}: no case has both an adapter ('{ADAPTER_ROLE}') and a "
                        f"base ('{BASE_ROLE}') {decoding} answer; run `tunelens eval` with --adapter")
    return outcomes, counts


def risk_coverage(scores: Sequence[float], bad: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, risk) for keeping every query with score >= threshold on the adapter: one point
    per distinct score, highest first; coverage = share of all queries kept, risk = share of the kept ones
    answered badly. Plain equivalent: for each t, mean(bad[scores >= t])."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_bad = scores[order], bad[order]
    last_of_tie = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    kept = last_of_tie + 1
    return sorted_scores[last_of_tie], kept / len(scores), np.cumsum(sorted_bad)[last_of_tie] / kept


def threshold_for_risk(scores: Sequence[float], bad: Sequence[bool], target_risk: float) -> float:
    """The lowest threshold (most queries kept) whose kept answers have risk <= target; inf keeps none."""
    thresholds, _, risk = risk_coverage(scores, bad)
    meets = np.flatnonzero(risk <= target_risk + 1e-12)
    return float(thresholds[meets[-1]]) if len(meets) else math.inf


def conformal_risk_threshold(scores: Sequence[float], bad: Sequence[bool], alpha: float) -> float:
    """Split conformal risk control (Angelopoulos et al. 2022) of the adapter's bad answers served.

    Loss at threshold t: L_i(t) = bad_i * [score_i >= t], in [0, 1], non-increasing in t. The threshold is
    the lowest t with (n / (n + 1)) * mean_i L_i(t) + 1 / (n + 1) <= alpha; then a new exchangeable query
    has E[L(t)] <= alpha. inf (keep none) when even that fails, i.e. when alpha < 1 / (n + 1).
    """
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    n = len(scores)
    if n == 0:
        raise UserError("conformal risk control needs at least one labelled query")
    thresholds, coverage, risk = risk_coverage(scores, bad)
    served_bad = risk * coverage  # mean_i L_i(t) at each candidate t
    meets = np.flatnonzero(n / (n + 1) * served_bad + 1 / (n + 1) <= alpha + 1e-12)
    return float(thresholds[meets[-1]]) if len(meets) else math.inf


def served_bad_rate(scores: Sequence[float], bad: Sequence[bool], threshold: float) -> float:
    """Share of queries kept on the adapter (score >= threshold) and answered badly by it."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    return float(np.mean(bad & (scores >= threshold)))


def conformal_sample_size(scores: Sequence[float], bad: Sequence[bool], alpha: float, tolerance: float = 0.02,
                          sizes: Sequence[int] | None = None, trials: int = 200, seed: int = 0) -> dict:
    """How many labelled queries conformal risk control needs to bring the served-bad rate to alpha.

    For each calibration size n, `trials` random splits of the pool: the threshold from n queries, the
    served-bad rate on the rest. The answer is the smallest n whose mean rate is within `tolerance` below
    alpha (with few points the method is conservative by about 1 / (n + 1)); None when no size reaches it.
    """
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    total = len(scores)
    sizes = sorted(sizes or [n for n in (5, 10, 20, 40, 80, 160, 320, 640) if n < total])
    rng = np.random.default_rng(seed)
    table = []
    for n in sizes:
        if not 0 < n < total:
            raise UserError(f"calibration size {n}: must be between 1 and {total - 1} (the pool has {total})")
        realised = []
        for _ in range(trials):
            order = rng.permutation(total)
            calib, test = order[:n], order[n:]
            threshold = conformal_risk_threshold(scores[calib], bad[calib], alpha)
            realised.append(served_bad_rate(scores[test], bad[test], threshold))
        table.append({"n": n, "mean_served_bad": float(np.mean(realised)),
                      "p90_served_bad": float(np.quantile(realised, 0.9))})
    needed = next((row["n"] for row in table
                   if alpha - tolerance <= row["mean_served_bad"] <= alpha + 1e-12), None)
    return {"alpha": alpha, "tolerance": tolerance, "trials": trials, "pool": total, "sizes": table,
            "labelled_points_needed": needed}


def routed_comparison(to_adapter: Sequence[bool], adapter_bad: Sequence[bool], base_bad: Sequence[bool]) -> dict:
    """Bad-output rates (95% Wilson intervals) of the routed system, always-adapter and always-base on the
    same queries, and exact McNemar tests of routed against each (pairs: (other ok, routed ok))."""
    to_adapter, adapter_bad, base_bad = (np.asarray(x, bool) for x in (to_adapter, adapter_bad, base_bad))
    routed_bad = np.where(to_adapter, adapter_bad, base_bad)
    n = len(routed_bad)
    vs_adapter, vs_base = (mcnemar([(not o, not r) for o, r in zip(other_bad, routed_bad)]).to_dict()
                           for other_bad in (adapter_bad, base_bad))
    return {"queries": n, "coverage": float(to_adapter.mean()) if n else None,
            "risk_on_adapter": float(adapter_bad[to_adapter].mean()) if to_adapter.any() else None,
            "routed": rate(int(routed_bad.sum()), n).to_dict(),
            "always_adapter": rate(int(adapter_bad.sum()), n).to_dict(),
            "always_base": rate(int(base_bad.sum()), n).to_dict(),
            "mcnemar_routed_vs_adapter": vs_adapter, "mcnemar_routed_vs_base": vs_base}
