"""How many verdicts of an eval run the entry-point extraction decides (issue 25 item 6; docs/eval.md).

An answer cut off by the token limit in its own trailing test prints does not parse as a whole; the judge
then parses and runs the case's entry point and what it uses (`checks.needed_code`). This reads a run's
results.jsonl and counts, per suite, model and decoding, the answers that parse only because of that, and
how many of them pass their tests: the verdicts the extraction changed from "does not parse".

    python scripts/extraction_counts.py runs/humaneval-gemma3-270m [--json docs/runs/...json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from tunelens.evaluate.checks import check_code
from tunelens.evaluate.results import read_results
from tunelens.evaluate.scoring import test_program
from tunelens.evaluate.suite import load_suites
from tunelens.io import atomic_write_json
from tunelens.runtime import run_record


def counts(run_dir: Path) -> dict:
    rows = read_results(run_dir / "results.jsonl")
    cases = {(case.suite, case.id): case for case in load_suites(sorted({row["suite"] for row in rows}))}
    table: dict[str, Counter] = {}
    for row in rows:
        case = cases.get((row["suite"], row["case_id"]))
        if case is None or case.expect != "code" or not (case.tests or "").strip() or not row.get("has_code"):
            continue
        program = lambda code, case=case: test_program(case, code)
        whole = check_code(row["answer"], program, None).parses
        key = f"{row['suite']} / {row['model']} / {row['decoding']}"
        tally = table.setdefault(key, Counter())
        tally["answers with code"] += 1
        if not whole and row.get("parses"):
            tally["parse only by extraction"] += 1
            tally["of them pass their tests"] += row.get("tests") == "passed"
    return {key: dict(tally) for key, tally in sorted(table.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the counts and the run's record here")
    args = parser.parse_args()
    result = counts(args.run_dir)
    for key, tally in result.items():
        print(f"{key}: " + ", ".join(f"{name} {value}" for name, value in tally.items()))
    if args.json:
        source = json.loads((args.run_dir / "summary.json").read_text()).get("run") if (
            args.run_dir / "summary.json").is_file() else None
        atomic_write_json(args.json, {"counts": result, "eval_run": source, "record": run_record({})})


if __name__ == "__main__":
    main()
