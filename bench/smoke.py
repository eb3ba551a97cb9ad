"""CI's smoke run of every benchmark: each still runs at a tiny size and still reports its ratio.

    python bench/smoke.py                 # all of them; exit 1 naming each that failed
    python bench/smoke.py eval_throughput serve_load

Sizes here are for seconds, not for figures: a ratio from a smoke run says nothing about speed (tiny random
models, a few prompts), only that the benchmark's code path and its baseline still run and that it still
prints the ratio line its page is read from. Each benchmark runs in its own process with a time limit, with
one or two repetitions where it repeats (its default is at least 5) and `--json`; its ratio is parsed from its
output and must be a finite positive number, and its JSON must hold the machine record and, for each
figure, a median within its min and max.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Smoke:
    script: str
    args: tuple[str, ...]
    ratio: str  # a regex whose first group is the ratio the benchmark reports
    limit_s: int = 180
    in_json: bool = True  # whether the JSON must hold a ratio (cache_dtype's figures are exact differences)


def smokes(work: Path) -> list[Smoke]:
    mined_source = str(ROOT / "tunelens" / "data")  # a small source tree: a few hundred pairs, seconds to mine
    return [
        Smoke("data_mine.py", ("--source", mined_source, "--workers", "2", "--repeat", "2"),
              r"\(([\d.]+)x the baseline\)"),
        Smoke("data_lint.py", ("--records", "300", "--mined", str(work / "mined.jsonl"), "--work", str(work / "lint"),
                               "--repeat", "2"), r"lint costs ([\d.]+)x the baseline"),
        Smoke("eval_throughput.py", ("--model", "tiny", "--prompts", "2", "--batch-size", "2",
                                     "--max-new-tokens", "4", "--repeats", "2"), r"batched / one at a time:\s*([\d.]+)x"),
        Smoke("load_time.py", ("--model", str(work / "tiny-model"), "--repeat", "1"), r"second / first:\s*([\d.]+)"),
        Smoke("serve_load.py", ("--model", "tiny", "--clients", "2", "--max-tokens", "2", "--max-batch", "2",
                                "--lone", "2", "--repeats", "2"), r"batching / one at a time:\s*([\d.]+)x"),
        Smoke("trace_overhead.py", ("--model", "tiny", "--tokens", "4", "--repeats", "2"),
              r"tokens/s / generate tokens/s: wall median ([\d.]+)x"),
        Smoke("train_throughput.py", ("--model", "tiny", "--steps", "3", "--no-trl", "--variants", "plain,packing"),
              r": ([\d.]+)x trained tokens/s"),
        Smoke("gate_query.py", ("--index-size", "200", "--queries", "8"), r"paired per query ([\d.]+)x", limit_s=300),
        Smoke("judge_speed.py", ("--cases", "2", "--suites", "code", "--repeat", "2"),
              r"new/old time per case: ([\d.]+)x"),
        # Decode over prefill: enough tokens that decoding, not the prefill, is what is timed.
        Smoke("decode_bandwidth.py", ("--model", str(work / "tiny-model"), "--tokens", "16", "--repeats", "2"),
              r"tunelens_decode\s+([\d.]+) tokens/s"),
        Smoke("cache_dtype.py", ("--model", str(work / "tiny-model"), "--new-tokens", "4"),
              r"argmax agree ([\d.]+)", in_json=False),
    ]


def prepare(work: Path) -> None:
    """What the smoke sizes read: a mined pairs file for data_lint, a tiny model directory for load_time."""
    from tunelens.data.mine import MineConfig, mine_to_file
    from tunelens.testing import tiny_model

    mine_to_file([str(ROOT / "tunelens" / "data")], work / "mined.jsonl", MineConfig(include_methods=True))
    model, tokenizer = tiny_model("gemma3")
    model.save_pretrained(work / "tiny-model")
    tokenizer.save_pretrained(work / "tiny-model")


def json_problem(path: Path, smoke: Smoke) -> str | None:
    """What is wrong with a benchmark's --json output, or None."""
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"no readable --json output ({err})"
    if not (written.get("record") or {}).get("machine"):
        return "its JSON names no machine"
    for name, figure in written.get("figures", {}).items():
        if not figure["min"] <= figure["median"] <= figure["max"]:
            return f"figure {name!r}: median outside [min, max]"
    if smoke.in_json and not written.get("ratios"):
        return "its JSON holds no ratio"
    return None


def run(smoke: Smoke, work: Path) -> tuple[float | None, str, float]:
    """(ratio or None, the reason it failed or the ratio's line, seconds)."""
    started = time.perf_counter()
    written = work / f"{smoke.script}.json"
    try:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / smoke.script), *smoke.args, "--json", str(written)],
                              cwd=ROOT,
                              capture_output=True, text=True, timeout=smoke.limit_s)
    except subprocess.TimeoutExpired:
        return None, f"ran past {smoke.limit_s} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"exit {done.returncode}: {last[:300]}", seconds
    match = re.search(smoke.ratio, done.stdout)
    if not match:
        return None, f"no ratio in its output (looked for {smoke.ratio!r})", seconds
    ratio = float(match.group(1))
    if not math.isfinite(ratio) or ratio <= 0:
        return None, f"ratio {ratio} is not a finite positive number", seconds
    problem = json_problem(written, smoke)
    if problem:
        return None, problem, seconds
    line = next(line for line in done.stdout.splitlines() if match.group(0) in line)
    return ratio, line.strip(), seconds


def main(names: list[str]) -> int:
    failed = []
    with tempfile.TemporaryDirectory(prefix="tunelens-bench-smoke-") as tmp:
        work = Path(tmp)
        prepare(work)
        chosen = [s for s in smokes(work) if not names or s.script.removesuffix(".py") in names]
        for smoke in chosen:
            ratio, said, seconds = run(smoke, work)
            status = "ok" if ratio is not None else "FAILED"
            print(f"bench smoke {smoke.script}: {status} in {seconds:.0f} s: {said}", flush=True)
            if ratio is None:
                failed.append(smoke.script)
    if failed:
        print(f"bench smoke: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
