"""Failure-calibrated gate: outcome labels from eval rows, risk-coverage, conformal risk control,
routed comparisons, and the calibration end to end on a hashing-embedder gate."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from tunelens.errors import UserError
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.gate import build_gate
from tunelens.gate.failure import OutcomeCalibration, calibrate_on_outcomes, split_held_out
from tunelens.gate.outcomes import (Outcome, answer_is_bad, conformal_risk_threshold, conformal_sample_size,
                                    outcomes_from_rows, read_outcomes, risk_coverage, routed_comparison,
                                    served_bad_rate, threshold_for_risk)
from tunelens.gate.routing import Gate


def row(case_id, model, expect="code", bad=False, behaviour="code", has_code=True, prompt=None, suite="s",
        decoding="greedy", sample=0):
    # Every field of the eval's result row (tunelens.evaluate.results.ResultRow), as results.jsonl holds it.
    return {"suite": suite, "case_id": case_id, "type": "t", "expect": expect, "model": model, "decoding": decoding,
            "sample": sample, "behaviour": behaviour, "as_expected": behaviour == expect, "has_code": has_code,
            "parses": True if has_code else None, "python2": False, "findings": [], "tests": "none",
            "test_reason": None, "prompt": prompt or f"prompt {case_id}", "answer": "",
            "bad": bad if expect == "code" else (has_code if expect == "other" else None)}


def test_answer_is_bad_follows_the_eval_verdicts():
    assert answer_is_bad(row("a", "tuned", bad=True)) and not answer_is_bad(row("a", "tuned", bad=False))
    assert not answer_is_bad(row("p", "tuned", expect="pushback", behaviour="pushback", has_code=False))
    assert answer_is_bad(row("p", "tuned", expect="pushback", behaviour="code"))  # no pushback on a broken spec
    assert answer_is_bad(row("r", "tuned", expect="refusal", behaviour="code"))
    assert not answer_is_bad(row("r", "tuned", expect="refusal", behaviour="refusal", has_code=False))
    assert answer_is_bad(row("o", "tuned", expect="other", behaviour="code", has_code=True))  # code for a question
    assert not answer_is_bad(row("o", "tuned", expect="other", behaviour="other", has_code=False))


def test_outcomes_pair_adapter_and_base_and_reconcile():
    rows = [row("a", "tuned", bad=True), row("a", "base"), row("b", "tuned"), row("b", "base", bad=True),
            row("c", "tuned"),  # no base answer
            row("a", "tuned", decoding="sampled", sample=1, bad=False)]  # another decoding: ignored
    outcomes, counts = outcomes_from_rows(rows)
    assert [(o.case_id, o.adapter_bad, o.base_bad) for o in outcomes] == [("a", True, False), ("b", False, True)]
    assert counts["cases"] == 3 and counts["paired"] == 2 and counts["unpaired"] == 1
    assert counts["unpaired_cases"] == ["s/c: no base answer"]


def test_read_outcomes_from_two_files_and_a_clear_error(tmp_path):
    tuned, base = tmp_path / "tuned.jsonl", tmp_path / "base.jsonl"
    tuned.write_text(json.dumps(row("a", "tuned", bad=True)) + "\n")
    base.write_text(json.dumps(row("a", "base")) + "\n")
    outcomes, _ = read_outcomes([tuned, base])
    assert outcomes == [Outcome("s", "a", "prompt a", "code", True, False)]
    with pytest.raises(UserError, match="no case has both"):
        read_outcomes([tuned])
    with pytest.raises(UserError, match="not found"):
        read_outcomes([tmp_path / "missing.jsonl"])


def test_risk_coverage_by_hand():
    scores, bad = [0.9, 0.8, 0.8, 0.3], [False, True, False, True]
    thresholds, coverage, risk = risk_coverage(scores, bad)
    assert thresholds.tolist() == [0.9, 0.8, 0.3]  # the tie at 0.8 is one point
    assert coverage.tolist() == [0.25, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 1 / 3, 0.5])
    assert threshold_for_risk(scores, bad, 0.34) == 0.8
    assert threshold_for_risk(scores, bad, 0.0) == 0.9
    assert threshold_for_risk(scores, [True] * 4, 0.1) == math.inf  # nothing can be kept
    # the plain definition at every threshold
    for t, c, r in zip(thresholds, coverage, risk):
        kept = np.array(scores) >= t
        assert c == kept.mean() and r == pytest.approx(np.array(bad)[kept].mean())


def test_conformal_threshold_by_hand():
    scores = np.arange(1, 10)  # 9 points; the two least trusted are bad
    bad = scores <= 2
    # alpha 0.15: 0.9 * R + 0.1 <= 0.15 needs R <= 0.0556, so no bad answer kept: keep scores >= 3
    assert conformal_risk_threshold(scores, bad, 0.15) == 3
    # alpha 0.2: R <= 0.111 allows one bad of nine: keep scores >= 2
    assert conformal_risk_threshold(scores, bad, 0.2) == 2
    assert conformal_risk_threshold(scores, bad, 1.0) == 1
    assert conformal_risk_threshold(scores, bad, 0.05) == math.inf  # 1 / (n + 1) = 0.1 > alpha
    assert served_bad_rate(scores, bad, 2) == pytest.approx(1 / 9)


def test_conformal_controls_the_served_bad_rate_and_sizes_its_calibration_set():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=4000)
    bad = rng.uniform(size=4000) < 0.6 - 0.5 * scores  # less trusted, more often bad
    result = conformal_sample_size(scores, bad, alpha=0.1, sizes=[5, 300], trials=100)
    by_n = {r["n"]: r["mean_served_bad"] for r in result["sizes"]}
    assert by_n[5] == 0.0  # with 5 points alpha < 1/6 is out of reach: keep nothing
    assert 0.08 <= by_n[300] <= 0.1  # the guarantee E[loss] <= alpha holds, and is nearly tight
    assert result["labelled_points_needed"] == 300
    with pytest.raises(UserError, match="calibration size"):
        conformal_sample_size(scores[:10], bad[:10], 0.1, sizes=[10])


def test_routed_comparison_by_hand():
    result = routed_comparison([True, True, False, False], [False, True, True, False], [True, False, False, False])
    assert result["routed"]["k"] == 1 and result["always_adapter"]["k"] == 2 and result["always_base"]["k"] == 1
    assert result["coverage"] == 0.5 and result["risk_on_adapter"] == 0.5
    versus_adapter = result["mcnemar_routed_vs_adapter"]
    assert (versus_adapter["base_only"], versus_adapter["tuned_only"], versus_adapter["p_value"]) == (0, 1, 1.0)
    assert 0 < result["routed"]["low"] < 0.25 < result["routed"]["high"] < 1  # Wilson interval around 1/4


def test_held_out_split_is_stratified():
    bad = np.array([True] * 10 + [False] * 30)
    held = split_held_out(bad, 0.5, seed=3)
    assert held[bad].sum() == 5 and held[~bad].sum() == 15


INDEX = [f"Write a Python function that {verb} a {thing}." for verb in ("sorts", "reverses", "counts", "merges")
         for thing in ("list of numbers", "string", "dictionary", "CSV line", "binary tree")]
NEAR = [f"Write a Python function that {verb} a {thing} quickly." for verb in ("sorts", "reverses", "counts", "merges")
        for thing in ("list of numbers", "string", "dictionary", "CSV line")]
FAR = ["Tell me a joke about penguins.", "Quelle heure est-il ?", "Who painted the Mona Lisa?",
       "Recommend a novel.", "How do I bake bread?", "Wie spät ist es?", "What is inflation?",
       "Plan a trip to Lisbon.", "Write a haiku about rain.", "How tall is Everest?", "Name a good film.",
       "Why is the sky blue?"]


def synthetic_outcomes():
    """The adapter fails exactly the queries far from its training data; the base fails a few near ones."""
    near = [Outcome("code", f"n{i}", q, "code", False, i % 4 == 0) for i, q in enumerate(NEAR)]
    far = [Outcome("offtopic", f"f{i}", q, "other", True, False) for i, q in enumerate(FAR)]
    return near + far


def test_calibrate_on_outcomes_separates_failures_and_routes(tmp_path):
    gate = build_gate(INDEX, tmp_path / "gate", embedder=HashingEmbedder(256), k=3)
    result = calibrate_on_outcomes(gate, synthetic_outcomes(), target_risk=0.0, holdout=0.5, seed=0)
    assert result.failures == {"calibration": 6, "calibration_queries": 14, "held_out": 6, "held_out_queries": 14}
    assert result.auroc["max_similarity"] > 0.9 and result.auroc["combined"] > 0.9
    assert set(result.cost_ms_per_query) == {"max_similarity", "mean_similarity", "combined"}
    assert result.calibration_split["risk"] == 0.0
    held = result.held_out
    assert held["queries"] == 14 and held["always_adapter"]["k"] == 6
    assert held["routed"]["k"] < held["always_adapter"]["k"]
    # Recompute the held-out routed count from the per-query file.
    rows = [json.loads(line) for line in (tmp_path / "gate" / "calibration_scores.jsonl").read_text().splitlines()]
    routed_bad = sum((r["adapter_bad"] if r["route"] == "adapter" else r["base_bad"]) for r in rows if r["held_out"])
    assert routed_bad == held["routed"]["k"]
    assert (tmp_path / "gate" / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"
    loaded = Gate.load(tmp_path / "gate")
    assert isinstance(loaded.calibration, OutcomeCalibration)
    assert loaded.route(INDEX[0]).route == "adapter" and loaded.route(FAR[0]).route == "base"
    assert result.conformal["alpha"] == pytest.approx(1e-9) and result.conformal["threshold"] == math.inf


def test_calibrate_on_outcomes_by_coverage_and_bad_input(tmp_path):
    gate = build_gate(INDEX, tmp_path / "gate", embedder=HashingEmbedder(256), k=3)
    result = calibrate_on_outcomes(gate, synthetic_outcomes(), target_coverage=0.5, write=False)
    assert result.calibration_split["coverage"] >= 0.5 and result.conformal == {}
    with pytest.raises(UserError, match="exactly one"):
        calibrate_on_outcomes(gate, synthetic_outcomes(), target_risk=0.1, target_coverage=0.5)
    with pytest.raises(UserError, match="at least 4 bad"):
        calibrate_on_outcomes(gate, synthetic_outcomes()[:18], target_risk=0.1)


def test_cli_calibrate_from_eval_results(tmp_path):
    from tunelens.cli import app

    gate_dir = tmp_path / "gate"
    build_gate(INDEX, gate_dir, embedder=HashingEmbedder(256), k=3)
    results = tmp_path / "results.jsonl"
    lines = []
    for o in synthetic_outcomes():
        expect = "code" if o.suite == "code" else "other"
        for model, is_bad in (("tuned", o.adapter_bad), ("base", o.base_bad)):
            lines.append(row(o.case_id, model, expect=expect, bad=is_bad, has_code=(is_bad or expect == "code"),
                             prompt=o.prompt, suite=o.suite))
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = CliRunner().invoke(app, ["gate", "calibrate", "--gate", str(gate_dir), "--results", str(results),
                                   "--target-risk", "0.05"])
    assert out.exit_code == 0, out.output
    assert "max_similarity" in out.output and "McNemar" in out.output and "ms/query" in out.output
    saved = json.loads((gate_dir / "calibration.json").read_text())
    assert saved["kind"] == "outcome" and saved["counts"]["queries"] == len(synthetic_outcomes())
    out = CliRunner().invoke(app, ["gate", "calibrate", "--gate", str(gate_dir), "--results", str(results),
                                   "--in-domain", str(results)])
    assert out.exit_code == 2 and "either" in out.output


def test_split_stratified_by_kind_halves_each_kinds_failures_and_successes():
    # kind a: 4 bad, 4 good; kind b: 2 bad, 6 good. Stratified by kind and failure, each of the four
    # cells is halved exactly; stratified by failure alone, kind b could land on one side.
    kinds = ["a"] * 8 + ["b"] * 8
    bad = np.array([True] * 4 + [False] * 4 + [True] * 2 + [False] * 6)
    for seed in range(5):
        held = split_held_out(bad, 0.5, seed, strata=kinds)
        for kind, lo in (("a", 0), ("b", 8)):
            cell = slice(lo, lo + 8)
            assert held[cell][bad[cell]].sum() == bad[cell].sum() / 2
            assert held[cell][~bad[cell]].sum() == (~bad[cell]).sum() / 2
    assert split_held_out(bad, 0.5, 3).tolist() == split_held_out(bad, 0.5, 3, strata=None).tolist()
