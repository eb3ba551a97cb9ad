"""Time per case of the judge vs the judge it replaced, on the same reference answers, in one run.

New: ``tunelens.evaluate.judge.judge`` (calls in a fresh sandbox, asserts on the host where the tests
allow, other tests apart from the answer), given each reference as an answer (one answer per case: a case
judged apart or differentially pays its reference's run too, as the first answer to it does; on the host
that run goes alongside the answer's). Old (the baseline): the sandbox of commit ``BASELINE`` (one program per case, code and tests
together, ``/`` remounted read-only), loaded from git history into a temporary directory, running the
same program the old ``test_program`` built. Both judge the bundled code suite's and HumanEval's
references one case at a time, alternating old and new per case so that a busy shared CPU slows both
alike. Target: new/old time per case at most 1.5.

    python bench/judge_speed.py [--cases 60] [--suites code,humaneval] [--repeat 1]
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
    parser.add_argument("--repeat", type=int, default=1, help="times each case is judged by each judge")
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
        disagree = []
        for _ in range(args.repeat):
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
    old_ms, new_ms = (1000 * statistics.mean(times[k]) for k in ("old", "new"))
    print(f"old judge: {old_ms:.1f} ms per case (median {1000 * statistics.median(times['old']):.1f})")
    print(f"new judge: {new_ms:.1f} ms per case (median {1000 * statistics.median(times['new']):.1f})")
    print(f"new/old time per case: {new_ms / old_ms:.2f}x (target <= 1.5x)")
    print(f"verdicts that differ: {len(disagree)}" + (f" {disagree[:10]}" if disagree else ""))


if __name__ == "__main__":
    main()
