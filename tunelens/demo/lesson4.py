"""Lesson 4: know when not to trust the fine-tune: a retrieval gate over B's training instructions."""

from __future__ import annotations

from pathlib import Path

from tunelens.demo.config import DemoConfig
from tunelens.demo.data import DemoData
from tunelens.demo.runs import EvalRows

# Calibration queries the fine-tune was never shown: general questions and code in other languages.
OUT_OF_DOMAIN = (
    "What is the capital of Australia?", "Write a haiku about autumn rain.",
    "Translate 'good morning, how are you?' into French.", "Summarise the plot of Romeo and Juliet.",
    "Give me a recipe for banana bread.", "How do I change a flat bicycle tyre?",
    "What are the symptoms of a common cold?", "Explain the offside rule in football.",
    "Write a SQL query that lists customers who ordered in the last 30 days.",
    "Write a JavaScript function that debounces another function.",
    "How do I centre a div with CSS flexbox?", "Write a Bash one-liner that counts lines in all .txt files.",
    "Explain how photosynthesis works to a ten-year-old.", "Suggest three names for a coffee shop.",
    "Write a Rust function that reverses a vector in place.", "Write a Go HTTP handler that returns JSON.",
)


def lesson4(config: DemoConfig, out: Path, data: DemoData, evals: EvalRows, model, tokenizer, report) -> dict:
    from tunelens.evaluate.scoring import bad_output
    from tunelens.evaluate.stats import rate
    from tunelens.gate import build_gate, calibrate

    model.set_adapter("B")
    gate = build_gate(data.train_instructions_b, out / "gate")
    calibration = calibrate(gate, data.heldout, list(OUT_OF_DOMAIN), model=model, tokenizer=tokenizer,
                            model_info={"model": config.model, "adapter": "B"})
    rows = [r for name in ("heldout", "code", "offtopic") if ("B", name) in evals.by_run for r in evals.rows("B", name)]
    greedy = {(r.suite, r.case_id, r.model): r for r in rows if r.decoding == "greedy"}
    queries = sorted({(r.suite, r.case_id, r.prompt) for r in rows})
    routes = {"adapter": 0, "base": 0}
    by_suite: dict[str, dict] = {}
    for index, (suite, case_id, prompt) in enumerate(queries):
        report("gate: routing the eval queries", index, len(queries))
        decision = gate.route(prompt, model=model, tokenizer=tokenizer)
        role = "tuned" if decision.route == "adapter" else "base"
        routes[decision.route] += 1
        counts = by_suite.setdefault(suite, {"queries": 0, "to_base": 0, "bad_routed": 0, "bad_always_adapter": 0})
        counts["queries"] += 1
        counts["to_base"] += role == "base"
        # Every query here expects code or no code at all, so bad_output is never None.
        counts["bad_routed"] += bool(bad_output(greedy[(suite, case_id, role)]))
        counts["bad_always_adapter"] += bool(bad_output(greedy[(suite, case_id, "tuned")]))
    routed_bad = sum(c["bad_routed"] for c in by_suite.values())
    adapter_bad = sum(c["bad_always_adapter"] for c in by_suite.values())
    return {
        "auroc": calibration.auroc, "threshold": calibration.threshold,
        "target_coverage": calibration.target_coverage, "in_domain_coverage": calibration.in_domain_coverage,
        "out_of_domain_fallback_rate": calibration.out_of_domain_fallback_rate, "counts": calibration.counts,
        "routes": routes, "queries": len(queries), "by_suite": by_suite,
        "bad_output_routed": rate(routed_bad, len(queries)).to_dict(),
        "bad_output_always_adapter": rate(adapter_bad, len(queries)).to_dict(),
        "coverage_png": "gate/coverage.png",
    }
