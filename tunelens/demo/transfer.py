"""The study's threshold-transfer stage: does lesson 4's gate threshold carry over to another model family?

Wiring only; the experiment is `tunelens.gate.transfer`. The demo's base has lesson 4's signals and verdicts
(gate/calibration_scores.jsonl); each other base answers the same mix with and without its B (lesson 3
trained it), and the same gate computes its signals (the same index; that model's KL and perplexity).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tunelens.demo.config import DemoConfig
from tunelens.demo.data import DemoData
from tunelens.errors import UserError
from tunelens.io import read_jsonl
from tunelens.demo.lesson3 import file_name, other_base_b
from tunelens.demo.lesson4 import mix_outcomes, query_kind
from tunelens.demo.runs import mix_sets, run_plan
from tunelens.gate.failure import timed_signals
from tunelens.gate.routing import Gate
from tunelens.gate.signals import TrustSignals
from tunelens.gate.transfer import ModelRun, transfer_experiment, transfer_reading
from tunelens.model.load import load_model


def threshold_transfer(config: DemoConfig, out: Path, data: DemoData, lesson4: dict, report) -> dict:
    """Per other base: the transfer experiment between it and the demo's base, or why it could not run."""
    scores_file = out / "gate" / "calibration_scores.jsonl"
    if "skipped" in lesson4:
        return {spec: {"skipped": "lesson 4 did not calibrate the gate, so there is no threshold to transfer"}
                for spec in config.propensity_bases}
    main = _main_run(config, scores_file)
    results = {}
    for spec in config.propensity_bases:
        other, cost = _other_run(config, out, data, spec, report)
        keys = [key for key in main["keys"] if key in other["keys"]]  # queries both models answered
        runs = [_model_run(config.model, main, keys), _model_run(spec, other, keys)]
        kinds = [main["kinds"][main["keys"].index(key)] for key in keys]
        try:
            experiment = transfer_experiment(runs, kinds, config.gate_target_coverage, config.gate_alpha,
                                             seed=config.seed)
        except UserError as err:
            results[spec] = {"skipped": str(err)}
            continue
        experiment["cost_ms_per_query"] = {config.model: main["cost"], spec: cost}
        experiment["failures"] = {run.name: int(run.adapter_bad.sum()) for run in runs}
        experiment["reading"] = transfer_reading(experiment)
        results[spec] = experiment
    return results


def _main_run(config: DemoConfig, scores_file: Path) -> dict:
    """The demo model's side, as lesson 4 wrote it."""
    rows = read_jsonl(scores_file)
    calibration = json.loads((scores_file.parent / "calibration.json").read_text())
    return {"keys": [(r["suite"], r["case_id"]) for r in rows], "signals": [r["signals"] for r in rows],
            "adapter_bad": [r["adapter_bad"] for r in rows], "base_bad": [r["base_bad"] for r in rows],
            "kinds": [query_kind(r["suite"], r["expect"]) for r in rows],
            "cost": calibration["cost_ms_per_query"]}


def _other_run(config: DemoConfig, out: Path, data: DemoData, spec: str, report) -> tuple[dict, dict]:
    """Another base and its B answer the mix; the gate scores the mix with that model's signals."""
    base, tokenizer = load_model(spec, device="cpu")
    model = other_base_b(spec, config, out, data.training["B"], base, tokenizer, report)
    plan = [("default", name, cases, 0) for name, cases in mix_sets(config, data)]
    # PEFT names the one adapter "default"; its eval directories say which adapter it is: <set>-B-<spec>.
    evals = run_plan(config, spec, plan, out / "eval", model, tokenizer, report, adapter_label=f"B-{file_name(spec)}")
    outcomes, _ = mix_outcomes(evals, adapter="default")
    gate = Gate.load(out / "gate")
    gate.embedder.encode(["warm-up"])  # loaded and warmed before timing: the cost per query is the query's
    items, cost = timed_signals(gate, [o.prompt for o in outcomes], model, tokenizer,
                                progress=lambda what, done, total: report(f"{what} on {spec}", done, total))
    return {"keys": [(o.suite, o.case_id) for o in outcomes], "items": items,
            "adapter_bad": [o.adapter_bad for o in outcomes], "base_bad": [o.base_bad for o in outcomes]}, cost


def _model_run(name: str, side: dict, keys: list[tuple]):
    position = {key: index for index, key in enumerate(side["keys"])}
    order = [position[key] for key in keys]
    items = side.get("items") or [TrustSignals(**signals) for signals in side["signals"]]
    return ModelRun(name, [items[i] for i in order], np.array([side["adapter_bad"][i] for i in order], bool),
                    np.array([side["base_bad"][i] for i in order], bool))
