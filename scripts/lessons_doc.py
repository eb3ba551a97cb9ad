"""Write docs/lessons.md from the committed run records docs/runs/lessons-*/summary.json, so no number is typed in.

    python scripts/lessons_doc.py                  # docs/runs -> docs/lessons.md
    python scripts/lessons_doc.py RUNS_DIR OUT.md  # other places (the tests)

One section per lesson: the estimand, the primary row's across-seed mean with its t interval and the per-seed
values, the seeds and the n behind each value, the headline (replicated / not replicated / not testable here,
read by tunelens.demo.lessons.headline, the protocol's one rule), and a plain sentence against the case study.
A lesson with no finished record reads "pending" with the command that makes it; nothing is invented.
"""
import json
import pathlib
import sys

from tunelens.demo import lessons as L

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The protocol's runs: the command, its minutes (docs/protocol.md's budget) and where its record is committed.
RUNS = {
    "1": ("lessons-1-gemma", "tunelens study lessons --model gemma3-270m --lesson 1 --seeds 14 --budget-minutes 90 "
                             "--out runs/lessons-1-gemma", "302 min in 4 invocations of at most 90"),
    "2": ("lessons-2-qwen", "tunelens study lessons --model qwen2.5-coder-1.5b --lesson 2 --seeds 4 --budget-minutes 90 "
                            "--out runs/lessons-2-qwen",
          "339 min in 4 invocations of at most 90; Qwen's lesson 1 at K = 2 no longer fits (amendment 1)"),
}
ESTIMANDS = {
    "1": "Per seed, the least-squares slope of P(Python 2 | the answer prints) on the share of Python 2 among the "
         "training pairs' prints (0, 5, 15, 30%), one answer per held-out prompt at temperature 1; the table's "
         "rows: the slope against 0 (primary) and against 1, and Qwen A30's P(Python 2 | prints) against 0; "
         "Holm over the 3 rows.",
    "2": "Per seed of an A30-style Qwen adapter, the mean over contested measurement-half points of "
         "Δ(lever) − Δ(placebo) in the log-odds of Python 3 over Python 2; one row per lever, the sentence after "
         "the request the primary; Holm over the 5 rows.",
}


def records(runs: pathlib.Path) -> dict[str, dict]:
    """{directory name: summary} of every committed lessons record."""
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(runs.glob("lessons-*/summary.json"))}


def section_of(found: dict[str, dict], key: str, role: str | None = None) -> tuple[str, dict] | None:
    """The record holding lesson `key` (of lesson 1's `role`) with the most finished seeds, or None."""
    held = [(name, s["lessons"][key]) for name, s in found.items() if key in s.get("lessons", {})
            and (role is None or s["lessons"][key].get("role") == role)]
    return max(held, key=lambda item: len(item[1]["seeds"]), default=None)


def interval(cell: dict, digits: int = 3) -> str:
    if cell["mean"] is None:
        return "-"
    text = f"{cell['mean']:+.{digits}f}"
    if cell["low"] is not None:
        text += f" [{cell['low']:+.{digits}f}, {cell['high']:+.{digits}f}]"
    return text


def per_seed(cell: dict) -> str:
    return ", ".join(f"{v:+.3f}" for v in cell["per_seed"]) or "-"


def table_lines(rows: list[dict]) -> list[str]:
    lines = ["| row | across-seed mean [95% t interval] | seeds (K) | per-seed values | p | Holm p | reading |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        p = row["test"]["p"]
        name = row["row"].replace("|", "\\|")  # "P(Python 2 | prints)" inside a cell
        lines.append(f"| {name} | {interval(row['seeds'])} | {row['seeds']['k']} | {per_seed(row['seeds'])} | "
                     f"{'-' if p is None else f'{p:.3g}'} | {row['p_holm']:.3g} | {row['words']} |")
    return lines


def pending(key: str, record: tuple[str, dict] | None = None) -> list[str]:
    directory, command, minutes = RUNS[key]
    state = "no record yet" if record is None else \
        f"{len(record[1]['seeds'])} of {record[1]['seeds_planned']} seeds finished in {record[0]}"
    return [f"**Headline: pending** ({state}). The run that makes it ({minutes}):", "", "```",
            f"{command}   # rerun until summary.json says complete",
            f"tar -C runs --exclude adapters --exclude mined.jsonl -cf - {directory} | tar -C docs/runs -xf -"
            "   # the record; `cp -r docs/runs/DIR runs/` resumes from it",
            "python scripts/lessons_doc.py", "```", ""]


def headline_line(word: dict) -> str:
    return f"**Headline: {word['word']}** ({word['reason']})."


def lesson1(found: dict[str, dict]) -> list[str]:
    lines = ["## Lesson 1: bad data is learned at the rate it appears", "", f"**Estimand.** {ESTIMANDS['1']}", ""]
    gemma, qwen = section_of(found, "1", "1"), section_of(found, "1", "1-qwen")
    gemma_done = gemma if gemma and gemma[1]["complete"] else None
    qwen_done = qwen if qwen and qwen[1]["complete"] else None
    if not (gemma_done or qwen_done):
        return lines + pending("1", gemma)
    combined = L.lesson1_combined(gemma_done and gemma_done[1], qwen_done and qwen_done[1])
    lines += table_lines(combined["table"]) + [""]
    if gemma_done:
        name, section = gemma_done
        slope, against_one = combined["table"][0], combined["table"][1]
        lines += [f"gemma3-270m ({name}): {len(section['seeds'])} seeds x {len(section['per_seed'][0]['per_share'])} "
                  f"shares, {section['answers_per_adapter']} answers per adapter. "
                  + headline_line(combined["headlines"]["1"]), "",
                  f"The case study said bad data is learned at the rate it appears (slope 1). Here the slope is "
                  f"{interval(slope['seeds'])} over {slope['seeds']['k']} seeds: against 0, {slope['words']}; "
                  f"against 1, {against_one['words']}.", ""]
    else:
        lines += pending("1", gemma) + [""]
    if qwen_done:
        name, section = qwen_done
        row = combined["table"][2]
        lines += [f"Qwen A30 ({name}): {len(section['seeds'])} seeds, {section['answers_per_adapter']} answers per "
                  f"adapter. " + headline_line(combined["headlines"]["1-qwen"]), "",
                  f"P(Python 2 | prints) at a 30% training share: {interval(row['seeds'])} (per adapter; the "
                  "protocol makes no statement about the recipe at this K).", ""]
    return lines


def lesson2(found: dict[str, dict]) -> list[str]:
    lines = ["## Lesson 2: words move probability like weights do", "", f"**Estimand.** {ESTIMANDS['2']}", ""]
    record = section_of(found, "2")
    if record is None or not record[1]["complete"]:
        return lines + pending("2", record)
    name, section = record
    primary, versus = section["rows"][0], section["against_case_study"]
    word = L.headline(L.PROTOCOL["2"], section["model"], section["seeds_planned"], primary["direction"],
                      section["complete"], section["floor_met"])
    points = ", ".join(map(str, section["points_per_seed"]))
    return lines + table_lines(section["rows"]) + [
        "", f"{section['model']} ({name}): {len(section['seeds'])} seeds; contested measurement-half points per seed: "
            f"{points}. " + headline_line(word), "",
        f"The case study's sentence moved its decision point by {section['case_study']:+.3f} log-odds. Here the "
        f"sentence after the request, minus its placebo, moves the contested points by {interval(primary['seeds'])} "
        f"over {primary['seeds']['k']} seeds: {primary['words']}; against the case study's "
        f"{section['case_study']:+.3f}, {versus['words']}.", ""]


# What the protocol's budget left for a descriptive K = 2 run of each lesson it found not testable here.
DESCRIPTIVE = {"3": "The budget leaves no minutes for a descriptive run at K = 2 either (175 min).",
               "4": "The budget leaves no minutes for a descriptive run at K = 2 either (346 min).",
               "safety": "The protocol plans a descriptive run at K = 2 (68 min, per adapter, no statement about "
                         "the recipe); `tunelens study lessons` does not run it yet."}
# Changes to docs/protocol.md made after a governed run, with the reason (docs/protocol.md, "Amendments"): each
# entry is (what changed, why, the original rule's reading). None so far.
AMENDMENTS: list[tuple[str, str, str]] = []


def not_testable() -> list[str]:
    titles = {"3": "Lesson 3: positive-only data erases pushback", "4": "Lesson 4: know when not to trust the "
              "fine-tune", "safety": "Safety: does a narrow fine-tune erase refusals the model had?"}
    lines = []
    for key, entry in L.not_testable_here().items():
        lines += [f"## {titles[key]}", "", f"Protocol row {entry['lesson']}: n = {entry['n']} seeds. "
                  + headline_line(entry["headline"]) + " " + DESCRIPTIVE[key], ""]
    return lines


def note(found: dict[str, dict]) -> list[str]:
    """The runs (command, minutes, whether their record is committed) and the amendments."""
    lines = ["## Note: the runs and the amendments", "", "| run | command | minutes (protocol) | record |",
             "|---|---|---|---|"]
    for directory, command, minutes in RUNS.values():
        record = found.get(directory)
        state = "none yet" if record is None else \
            f"{len(record['seeds_done'])} of {record['seeds_planned']} seeds" if "seeds_done" in record else "present"
        lines.append(f"| {directory} | `{command}` | {minutes} | {state} |")
    lines += [""] + ([f"- {what}: {why} (the original rule reads: {original})" for what, why, original in AMENDMENTS]
                     or ["Amendments to docs/protocol.md after a governed run: none. Amendment 1 (the print-rich pool is too "
                         "small: print-inviting held-out prompts, longer training pairs, lesson 2's points in the "
                         "base's answers) was made before any run and is on that page."])
    return lines + [""]


def render(found: dict[str, dict]) -> str:
    lines = ["# The case study's lessons, with training seeds as replicates", "",
             "<!-- generated by scripts/lessons_doc.py from docs/runs/lessons-*/summary.json; do not edit -->", "",
             "Every figure is an across-seed mean with its 95% t interval from the seeds, the per-seed values beside "
             "it, read by docs/protocol.md's rule (Holm within each table; a direction only where the adjusted p is "
             "below 0.05). Records: " + (", ".join(f"{name} (protocol commit {str(s.get('protocol_commit'))[:10]})"
                                                   for name, s in found.items()) or "none yet") + ".", ""]
    lines += lesson1(found) + lesson2(found) + not_testable() + note(found)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> None:
    runs = pathlib.Path(argv[0]) if argv else ROOT / "docs" / "runs"
    out = pathlib.Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "lessons.md"
    out.write_text(render(records(runs)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
