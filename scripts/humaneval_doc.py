"""docs/models.md's HumanEval block, from the eval runs committed under docs/runs/humaneval/<model>/.

A record is a run directory of `tunelens eval --model MODEL --suite humaneval --samples 0 --max-new-tokens
320 --out DIR`: its summary.json (with the run record) and results.jsonl (the answers and verdicts, so the
extraction counts can be recomputed). The block, which scripts/pages.py rewrites and checks:

    <!-- humaneval -->
    (generated: pass@1 greedy per model, with the answers the entry-point extraction decided)
    <!-- /humaneval -->
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import extraction_counts  # noqa: E402
from doc_format import ci, read_summary, record_line  # noqa: E402

from tunelens.evaluate.results import read_results  # noqa: E402
from tunelens.stats import rate  # noqa: E402

BLOCK = re.compile(r"(<!-- humaneval -->\n)(?P<body>.*?)(<!-- /humaneval -->)", re.S)


def model_rows(run: Path) -> tuple[str, str]:
    """(table row, record line) of one model's run."""
    rows = [r for r in read_results(run / "results.jsonl") if r["decoding"] == "greedy" and r["model"] == "base"]
    passed = sum(r["tests"] == "passed" for r in rows)
    counts = extraction_counts.counts(run).get("humaneval / base / greedy", {})
    cell = rate(passed, len(rows)).to_dict()
    extracted = f"{counts.get('parse only by extraction', 0)} ({counts.get('of them pass their tests', 0)} pass)"
    row = f"| `{run.name}` | {ci(cell)} | {extracted} |"
    return row, f"- `{run.name}`: " + record_line(read_summary(run), f"docs/runs/humaneval/{run.name}/")


def block(runs: list[Path]) -> str:
    if not runs:
        return "Not measured yet: no run under docs/runs/humaneval/.\n"
    made = [model_rows(run) for run in runs]
    lines = ["| model | pass@1, greedy (95% Wilson interval) | answers that parse only by extraction |",
             "|---|---|---|", *[row for row, _ in made], "",
             "Each row is one greedy answer per HumanEval problem (164), at most 320 new tokens, judged by "
             "the bundled harness; the last column counts the answers that are cut off in their own trailing "
             "text and parse only as the entry point and what it uses (docs/eval.md), and how many of those "
             "pass. Records:", "", *[line for _, line in made], ""]
    return "\n".join(lines)


def fill(text: str, directory: Path) -> str:
    runs = sorted(path for path in directory.glob("*") if (path / "summary.json").is_file())
    return BLOCK.sub(lambda m: m.group(1) + block(runs) + m.group(3), text)
