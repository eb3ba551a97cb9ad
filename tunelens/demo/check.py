"""What CI asserts about a finished demo run, so that a wrong result fails it (not only a crash).

    python -m tunelens.demo.check runs/ci-demo      # exit 1 and one line per problem; exit 0 and a summary

A count that reconciles by construction or a report's size proves nothing; these checks fail on a wrong
product: lint missing a contaminated pair or quarantining a clean one as Python 2, a lesson that did not
compute, an adapter whose lora_B is all zero (a no-op: PEFT initialises B to zero) or that the loaded model
does not hold exactly, and a summary without its run record. Each reads summary.json only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunelens.demo.config import adapter_name

RECORD_KEYS = ("commit", "dirty", "command", "versions", "machine", "stages")


def demo_problems(summary: dict) -> list[str]:
    """Every reason the run is wrong, one line each (empty: it passed every check)."""
    config = summary["config"]
    contaminated = [adapter_name("A", rate) for rate in config["contamination_rates"]]
    pushback = [adapter_name("C", share) for share in config["pushback_shares"]]
    return [*lint_problems(summary["data"]["lint"]), *adapter_problems(summary.get("adapters"),
                                                                          [*contaminated, "B", *pushback]),
            *lesson_problems(summary, contaminated, pushback), *record_problems(summary.get("record"))]


def lint_problems(lint: dict) -> list[str]:
    """Lint must quarantine exactly the contaminated pairs as Python 2: none missed, none extra."""
    problems = [] if lint.get("contaminated") else [
        "lint: the run contaminated no pair, so lint's recall was not tested"]
    if "missed_ids" not in lint or "python2_false_alarm_ids" not in lint:
        return problems + ["lint: the summary does not list missed and extra ids (a run older than the check)"]
    if lint["missed_ids"]:
        problems.append(f"lint: missed {len(lint['missed_ids'])} of {lint['contaminated']} contaminated pairs: "
                        + ", ".join(map(str, lint["missed_ids"][:5])))
    if lint["python2_false_alarm_ids"]:
        problems.append(f"lint: quarantined {len(lint['python2_false_alarm_ids'])} clean pair(s) as Python 2: "
                        + ", ".join(map(str, lint["python2_false_alarm_ids"][:5])))
    if lint.get("caught") != lint.get("contaminated"):
        problems.append(f"lint: caught {lint.get('caught')} of {lint.get('contaminated')} contaminated pairs")
    return problems


def adapter_problems(adapters: dict | None, expected: list[str]) -> list[str]:
    """Every trained adapter: present, lora_B not all zero in any tensor, and loaded exactly."""
    if not adapters:
        return ["adapters: the summary has no adapter checks"]
    problems = [f"adapter {name}: not checked (missing from the summary)" for name in expected if name not in adapters]
    for name, cell in adapters.items():
        if not cell["lora_B_tensors"]:
            problems.append(f"adapter {name}: its file holds no lora_B tensor")
        if cell["lora_B_zero_tensors"]:
            problems.append(f"adapter {name}: {cell['lora_B_zero_tensors']} of {cell['lora_B_tensors']} lora_B "
                            "tensors are all zero (that part of the adapter changes nothing)")
        if not cell["loaded_exactly"]:
            problems.append(f"adapter {name}: the loaded model does not hold the file's tensors: "
                            + "; ".join(cell["loaded_differences"][:2]))
    return problems


def lesson_problems(summary: dict, contaminated: list[str], pushback: list[str]) -> list[str]:
    """Every lesson section computed: answers behind lesson 1, decision points behind lesson 2, propensities
    behind lesson 3, a calibrated gate behind lesson 4, and (when run) the transfer and few-shot study."""
    l1 = summary["lesson1"]
    problems = [f"lesson 1: {point['adapter']} has no greedy answers" for point in l1["curve"]
                if not point["greedy"].get("n")]
    if [p["adapter"] for p in l1["curve"]] != contaminated:
        problems.append(f"lesson 1: the curve has {[p['adapter'] for p in l1['curve']]}, not {contaminated}")
    l2 = summary["lesson2"]["by_adapter"]
    for name in contaminated:
        cell = l2.get(name)
        if not cell or not cell["points"]:
            problems.append(f"lesson 2: {name} has no Python 2 decision point to score (nothing measured)")
        elif any(effect["mean_delta"] is None for effect in cell["effects"]) or not cell["effects"]:
            problems.append(f"lesson 2: {name} has a lever without an effect")
    l3 = summary["lesson3"]
    for name in ("base", "B", *pushback):
        cell = l3["propensity"].get(name)
        if not cell or not cell["broken"].get("n") or not cell["gap_broken_minus_twin"].get("n"):
            problems.append(f"lesson 3: no pushback propensity for {name}")
    l4 = summary["lesson4"]
    if "skipped" in l4:
        problems.append(f"lesson 4: skipped ({l4['skipped']})")
    elif not l4.get("held_out", {}).get("queries"):
        problems.append("lesson 4: the gate was measured on no test query")
    problems += [f"threshold transfer to {spec}: skipped ({cell['skipped']})"
                 for spec, cell in (summary.get("transfer") or {}).items() if "skipped" in cell]
    if summary["config"].get("few_shot_study") and not summary.get("few_shot"):
        problems.append("few-shot study: asked for, not in the summary")
    return problems


def record_problems(record: dict | None) -> list[str]:
    """The run record a published figure needs (tunelens.runtime.run_record)."""
    if not record:
        return ["record: the summary has no run record"]
    return [f"record: no {key}" for key in RECORD_KEYS if record.get(key) is None]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tunelens.demo.check RUN_DIR", file=sys.stderr)
        return 2
    path = Path(argv[0]) / "summary.json"
    if not path.is_file():
        print(f"check: {path}: no summary (the demo did not finish)", file=sys.stderr)
        return 1
    summary = json.loads(path.read_text())
    problems = demo_problems(summary)
    for line in problems:
        print(f"check failed: {line}", file=sys.stderr)
    if problems:
        return 1
    lint = summary["data"]["lint"]
    print(f"check: lint caught exactly the {lint['contaminated']} contaminated pairs; "
          f"{len(summary['adapters'])} adapters non-zero and loaded exactly; lessons 1-4 computed; "
          f"commit {summary['record']['commit']}{' (dirty)' if summary['record']['dirty'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
