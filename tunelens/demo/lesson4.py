"""Lesson 4: know when not to trust the fine-tune: a gate calibrated on adapter B's own failures.

The query mix (held-out mined instructions, code-suite and HumanEval prompts, broken specs with their clean
twins, off-topic questions) was answered greedy by base and B; each query is labelled by the eval's verdict
on B's answer. `gate.calibrate_on_outcomes` fits the trust signals on one half and measures the other (AUROC
and cost per signal, risk-coverage, routed vs always-B vs always-base); this lesson adds the break-down by
kind of query and which kinds the signals cannot separate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunelens.demo.config import DemoConfig
from tunelens.demo.data import DemoData
from tunelens.demo.runs import EvalRows
from tunelens.io import read_jsonl
from tunelens.gate import build_gate
from tunelens.gate.failure import calibrate_on_outcomes
from tunelens.gate.outcomes import outcomes_from_rows, routed_comparison
from tunelens.stats import rate

MIX_SETS = ("heldout", "code", "humaneval", "pushback", "offtopic")
KIND_OF_SET = {"heldout": "held-out mined", "code": "code suite", "humaneval": "HumanEval", "offtopic": "off-topic"}
MIN_EACH = 4  # the calibration needs this many bad and good answers of B (gate.failure.MIN_FAILURES x 2)


def query_kind(suite: str, expect: str) -> str:
    if suite == "pushback":
        return "broken spec" if expect == "pushback" else "clean twin"
    return KIND_OF_SET.get(suite, suite)


def mix_outcomes(evals: EvalRows, adapter: str = "B"):
    """(outcomes, kind per outcome) of the mix: B's and the base's greedy answers paired per query."""
    rows = [row.to_json() for name in MIX_SETS if (adapter, name) in evals.by_run
            for row in evals.rows(adapter, name)]
    outcomes, _ = outcomes_from_rows(rows)
    return outcomes, [query_kind(o.suite, o.expect) for o in outcomes]


def lesson4(config: DemoConfig, out: Path, data: DemoData, evals: EvalRows, model, tokenizer, report) -> dict:
    outcomes, kinds = mix_outcomes(evals)
    failures = sum(o.adapter_bad for o in outcomes)
    result = {"queries": len(outcomes), "failures": failures, "base_failures": sum(o.base_bad for o in outcomes),
              "kinds": _kind_counts(outcomes, kinds), "target_coverage": config.gate_target_coverage,
              "alpha": config.gate_alpha}
    if min(failures, len(outcomes) - failures) < MIN_EACH:
        result["skipped"] = (f"B answered {failures} of {len(outcomes)} queries badly: calibrating on its failures "
                             f"needs at least {MIN_EACH} bad and {MIN_EACH} good answers")
        result["reading"] = [result["skipped"]]
        return result
    model.set_adapter("B")
    gate = build_gate(data.train_instructions_b, out / "gate")
    calibration = calibrate_on_outcomes(
        gate, outcomes, model, tokenizer, target_coverage=config.gate_target_coverage, holdout=0.5,
        seed=config.seed, progress=lambda what, done, total: report(f"lesson 4: {what}", done, total),
        model_info={"model": config.model, "adapter": "B"}, inputs={"query_mix": list(MIX_SETS)}, strata=kinds,
        conformal_alpha=config.gate_alpha)
    scores = read_jsonl(gate.directory / "calibration_scores.jsonl")
    result |= {"signals": calibration.signals, "auroc": calibration.auroc, "failures_behind": calibration.failures,
               "cost_ms_per_query": calibration.cost_ms_per_query, "directions": calibration.directions,
               "threshold": calibration.threshold, "calibration_split": calibration.calibration_split,
               "held_out": calibration.held_out, "conformal": calibration.conformal,
               "by_kind": by_kind(scores, kinds), "risk_coverage_png": "gate/risk_coverage.png"}
    result["reading"] = reading(result)
    return result


def _kind_counts(outcomes, kinds) -> dict:
    counts: dict[str, dict] = {}
    for outcome, kind in zip(outcomes, kinds):
        cell = counts.setdefault(kind, {"queries": 0, "b_bad": 0, "base_bad": 0})
        cell["queries"] += 1
        cell["b_bad"] += outcome.adapter_bad
        cell["base_bad"] += outcome.base_bad
    return counts


def by_kind(scores: list[dict], kinds: list[str]) -> dict:
    """Per kind of query on the test half: routed vs always-B vs always-base, and how often the gate kept B's
    failures of this kind on B against how often it kept B's good answers."""
    held = np.array([s["held_out"] for s in scores])
    kept = np.array([s["route"] == "adapter" for s in scores])
    bad = np.array([s["adapter_bad"] for s in scores])
    base_bad = np.array([s["base_bad"] for s in scores])
    kind = np.array(kinds)
    good_kept = rate(int((kept & ~bad & held).sum()), int((~bad & held).sum())).to_dict()
    result = {}
    for name in dict.fromkeys(kinds):
        mine = held & (kind == name)
        if not mine.any():
            continue
        result[name] = routed_comparison(kept[mine], bad[mine], base_bad[mine])
        result[name]["failures_kept"] = rate(int((kept & bad & mine).sum()), int((bad & mine).sum())).to_dict()
        result[name]["good_kept"] = good_kept  # every kind's good B answers, the reference a kind is set against
    return result


def reading(l4: dict) -> list[str]:
    """What the figures support; a difference is claimed only where intervals or a McNemar test show it."""
    held, failures = l4["held_out"], l4["failures_behind"]
    return [f"Predicting B's failure on the test half ({failures['held_out']} failures in "
             f"{failures['held_out_queries']} queries): AUROC " + ", ".join(
                 f"{name} {_auroc(value)} ({l4['cost_ms_per_query'].get(name, 0):.1f} ms/query)"
                 for name, value in l4["auroc"].items()),
            _routed_sentence(held, l4["target_coverage"]),
            *(_kind_sentence(name, cell) for name, cell in l4["by_kind"].items())]


def _routed_sentence(held: dict, target_coverage: float) -> str:
    versus_b, versus_base = held["mcnemar_routed_vs_adapter"], held["mcnemar_routed_vs_base"]
    text = (f"At the threshold (coverage {held['coverage']:.0%} of the test half), bad outputs: routed "
            f"{_ci(held['routed'])}, always B {_ci(held['always_adapter'])} (McNemar p={versus_b['p_value']:.3g}), "
            f"always base {_ci(held['always_base'])} (p={versus_base['p_value']:.3g})")
    # In these tests "tuned" is the routed system: tuned_only counts queries only routing got right.
    better_than_b = versus_b["tuned_only"] > versus_b["base_only"] and versus_b["p_value"] < 0.05
    better_than_base = versus_base["tuned_only"] > versus_base["base_only"] and versus_base["p_value"] < 0.05
    if better_than_b and better_than_base and held["coverage"] >= target_coverage:
        return text + ": the routed system beats both at the target coverage."
    if better_than_b or better_than_base:
        which = "B" if better_than_b else "the base model"
        return text + f": routing beats always-{which} (p < 0.05), not both."
    return text + ": no difference these queries can show (no McNemar p < 0.05)."


def _kind_sentence(name: str, cell: dict) -> str:
    failed, good = cell["failures_kept"], cell["good_kept"]
    text = (f"{name} ({cell['queries']} test queries): B bad {_ci(cell['always_adapter'])}, base bad "
            f"{_ci(cell['always_base'])}, routed {_ci(cell['routed'])}; the gate kept {_ci(failed)} of B's "
            f"failures here on B, against {_ci(good)} of B's good answers overall")
    if failed["n"] == 0:
        return text + ": B fails none of them, nothing to separate."
    if good["n"] == 0:
        return text + ": B answered no test query well, so there is nothing to set them against."
    if failed["high"] < good["low"]:
        return text + ": the signals separate this kind's failures (intervals apart)."
    if failed["low"] > good["high"]:
        return text + ": the gate prefers this kind's failures to good answers: the signals mislead here."
    return text + ": the signals cannot separate this kind's failures from good answers (intervals overlap)."


def _auroc(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(cell: dict) -> str:
    if cell.get("rate") is None:
        return "-"
    return f"{cell['rate']:.0%} [{cell['low']:.0%}, {cell['high']:.0%}] ({cell['k']}/{cell['n']})"
