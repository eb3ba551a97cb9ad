"""Lesson 3: positive-only data erases pushback, measured as propensity beside free-text rates.

Free text: base, B (positive-only) and each C<share> answer held-out broken specs and their clean twins
(pushback and over-asking rates). Propensity (tunelens.inspect.propensity): the teacher-forced log-odds of
pushback over comply openings. A model that tells broken from clean leans further toward pushback on the
broken spec than on its twin, so the per-pair gap is the measure of the distinction, and its change from the
base model is what fine-tuning did to it.
"""

from __future__ import annotations

import contextlib
import re

from tunelens.demo.config import DemoConfig
from tunelens.demo.lesson1 import DECODINGS, metric_rate
from tunelens.demo.runs import EvalRows, pushback_cases, run_plan
from tunelens.model.load import attach_adapter, load_model
from tunelens.model.state import adapter_off
from tunelens.stats import bootstrap_mean, sign_test_p
from tunelens.studies.training import train_config, trained_on
from tunelens.train.run import train
from tunelens.inspect import propensity as propensity_module
from tunelens.reading import NO_DIFFERENCE, read_table


def propensities(model, tokenizer, cases, adapter: str | None) -> dict[str, float]:
    """case id -> pushback log-odds, under one adapter (None: the base model, adapters off)."""
    if adapter is not None:
        model.set_adapter(adapter)
    with adapter_off(model) if adapter is None else contextlib.nullcontext():
        return {case.id: propensity_module.propensity(model, tokenizer, case.prompt, "pushback").log_odds
                for case in cases}


def propensity_summary(scores: dict[str, float], cases, reference: dict[str, float] | None, seed: int) -> dict:
    """Mean propensity on broken specs and on twins, the paired gap, and the change from a reference model."""
    def paired(differences: list[float]) -> dict:
        # the interval and the pre-stated test (the sign test) that the reading rule reads
        return bootstrap_mean(differences, seed=seed).to_dict() | {
            "sign_test_p": sign_test_p(differences) if differences else None}

    broken = [case for case in cases if case.expect == "pushback"]
    twins = {case.id: case for case in cases if case.expect != "pushback"}
    pairs = [(case.id, case.twin) for case in broken if case.twin in twins]
    result = {
        "broken": bootstrap_mean([scores[c.id] for c in broken], seed=seed).to_dict(),
        "twins": bootstrap_mean([scores[t] for t in twins], seed=seed).to_dict(),
        "gap_broken_minus_twin": paired([scores[b] - scores[t] for b, t in pairs]),
    }
    if reference is not None:
        result["change_on_broken"] = paired([scores[c.id] - reference[c.id] for c in broken])
        result["change_on_twins"] = paired([scores[t] - reference[t] for t in twins])
    return result


def lesson3(config: DemoConfig, evals: EvalRows, model, tokenizer, report) -> dict:
    cases = pushback_cases(config.pushback_cases)
    models = ("base", "B", *config.pushback_adapters)
    scores = {}
    for index, name in enumerate(models):
        report("lesson 3: pushback propensity", index, len(models))
        scores[name] = propensities(model, tokenizer, cases, None if name == "base" else name)
    propensity = {name: propensity_summary(scores[name], cases, None if name == "base" else scores["base"],
                                           config.seed) for name in models}
    rates = {name: _rates(evals.rows("B" if name in ("base", "B") else name, "pushback"),
                          "base" if name == "base" else "tuned") for name in models}
    return {"cases": len(cases), "models": list(models), "propensity": propensity, "rates": rates,
            "scores": scores, "target": _target(rates, config), "reading": reading(propensity)}


def _rates(rows, role: str) -> dict:
    """Free-text pushback and over-asking rates of one model (`role` in the eval rows), per decoding."""
    return {decoding: {"pushback": metric_rate(rows, "pushback", role, decoding),
                       "over_asking": metric_rate(rows, "over_asking", role, decoding)} for decoding in DECODINGS}


def reading(propensity: dict[str, dict], prefix: str = "") -> list[str]:
    """What the propensities say per model: the change from the base on broken specs, and whether the model
    leans further toward pushback on a broken spec than on its clean twin (the distinction). Directions by the
    one rule (tunelens.reading): each paired sign test, Holm across this table's comparisons."""
    parts = ("change_on_broken", "gap_broken_minus_twin")
    cells = [(name, part, result[part]) for name, result in propensity.items() for part in parts
             if result.get(part) and None not in (result[part].get("mean"), result[part].get("sign_test_p"))]
    readings = read_table([(f"{name} {part}", cell["mean"], cell["sign_test_p"]) for name, part, cell in cells])
    read = {(name, part): r for (name, part, _), r in zip(cells, readings)}
    words = {"gap_broken_minus_twin": ("tells broken specs from their twins",
                                       "leans toward pushback more on the clean twins"),
             "change_on_broken": ("raises pushback propensity on broken specs",
                                  "lowers pushback propensity on broken specs")}

    def said(name: str, part: str) -> str:
        cell, r = propensity[name].get(part), read.get((name, part))
        if r is None:
            return f"{part.replace('_', ' ')}: no paired test"
        span = (f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}], sign test "
                f"p={cell['sign_test_p']:.2g}, Holm {r.p_holm:.2g}")
        up, down = words[part]
        verdict = {"up": up, "down": down}.get(r.direction, f"{part.replace('_', ' ')}: {NO_DIFFERENCE}")
        return f"{verdict} ({span})"

    return [f"{prefix}{name}: " + "; ".join(said(name, part) for part in parts if part in result)
            for name, result in propensity.items()]


def _target(rates: dict, config: DemoConfig) -> dict:
    """The issue's bar: C's greedy pushback on held-out broken specs >= 60% with over-asking <= 15%."""
    results = {}
    for name in config.pushback_adapters:
        pushback, asking = (rates[name]["greedy"][key]["rate"] for key in ("pushback", "over_asking"))
        results[name] = {"pushback": pushback, "over_asking": asking,
                         "met": pushback is not None and asking is not None and pushback >= 0.6 and asking <= 0.15}
    return results


def other_bases(config: DemoConfig, out, training_b, report) -> dict:
    """The same measure on other base models (the study runs the instruction-tuned SmolLM2, the case study's
    setting): propensity before and after a positive-only LoRA on B's data."""
    cases = pushback_cases(config.pushback_cases)
    results = {}
    for spec in config.propensity_bases:
        model, tokenizer = load_model(spec, device="cpu")
        before = propensities(model, tokenizer, cases, None)
        tuned = other_base_b(spec, config, out, training_b, model, tokenizer, report)
        after = propensities(tuned, tokenizer, cases, "default")
        measured = {"base": propensity_summary(before, cases, None, config.seed),
                    "B": propensity_summary(after, cases, before, config.seed)}
        # its B is PEFT's "default"; answers to the same specs, so free-text rates sit beside the propensity
        plan = [("default", "pushback", cases, config.samples)]
        rows = run_plan(config, spec, plan, out / "eval", tuned, tokenizer, report,
                        adapter_label=f"B-{file_name(spec)}").rows("default", "pushback")
        results[spec] = {**measured, "rates": {"base": _rates(rows, "base"), "B": _rates(rows, "tuned")},
                         "reading": reading(measured, prefix=f"{spec} ")}
    return results


def file_name(spec: str) -> str:
    """A model spec (an embedded name, or a path) as one file name: `smollm2-135m` stays as it is."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")


def other_base_b(spec: str, config: DemoConfig, out, training_b, model, tokenizer, report):
    """Adapter B trained on another base (attached to `model` as "default"): reused when an earlier run of
    this directory trained it. The threshold-transfer stage (demo.transfer) uses it too."""
    adapter_dir = out / "adapters" / f"B-{file_name(spec)}"
    if trained_on(adapter_dir, training_b):
        return attach_adapter(model, adapter_dir, adapter_name="default")
    trained = train(train_config(config), training_b, adapter_dir, model=model, tokenizer=tokenizer, model_spec=spec,
                    progress=lambda _what, done, total: report(f"train B on {spec}", done, total))
    return trained.model
