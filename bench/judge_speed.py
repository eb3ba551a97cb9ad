"""Time per case of the judge vs the judge it replaced, on the same reference answers, in one run.

New: ``tunelens.evaluate.judge.judge`` (calls in a fresh sandbox, asserts on the host where the tests
allow, other tests apart from the answer), given each reference as an answer (one answer per case: a case
judged apart or differentially pays its reference's run too, as the first answer to it does; on the host
that run goes alongside the answer's). Old (the baseline): the sandbox of commit ``BASELINE`` (one program per case, code and tests
together, ``/`` remounted read-only), loaded from git history into a temporary directory, running the
same program the old ``test_program`` built. Both judge the bundled code suite's and HumanEval's
references one case at a time, alternating old and new per case so that a busy shared CPU slows both
alike. Each of --repeat passes judges every case once with each; the figure of a pass is its mean time per
case, and the medians of the passes (with min and max) are compared. Target: new/old time per case at most 1.5.

    python bench/judge_speed.py [--cases 60] [--suites code,humaneval] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "7d98a5d"  # the last commit with the old sandbox and judge
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402


def load_old_sandbox(directory: Path):
    """The old sandbox module, as it was at BASELINE (its launcher beside it, as it expects)."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    (directory / "sandbox_boot.py").write_text(show("tunelens/evaluate/sandbox_boot.py"))
    source = show("tunelens/evaluate/sandbox.py").replace(
        "from tunelens.evaluate.sandbox_boot import", "from sandbox_boot import")
    (directory / "old_sandbox.py").write_text(source)
    sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location("old_sandbox", directory / "old_sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="code,humaneval")
    parser.add_argument("--cases", type=int, default=60, help="cases per suite (0: all)")
    parser.add_argument("--repeat", type=int, default=MIN_REPEATS, help="passes over the cases, each judge per case")
    add_json_argument(parser)
    args = parser.parse_args()

    from tunelens.evaluate.judge import judge, plan_for
    from tunelens.evaluate.sandbox import Limits, sandbox_isolation
    from tunelens.evaluate.suite import judge_case, load_suite, test_program

    cases = []
    for name in args.suites.split(","):
        suite = [c for c in load_suite(name) if c.expect == "code" and c.reference]
        cases += suite[: args.cases] if args.cases else suite
    limits = Limits(wall_s=20)
    with tempfile.TemporaryDirectory(prefix="tunelens-old-judge-") as directory:
        old = load_old_sandbox(Path(directory))
        print(f"sandbox: new {sandbox_isolation()}, old {old.sandbox_isolation()}; {len(cases)} cases "
              f"({sum(not isinstance(plan_for(c.tests, c.entry_point), Exception) for c in cases)} judged on the host)")
        judge(judge_case(cases[0]), cases[0].reference, limits)  # warm-up: imports, plan cache
        old.run_python("pass")
        times = {"old": [], "new": []}
        per_pass = {"old": [], "new": []}  # mean seconds per case of each pass
        disagree = []
        for _ in range(args.repeat):
            marks = {key: len(values) for key, values in times.items()}
            for case in cases:
                start = time.perf_counter()
                was = old.run_python(test_program(case, case.reference), old.Limits(wall_s=20)).passed
                times["old"].append(time.perf_counter() - start)
                start = time.perf_counter()
                # judged as an answer (not the reference itself): a case judged apart or differentially
                # also pays, once, the reference's run (where objects may cross; the expected outputs)
                now = judge(judge_case(case), case.reference + "\n", limits).passed
                times["new"].append(time.perf_counter() - start)
                if was != now:
                    disagree.append(case.id)
            for key, values in times.items():
                per_pass[key].append(1000 * statistics.mean(values[marks[key]:]))
    figures = Figures("judge_speed", args, baseline_commit=BASELINE, cases=len(cases))
    old_ms = figures.add("old judge, mean per case", "ms", per_pass["old"])
    new_ms = figures.add("new judge, mean per case", "ms", per_pass["new"])
    ratio = figures.ratio("new/old time per case", "new judge, mean per case", "old judge, mean per case",
                          paired=True, target="<= 1.5")
    print(f"old judge: {old_ms['median']:.1f} ms per case [{old_ms['min']:.1f}, {old_ms['max']:.1f}] "
          f"(median over cases {1000 * statistics.median(times['old']):.1f})")
    print(f"new judge: {new_ms['median']:.1f} ms per case [{new_ms['min']:.1f}, {new_ms['max']:.1f}] "
          f"(median over cases {1000 * statistics.median(times['new']):.1f})")
    print(f"new/old time per case: {ratio:.2f}x (target <= 1.5x)")
    print(f"verdicts that differ: {len(disagree)}" + (f" {disagree[:10]}" if disagree else ""))
    figures.fact("verdicts that differ", len(disagree))
    figures.write(args.json)


if __name__ == "__main__":
    main()
