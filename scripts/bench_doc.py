"""docs/bench.md, and the figure blocks of the stage pages, from the benchmark records under docs/runs/bench/.

A record is what `python bench/NAME.py --json docs/runs/bench/NAME.json` wrote (bench/benchrecord.py): the
machine, commit and command, the settings, every measured quantity as the median of its repetitions with
min and max, the ratios against the baseline measured in the same run, and facts (counts, recalls).

A stage page quotes a record through a block that scripts/pages.py rewrites and checks:

    <!-- bench: trace_overhead -->
    (generated: the record's ratios, their figures, and where they come from)
    <!-- /bench -->
"""
from __future__ import annotations

import json
import re
from pathlib import Path

BLOCK = re.compile(r"(<!-- bench: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.S)


def read_records(directory: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def number(value) -> str:
    """A figure as a page shows it: three significant figures, thousands separated, no exponent above 1e-3."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1e-3 or magnitude == 0:
        return f"{value:.3g}"
    return f"{value:.1e}"


def provenance(name: str, record: dict) -> str:
    """Which record, commit, command and machine a figure comes from."""
    r, shown = record["record"], f"docs/runs/bench/{name}.json"
    m, v = r["machine"], r["versions"]
    commit = "no git commit" if not r.get("commit") else (
        f"commit {r['commit'][:10]}" + (" with uncommitted changes" if r.get("dirty") else ""))
    flags = "/".join(m.get("cpu_flags") or []) or "none of avx2/avx512/amx"
    threads = m.get("torch_threads", "?")
    load = record.get("load_average_end")
    loaded = f"; load average {load[0]:.1f} at the end" if load else ""
    return (f"Record `{shown}` ({r['finished']}): {commit}; `python {r['command']}`; {m['cpu_model']}, "
            f"{m['usable_cpus']} of {m['cpus']} cores usable, flags {flags}, torch {v.get('torch')} with "
            f"{threads} thread{'' if threads == 1 else 's'}{loaded}.")


def figure_cell(figure: dict) -> str:
    return f"{number(figure['median'])} [{number(figure['min'])}, {number(figure['max'])}]"


def ratio_rows(record: dict) -> list[str]:
    rows = ["| ratio | median / median | per-repetition ratios: median [min, max] | target | of: median [min, max], n |",
            "|---|---|---|---|---|"]
    for name, ratio in record["ratios"].items():
        paired = ratio.get("paired")
        figures = [record["figures"][key] for key in (ratio["figure"], ratio["baseline"])]
        of = "; ".join(f"{cell(key)}: {figure_cell(f)} {f['unit']}, n={f['n']}"
                       for key, f in zip((ratio["figure"], ratio["baseline"]), figures))
        rows.append(f"| {cell(name)} | {number(ratio['value'])}x | {figure_cell(paired) + 'x' if paired else '-'} | "
                    f"{ratio.get('target') or '-'} | {of} |")
    return rows


def figure_rows(record: dict) -> list[str]:
    rows = ["| figure | unit | median | min | max | repetitions |", "|---|---|---|---|---|---|"]
    for name, figure in record["figures"].items():
        rows.append(f"| {cell(name)} | {figure['unit']} | {number(figure['median'])} | {number(figure['min'])} | "
                    f"{number(figure['max'])} | {figure['n']} |")
    return rows


def cell(text: str) -> str:
    """Text safe inside a table cell: a `|` (as in |dp|) would end the cell."""
    return str(text).replace("|", "\\|")


def fact_rows(record: dict) -> list[str]:
    """Facts with one value, and those of a flat dict (one row per key); lists (per-prompt rows) stay in
    the record."""
    simple = {}
    for name, value in record.get("facts", {}).items():
        if isinstance(value, dict):
            simple.update({f"{name}: {key}": v for key, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, list):
            simple[name] = value
    if not simple:
        return []
    return ["| fact | value |", "|---|---|"] + [f"| {cell(k)} | {number(v)} |" for k, v in simple.items()]


def settings_line(record: dict) -> str:
    # A temporary path (a worker's data file) is not a setting anyone can give again.
    shown = {k: v for k, v in record.get("settings", {}).items()
             if not isinstance(v, (dict, list)) and not str(v).startswith("/tmp/")}
    return "Settings: " + ", ".join(f"`{k}={v}`" for k, v in shown.items()) + "."


def section(name: str, record: dict) -> list[str]:
    lines = [f"## {name}", "", provenance(name, record), "", settings_line(record), ""]
    if record["ratios"]:
        lines += ratio_rows(record) + [""]
    if record["figures"]:
        lines += figure_rows(record) + [""]
    facts = fact_rows(record)
    if facts:
        lines += facts + [""]
    return lines


HEAD = """# Benchmarks: the committed records

Generated by `python scripts/pages.py` from `docs/runs/bench/*.json`; do not edit by hand
(`tests/test_pages.py` fails when this page differs from its records). Each record was written by
`python bench/NAME.py ... --json docs/runs/bench/NAME.json` (the exact command is in its line below).

How to read it: every measured quantity is the median of its repetitions with their min and max, never a
best-of; every ratio is against a baseline measured in the same run, on the same machine, under the same
load. Each record names its machine and the load average when it ended: where other jobs shared the
machine (a load average above its cores), absolute times and rates are upper bounds of what the code
costs and the spread shows how much the load moved them, while the ratios, measured side by side, are
the figures to compare. A ratio says how two paths compare at the record's size (its settings), not at
every size.
"""


def render(records: dict[str, dict]) -> str:
    lines = [HEAD]
    for name, record in records.items():
        lines += section(name, record)
    return "\n".join(lines).rstrip() + "\n"


def block(name: str, record: dict | None) -> str:
    """A stage page's generated block: the record's ratios and where they come from."""
    if record is None:
        return (f"No record `docs/runs/bench/{name}.json` is committed yet: run "
                f"`python bench/{name}.py --json docs/runs/bench/{name}.json`.\n")
    lines = [provenance(name, record), ""]
    lines += ratio_rows(record) if record["ratios"] else fact_rows(record)
    return "\n".join(lines) + f"\n\nEvery figure of the record: [docs/bench.md](bench.md#{name}).\n"


def fill_blocks(text: str, records: dict[str, dict]) -> str:
    """`text` with every bench block regenerated from its record."""
    return BLOCK.sub(lambda m: m.group(1) + block(m.group("name"), records.get(m.group("name"))) + m.group(4), text)
