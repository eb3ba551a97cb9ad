"""What the docs scripts (demo_doc, fewshot_doc, safety_doc) share: reading a run's summary and writing a
rate with its interval, so every page formats a figure the same way."""
import json
import pathlib


def read_summary(run: pathlib.Path) -> dict:
    """A run directory's summary.json, with its invocation log when the summary predates the log."""
    summary = json.loads((run / "summary.json").read_text())
    log = run / "invocations.jsonl"
    if "invocations" not in summary and log.is_file():
        summary["invocations"] = [json.loads(line) for line in log.read_text().splitlines() if line]
    return summary


def ci(cell) -> str:
    """A rate as `42% [24, 61] (10/24)`: the estimate, its 95% interval and its counts; `-` when undefined."""
    if not cell or cell.get("rate") is None:
        return "-"
    return f"{100*cell['rate']:.0f}% [{100*cell['low']:.0f}, {100*cell['high']:.0f}] ({cell['k']}/{cell['n']})"


def record_line(summary: dict, record: str) -> str:
    """Which committed record a page comes from, and what that record says about the run: commit, command,
    machine and the versions that decide the numbers."""
    r = summary.get("record")
    if not r:
        return f"Record: `{record}` (a run from before run records: it names no commit, command or machine)."
    m, v = r["machine"], r["versions"]
    commit = "no git commit" if not r["commit"] else (
        f"commit {r['commit'][:10]}" + (" with uncommitted changes" if r["dirty"] else ""))
    flags = "/".join(m.get("cpu_flags") or []) or "none of avx2/avx512/amx"
    return (f"Record: `{record}`: {commit}; `{r['command']}`; {m['cpu_model']}, {m['usable_cpus']} of {m['cpus']} "
            f"cores usable, flags {flags}; Python {v['python']}, torch {v['torch']}, transformers "
            f"{v['transformers']}, peft {v['peft']}.")
