"""Failure-calibrated gate: trust signals scored on whether the adapter's answer was actually bad.

`calibrate_on_outcomes` splits Outcomes (eval results of adapter and base on the same cases) into a
calibration and a held-out part, stratified by the adapter's failures. On the first it fits the rule
predicting a good adapter answer and the threshold for a target risk (bad-output rate of the answers kept
on the adapter) or coverage (share kept); on the second it measures each signal's and the rule's AUROC
for failure, the risk-coverage curves, routed vs always-adapter vs always-base (Wilson intervals,
McNemar) and split conformal risk control; and it times each signal family per query. The result routes
like the in/out-of-domain Calibration, so `Gate.route` and `tunelens serve` use whichever one is saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.gate.calibration import FittedRule, LogisticRule, auroc, fit_rule, threshold_for_coverage
from tunelens.gate.outcomes import (Outcome, conformal_risk_threshold, conformal_sample_size, risk_coverage,
                                    routed_comparison, served_bad_rate, threshold_for_risk)
from tunelens.gate.signals import MODEL_SIGNALS, RETRIEVAL_SIGNALS, TrustSignals, add_model_signals
from tunelens.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from tunelens.report import figure_png, new_figure

if TYPE_CHECKING:
    from tunelens.gate.routing import Gate

OUTCOME_KIND = "outcome"
MIN_FAILURES = 2  # per part: an AUROC or a risk needs failures on both sides of the split


@dataclass
class OutcomeCalibration(LogisticRule):
    """The failure-calibrated routing rule and what it was measured to do (calibration.json, kind outcome);
    its score is the probability that the adapter's answer is good."""

    signals: list[str]
    directions: dict  # signal -> +1 (higher = adapter more likely right) or -1
    mean: list[float]
    std: list[float]
    weights: list[float]  # logistic weights on standardised, oriented signals; last is the bias
    threshold: float  # on the combined score, P(adapter answer good); route = adapter when score >= it
    target: dict  # {"risk": r} or {"coverage": c}
    calibration_split: dict  # coverage and risk reached at the threshold on the calibration part
    auroc: dict  # held out: signal or "combined" -> AUROC of predicting the adapter's failure
    raw_auroc: dict  # calibration part, raw value (higher = good), before orientation
    failures: dict  # failures and queries behind each figure: calibration, held_out
    cost_ms_per_query: dict  # signal -> milliseconds per query of the computation it needs
    held_out: dict  # routed vs always-adapter vs always-base on the held-out queries
    conformal: dict  # split conformal risk control: threshold, held-out served-bad rate, points needed
    curves: dict = field(default_factory=dict)  # held out: name -> {"coverage": [...], "risk": [...]}
    counts: dict = field(default_factory=dict)
    model: dict | None = None
    inputs: dict = field(default_factory=dict)
    kind: str = OUTCOME_KIND


def timed_signals(gate: "Gate", queries: Sequence[str], model=None, tokenizer=None,
                  progress=None) -> tuple[list[TrustSignals], dict]:
    """All signals per query, and the milliseconds per query each one costs. The similarity signals come
    from one embedding and search, KL and perplexity from the same forward passes, so each family's time
    is reported for its members."""
    start = time.perf_counter()
    items = gate.retrieval_signals(list(queries), progress=progress)
    retrieval_ms = (time.perf_counter() - start) * 1000 / len(queries)
    cost = {name: retrieval_ms for name in RETRIEVAL_SIGNALS}
    if model is None:
        return items, cost | {"combined": retrieval_ms}
    start = time.perf_counter()
    add_model_signals(items, model, tokenizer, queries, progress)
    model_ms = (time.perf_counter() - start) * 1000 / len(queries)
    cost |= {name: model_ms for name in MODEL_SIGNALS if getattr(items[0], name) is not None}
    return items, cost | {"combined": retrieval_ms + model_ms}


def split_held_out(bad: np.ndarray, holdout: float, seed: int, strata: Sequence | None = None) -> np.ndarray:
    """A boolean mask of held-out queries, stratified so both parts get their share of failures (and,
    with `strata`, their share of each stratum's failures: e.g. of each kind of query)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(bad), bool)
    groups = [None] if strata is None else sorted(set(strata), key=str)
    for group in groups:
        in_group = np.ones(len(bad), bool) if group is None else np.array([s == group for s in strata])
        for label in (False, True):
            members = rng.permutation(np.flatnonzero(in_group & (bad == label)))
            held[members[:round(holdout * len(members))]] = True
    return held


def fit_failure_rule(items: Sequence[TrustSignals], names: Sequence[str], bad: np.ndarray) -> FittedRule:
    """Orient each signal and fit the combiner to predict a good adapter answer (high score = keep)."""
    return fit_rule(items, names, (~np.asarray(bad, bool)).astype(int))


def _check_inputs(outcomes: Sequence[Outcome], target_risk, target_coverage, holdout) -> None:
    if (target_risk is None) == (target_coverage is None):
        raise UserError("give exactly one of a target risk and a target coverage")
    if target_risk is not None and not 0 <= target_risk < 1:
        raise UserError(f"target risk must be in [0, 1), got {target_risk}")
    if target_coverage is not None and not 0 < target_coverage <= 1:
        raise UserError(f"target coverage must be in (0, 1], got {target_coverage}")
    if not 0 < holdout < 1:
        raise UserError(f"held-out share must be in (0, 1), got {holdout}")
    failures = sum(o.adapter_bad for o in outcomes)
    if min(failures, len(outcomes) - failures) < 2 * MIN_FAILURES:
        raise UserError(f"failure calibration needs at least {2 * MIN_FAILURES} bad and {2 * MIN_FAILURES} good "
                        f"adapter answers, got {failures} bad of {len(outcomes)}")


def calibrate_on_outcomes(gate: "Gate", outcomes: Sequence[Outcome], model=None, tokenizer=None,
                          target_risk: float | None = None, target_coverage: float | None = None,
                          holdout: float = 0.5, seed: int = 0, progress=None, model_info: dict | None = None,
                          inputs: dict | None = None, write: bool = True,
                          strata: Sequence | None = None, conformal_alpha: float | None = None) -> OutcomeCalibration:
    """Fit the failure-calibrated rule on one part of the outcomes, measure it on the other; write the files.
    `strata` (a label per outcome, e.g. its kind of query): both parts keep each stratum's share of failures.
    `conformal_alpha`: the served-bad rate conformal risk control aims at (default: the target risk; with
    neither, no conformal figures)."""
    _check_inputs(outcomes, target_risk, target_coverage, holdout)
    items, cost = timed_signals(gate, [o.prompt for o in outcomes], model, tokenizer, progress)
    bad = np.array([o.adapter_bad for o in outcomes])
    base_bad = np.array([o.base_bad for o in outcomes])
    held = split_held_out(bad, holdout, seed, strata)
    names = list(items[0].scores())  # the signals computed: retrieval, and the model's when given one
    rule = fit_failure_rule([item for item, h in zip(items, held) if not h], names, bad[~held])
    matrix, combined = rule.matrix(items), rule.scores(items)
    fit_scores, fit_bad = combined[~held], bad[~held]
    threshold = (threshold_for_risk(fit_scores, fit_bad, target_risk) if target_risk is not None
                 else threshold_for_coverage(fit_scores, target_coverage))
    columns = {name: matrix[:, i] for i, name in enumerate(names)} | {"combined": combined}
    calibration = OutcomeCalibration(
        signals=names, directions=rule.directions, mean=rule.mean.tolist(), std=rule.std.tolist(),
        weights=rule.weights.tolist(), threshold=threshold,
        target={"risk": target_risk} if target_risk is not None else {"coverage": target_coverage},
        calibration_split=_operating_point(fit_scores, fit_bad, threshold),
        auroc={name: _failure_auroc(values[held], bad[held]) for name, values in columns.items()},
        raw_auroc=rule.raw_auroc,
        failures={"calibration": int(fit_bad.sum()), "calibration_queries": int((~held).sum()),
                  "held_out": int(bad[held].sum()), "held_out_queries": int(held.sum())},
        cost_ms_per_query=cost,
        held_out=routed_comparison(combined[held] >= threshold, bad[held], base_bad[held]),
        conformal=_conformal(fit_scores, fit_bad, combined[held], bad[held],
                             target_risk if conformal_alpha is None else conformal_alpha, seed),
        curves={name: _curve(values[held], bad[held]) for name, values in columns.items()},
        counts={"queries": len(outcomes), "failures": int(bad.sum()), "base_failures": int(base_bad.sum()),
                "holdout": holdout, "seed": seed},
        model=model_info, inputs=inputs or {},
    )
    if write:
        atomic_write_json(gate.directory / "calibration.json", calibration.to_dict())
        atomic_write_bytes(gate.directory / "risk_coverage.png", risk_coverage_plot_png(calibration))
        atomic_write_jsonl(gate.directory / "calibration_scores.jsonl", (
            {"suite": o.suite, "case_id": o.case_id, "expect": o.expect, "query": o.prompt,
             "adapter_bad": o.adapter_bad, "base_bad": o.base_bad, "held_out": bool(h), "score": float(p),
             "route": "adapter" if p >= threshold else "base", "signals": item.scores()}
            for o, item, p, h in zip(outcomes, items, combined, held)))
    gate.calibration = calibration
    return calibration


def _failure_auroc(values: np.ndarray, bad: np.ndarray) -> float | None:
    """P(a failure scores below a success): the AUROC of low trust predicting a bad answer."""
    return None if bad.all() or not bad.any() else auroc(values[~bad], values[bad])


def _operating_point(scores: np.ndarray, bad: np.ndarray, threshold: float) -> dict:
    kept = scores >= threshold
    return {"coverage": float(kept.mean()), "risk": float(bad[kept].mean()) if kept.any() else None,
            "kept": int(kept.sum()), "queries": len(scores)}


def _curve(scores: np.ndarray, bad: np.ndarray) -> dict:
    thresholds, coverage, risk = risk_coverage(scores, bad)
    return {"threshold": thresholds.tolist(), "coverage": coverage.tolist(), "risk": risk.tolist()}


def _conformal(fit_scores, fit_bad, held_scores, held_bad, target_risk, seed) -> dict:
    """Split conformal risk control with alpha = the target risk, applied to the served-bad rate (bad
    adapter answers as a share of all queries, a bound on risk x coverage): its threshold from the
    calibration part, what it gives held out, and how many labelled points bring it within 2 points."""
    if target_risk is None:
        return {}
    alpha = max(target_risk, 1e-9)
    threshold = conformal_risk_threshold(fit_scores, fit_bad, alpha)
    pool_scores, pool_bad = np.r_[fit_scores, held_scores], np.r_[fit_bad, held_bad]
    return {"alpha": alpha, "threshold": threshold,
            "held_out_served_bad": served_bad_rate(held_scores, held_bad, threshold),
            "held_out_coverage": float((held_scores >= threshold).mean()),
            "sample_size": conformal_sample_size(pool_scores, pool_bad, alpha, seed=seed)}


def risk_coverage_plot_png(calibration: OutcomeCalibration) -> bytes:
    """Held-out risk-coverage curve of each signal and the combiner, with the chosen operating point."""
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    for name, curve in calibration.curves.items():
        value = calibration.auroc.get(name)
        label = f"{name} (AUROC {value:.3f})" if value is not None else name
        style = dict(linewidth=2.5, color="black") if name == "combined" else dict(linewidth=1.3)
        ax.step(curve["coverage"], curve["risk"], where="post", label=label, **style)
    point = calibration.held_out
    if point["risk_on_adapter"] is not None:
        ax.plot([point["coverage"]], [point["risk_on_adapter"]], "o", color="crimson",
                label=f"threshold {calibration.threshold:.3f}: {point['coverage']:.0%} kept, "
                      f"{point['risk_on_adapter']:.0%} of them bad")
    always = point["always_adapter"]["rate"]
    ax.axhline(always, color="grey", linestyle=":", label=f"always adapter: {always:.0%} bad")
    ax.set(xlabel="share of queries kept on the adapter (coverage)", ylabel="bad-output rate of kept answers (risk)",
           xlim=(0, 1.02), ylim=(0, 1.02),
           title=f"Risk vs coverage, held out ({calibration.failures['held_out']} failures in "
                 f"{calibration.failures['held_out_queries']} queries)")
    ax.legend(fontsize=7, loc="upper left")
    return figure_png(fig)
