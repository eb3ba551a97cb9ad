"""Does a gate's threshold transfer to another model family? Calibrate on one model, apply unchanged to another.

Every model answered the same queries (one adapter dataset trained on each base), so each has per query
the trust signals and the eval's verdict on its adapter's answer. One seeded split (stratified by kind)
gives calibration and test halves shared by all models. For each set of signals, each model's rule
(gate.failure.fit_failure_rule) and coverage threshold are fitted on its calibration half; model S's are
applied unchanged to model T's test half, T's risk and coverage set against T's own calibration there;
and split conformal risk control recalibrates only S's threshold on T's labels, counting the points it
needs. Retrieval similarity is the same function on every model; model signals are in each model's own
units, so a threshold on them need not mean anything on another model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.gate.calibration import threshold_for_coverage
from tunelens.gate.failure import fit_failure_rule, split_held_out
from tunelens.gate.outcomes import conformal_risk_threshold, conformal_sample_size, served_bad_rate
from tunelens.gate.signals import MODEL_SIGNALS, RETRIEVAL_SIGNALS, TrustSignals
from tunelens.stats import rate

SIGNAL_SETS = {"retrieval": RETRIEVAL_SIGNALS, "model": MODEL_SIGNALS, "all": RETRIEVAL_SIGNALS + MODEL_SIGNALS}


@dataclass
class ModelRun:
    """One model's side of the experiment, in the shared query order: its signals and its verdicts."""

    name: str
    items: list[TrustSignals]
    adapter_bad: np.ndarray
    base_bad: np.ndarray


def transfer_experiment(runs: Sequence[ModelRun], kinds: Sequence[str], target_coverage: float, alpha: float,
                        holdout: float = 0.5, seed: int = 0, tolerance: float = 0.02) -> dict:
    """The transfer table (every signal set, every calibrated-on -> applied-to pair, own calibration beside
    it), the conformal recalibration size per pair, and how far each signal moves between models."""
    if len(runs) < 2:
        raise UserError("threshold transfer needs at least two models")
    for run in runs:
        if not len(run.items) == len(run.adapter_bad) == len(run.base_bad) == len(kinds):
            raise UserError(f"transfer: model {run.name} has {len(run.items)} signal rows and "
                            f"{len(run.adapter_bad)} verdicts for {len(kinds)} queries; all must answer the same")
    test = split_held_out(np.zeros(len(kinds), bool), holdout, seed, strata=list(kinds))
    table = []
    for set_name, wanted in SIGNAL_SETS.items():
        names = [n for n in wanted if all(getattr(r.items[0], n) is not None for r in runs)]
        if not names:
            continue
        fitted = {r.name: _fit(r, names, ~test, target_coverage) for r in runs}
        table += [_transfer_row(set_name, names, fitted, source, target, test, alpha, seed, tolerance)
                  for source in runs for target in runs if source.name != target.name]
    return {"models": [r.name for r in runs], "queries": len(kinds), "test_queries": int(test.sum()),
            "target_coverage": target_coverage, "alpha": alpha, "tolerance": tolerance, "seed": seed,
            "table": table, "signal_shift": signal_shift(runs), "test_mask": test.tolist()}


def _fit(run: ModelRun, names: list[str], calibration: np.ndarray, target_coverage: float):
    """A model's own rule and threshold, from its calibration half."""
    bad = run.adapter_bad[calibration]
    if bad.all() or not bad.any():
        raise UserError(f"transfer: {run.name}'s adapter answers the calibration half all "
                        f"{'badly' if bad.all() else 'well'}; nothing to calibrate on")
    rule = fit_failure_rule([i for i, c in zip(run.items, calibration) if c], names, bad)
    return rule, threshold_for_coverage(rule.scores(run.items)[calibration], target_coverage)


def _operating_point(scores: np.ndarray, bad: np.ndarray, threshold: float) -> dict:
    kept = scores >= threshold
    return {"coverage": float(kept.mean()), "risk": rate(int(bad[kept].sum()), int(kept.sum())).to_dict(),
            "served_bad": float((bad & kept).mean())}


def _transfer_row(set_name, names, fitted, source: ModelRun, target: ModelRun, test, alpha, seed, tolerance) -> dict:
    """Source's rule and threshold on target's test half, target's own beside it, and conformal recalibration
    of source's rule on target's labelled answers."""
    rule, threshold = fitted[source.name]
    own_rule, own_threshold = fitted[target.name]
    scores = rule.scores(target.items)
    bad = target.adapter_bad
    transferred = _operating_point(scores[test], bad[test], threshold)
    own = _operating_point(own_rule.scores(target.items)[test], bad[test], own_threshold)
    risk, own_risk = transferred["risk"]["rate"], own["risk"]["rate"]
    conformal_threshold = conformal_risk_threshold(scores[~test], bad[~test], alpha)
    size = conformal_sample_size(scores, bad, alpha, tolerance=tolerance, seed=seed)
    return {
        "signals": set_name, "signal_names": names, "calibrated_on": source.name, "applied_to": target.name,
        "threshold": threshold, "own_threshold": own_threshold, "transferred": transferred, "own": own,
        "coverage_change": transferred["coverage"] - own["coverage"],
        "risk_change": None if None in (risk, own_risk) else risk - own_risk,
        "conformal": {"threshold": conformal_threshold,
                      "test_served_bad": served_bad_rate(scores[test], bad[test], conformal_threshold),
                      "test_coverage": float((scores[test] >= conformal_threshold).mean()),
                      "labelled_points_needed": size["labelled_points_needed"], "sizes": size["sizes"]},
    }


def signal_shift(runs: Sequence[ModelRun]) -> dict:
    """Per signal: its mean on each model, and the correlation of its values across queries (first model
    against each other): retrieval signals are the same numbers on every model; a model signal with another
    mean or a low correlation is in another model's units."""
    shift = {}
    for name in RETRIEVAL_SIGNALS + MODEL_SIGNALS:
        if all(getattr(r.items[0], name) is not None for r in runs):
            values = {r.name: np.array([item.value(name) for item in r.items]) for r in runs}
            shift[name] = {"kind": "retrieval" if name in RETRIEVAL_SIGNALS else "model",
                           "mean": {n: float(v.mean()) for n, v in values.items()},
                           "correlation": {r.name: _correlation(values[runs[0].name], values[r.name])
                                           for r in runs[1:]}}
    return shift


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.array_equal(a, b) else None
    return float(np.corrcoef(a, b)[0, 1])


def transfer_reading(result: dict) -> list[str]:
    """One sentence per (signal set, pair): what the threshold gives there against the model's own calibration;
    a change is called one only when the Wilson intervals of the two risks do not overlap."""
    lines = []
    for row in result["table"]:
        moved, own = row["transferred"], row["own"]
        needed = row["conformal"]["labelled_points_needed"]
        lines.append(
            f"{row['signals']} signals, calibrated on {row['calibrated_on']} -> applied to {row['applied_to']}: "
            f"coverage {moved['coverage']:.0%} (own {own['coverage']:.0%}), "
            f"risk {_rate(moved['risk'])} (own {_rate(own['risk'])}): {_risk_verdict(moved['risk'], own['risk'])}; "
            f"conformal recalibration to {result['alpha']:.0%} served bad needs "
            + (f"{needed} labelled points" if needed is not None else "more labelled points than the pool holds"))
    return lines


def _risk_verdict(risk: dict, own: dict) -> str:
    if risk["rate"] is None or own["rate"] is None:
        return "one side keeps no query on the adapter, so the risks cannot be compared"
    if risk["low"] > own["high"]:
        return "the transferred threshold is riskier than the model's own (intervals apart)"
    if risk["high"] < own["low"]:
        return "the transferred threshold is safer than the model's own (intervals apart)"
    return "no difference in risk these queries can show (intervals overlap)"


def _rate(cell: dict) -> str:
    if cell["rate"] is None:
        return "-"
    return f"{cell['rate']:.0%} [{cell['low']:.0%}, {cell['high']:.0%}] ({cell['k']}/{cell['n']})"
