"""Benchmark of the data stage: lint speed on N records, Python 2 recall on contaminated records, and
the parser against a regex filter (the approach that failed in docs/design.md lesson 1).

    python bench/data_lint.py [--records 5000] [--mined pairs.jsonl | --source DIRS] [--work DIR] [--repeat 5]
                              [--json PATH]

The corpus is built in the same run: pairs mined from the standard library (methods included), pushback
pairs, a contaminated share, exact and near duplicates and malformed lines, cut to --records. Figures
are printed with ratios against baselines measured in the same run: reading + JSON-parsing the same file
(the least any lint must do) and a regex filter. Times are medians of --repeat runs, lint and baseline
alternating, with their min and max.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402
from tunelens.data.contaminate import ContaminateConfig, contaminate_file  # noqa: E402
from tunelens.data.lint import lint_file  # noqa: E402
from tunelens.data.mine import MineConfig, mine_to_file  # noqa: E402
from tunelens.data.pushback import PushbackConfig, add_pushback_file, distinct_trigram_ratio  # noqa: E402
from tunelens.data.records import read_pairs  # noqa: E402

# What a quick filter would look for: the regex that "let hundreds of Python 2 pairs through".
REGEX = re.compile(r"print\s+[\"'\w]|except\s+[\w.]+\s*,\s*\w+\s*:|\bxrange\(|\.has_key\(|\.iteritems\(|<>|`\w+`"
                   r"|\b0[0-7]+\b|\b\d+L\b|\bur['\"]|\braw_input\(|\bunicode\(|\bbasestring\b|raise\s+\w+\s*,")


def build_corpus(work: Path, records: int, mined: Path | None, seed: int, source: list[str] | None = None) -> Path:
    if mined is None:
        mined = work / "mined.jsonl"
        started = time.perf_counter()
        result = mine_to_file(source, mined, MineConfig(include_methods=True))
        print(f"mined {len(result.pairs)} pairs (methods included) in {time.perf_counter() - started:.1f} s")
    with_pushback = work / "pushback.jsonl"
    pushback = add_pushback_file(mined, with_pushback, PushbackConfig(rate=0.3, seed=seed))
    # baseline: the same number of responses if each kind always gave one fixed answer
    added = [json.loads(line) for line in with_pushback.read_text(encoding="utf-8").splitlines() if '"pushback"' in line]
    canned = [f"The request for {r['pushback']['kind']} is contradictory, so I cannot write it. "
              "Could you clarify what you want?" for r in added]
    canned_ratio = distinct_trigram_ratio(canned)
    print(f"pushback: {pushback.added} pairs, distinct-trigram ratio {pushback.distinct_trigram_ratio:.3f} "
          f"(one canned answer per kind: {canned_ratio:.3f}; {pushback.distinct_trigram_ratio / canned_ratio:.0f}x)")
    contaminated = work / "contaminated.jsonl"
    result = contaminate_file(with_pushback, contaminated, ContaminateConfig(rate=0.1, seed=seed))
    print(f"contaminated: {result.contaminated} of {result.total} ({result.by_kind})")
    rows = contaminated.read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    extra = []
    for line in rng.sample(rows, min(150, len(rows))):  # exact duplicates
        extra.append(line)
    for line in rng.sample(rows, min(150, len(rows))):  # near duplicates: one more sentence in the prompt
        record = json.loads(line)
        if "messages" in record and "contamination" not in record:
            record["messages"][0]["content"] += " Keep it short."
            extra.append(json.dumps(record))
    extra += ["{broken json", '{"messages": "not a list"}', "[1, 2, 3]"] * 10
    corpus = rows + extra
    while len(corpus) < records:  # pad with renamed copies so the size is what was asked
        record = json.loads(rng.choice(rows))
        record["id"] = f"pad-{len(corpus)}"
        if "messages" in record:
            record["messages"][0]["content"] += f" (variant {len(corpus)})"
        corpus.append(json.dumps(record))
    rng.shuffle(corpus)
    corpus = corpus[:records]
    path = work / "corpus.jsonl"
    path.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    return path


def read_baseline(path: Path) -> float:
    started = time.perf_counter()
    for _ in read_pairs(path):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--mined", type=Path, help="reuse a mined pairs file instead of mining the stdlib")
    parser.add_argument("--source", default=None, help="comma-separated sources to mine (default: the stdlib)")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=MIN_REPEATS, help="timed lint runs (medians printed)")
    add_json_argument(parser)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tunelens-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = [s for s in args.source.split(",") if s] if args.source else None
    corpus = build_corpus(work, args.records, args.mined, args.seed, source)

    figures = Figures("data_lint", args)
    baselines, walls, cpus = [], [], []
    for repeat in range(args.repeat):  # alternating, so a burst of load lands on both
        baselines.append(read_baseline(corpus))
        wall, cpu = time.perf_counter(), time.process_time()
        result = lint_file(corpus, work / "lint")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    baseline = figures.add("baseline: read + JSON-parse", "s", baselines)
    wall, cpu = figures.add("lint wall", "s", walls), figures.add("lint CPU", "s", cpus)
    rate = figures.add("lint records/s", "records/s", [result.total / w for w in walls])
    costs = figures.ratio("lint / baseline", "lint wall", "baseline: read + JSON-parse", paired=True)
    figures.fact("records", result.total)
    figures.fact("kept", result.kept)
    figures.fact("rejected", result.rejected)
    print(f"\nlint: {result.total} records in {wall['median']:.2f} s wall [{wall['min']:.2f}, {wall['max']:.2f}], "
          f"{cpu['median']:.2f} s CPU ({rate['median']:.0f} records/s); kept {result.kept}, rejected {result.rejected}")
    print(f"  by reason: {result.by_reason}")
    print(f"  baseline (read + JSON-parse only): {baseline['median']:.2f} s -> lint costs {costs:.1f}x the baseline")

    quarantine = {json.loads(line)["line"]: json.loads(line)
                  for line in (work / "lint" / "quarantine.jsonl").read_text().splitlines()}
    tagged, caught, regex_caught, regex_false = 0, 0, 0, 0
    clean_records = 0
    for number, line in enumerate(corpus.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            continue
        response = record["messages"][-1].get("content", "") if record["messages"] else ""
        flagged_by_regex = bool(REGEX.search(response if isinstance(response, str) else ""))
        if "contamination" in record:
            tagged += 1
            entry = quarantine.get(number)
            caught += bool(entry and any(r["code"].startswith("py2-") for r in entry["reasons"]))
            regex_caught += flagged_by_regex
        else:
            clean_records += 1
            regex_false += flagged_by_regex
            entry = quarantine.get(number)
    lint_false = sum(1 for entry in quarantine.values()
                     if "record" in entry and "contamination" not in entry["record"]
                     and any(r["code"].startswith("py2-") for r in entry["reasons"]))
    print(f"\nPython 2 recall on {tagged} contaminated records: parser {caught / tagged:.2%}, "
          f"regex {regex_caught / tagged:.2%}")
    print(f"false Python 2 flags on {clean_records} uncontaminated records: parser {lint_false}, regex {regex_false}")
    figures.fact("contaminated records", tagged)
    figures.fact("python2 recall, parser", caught / tagged)
    figures.fact("python2 recall, regex", regex_caught / tagged)
    figures.fact("false python2 flags on clean records, parser", lint_false)
    figures.fact("false python2 flags on clean records, regex", regex_false)
    print(f"work directory: {work}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
