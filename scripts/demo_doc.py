"""Write a demo page (docs/demo.md, docs/demo-study.md, docs/demo-quick.md) from a committed run record, so
the page's figures are the run's, none typed in.

    python scripts/pages.py                    # every page from its record under docs/runs/, and README.md
    python scripts/demo_doc.py docs/runs/demo-quick docs/demo-quick.md "tunelens demo --quick"

A record is a run directory's summary.json copied to docs/runs/<name>/ (no weights). `render` is a function
of the summary alone, so tests regenerate every page from docs/runs/ and fail on any difference.
"""
import pathlib
import sys

from doc_format import ci, read_summary, record_line
from tunelens.demo.lesson1 import reading as lesson1_reading
from tunelens.demo.lesson2 import reading as lesson2_reading
from tunelens.demo.lesson3 import reading as lesson3_reading

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mean(c):
    if not c or c.get("mean") is None:
        return "-"
    return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] (n={c['n']})"


def lesson4_lines(l4):
    kinds = ", ".join(f"{name} {c['queries']} (B bad {c['b_bad']}, base bad {c['base_bad']})" for name, c in l4["kinds"].items())
    out = [f"Lesson 4 (a gate calibrated on B's failures): {l4['queries']} queries, {kinds}."]
    if l4.get("skipped"):
        return out + ["", l4["skipped"] + "."]
    f, h = l4["failures_behind"], l4["held_out"]
    out += ["", f"Test half: {f['held_out']} failures of B in {f['held_out_queries']} queries; threshold for "
            f"{100*l4['target_coverage']:.0f}% coverage fitted on the other half.", "",
            "| signal | AUROC, predicting B's failure | cost per query |", "|---|---|---|"]
    for name, value in l4["auroc"].items():
        out.append(f"| {name} | {'n/a' if value is None else f'{value:.3f}'} | {l4['cost_ms_per_query'][name]:.1f} ms |")
    risk = "-" if h["risk_on_adapter"] is None else f"{100*h['risk_on_adapter']:.0f}%"
    out += ["", f"At the threshold: {100*h['coverage']:.0f}% of the test half kept on B, {risk} of them bad.", "",
            "| kind (test half) | queries | kept on B | bad, always B | bad, always base | bad, routed |",
            "|---|---|---|---|---|---|",
            f"| all | {h['queries']} | {100*h['coverage']:.0f}% | {ci(h['always_adapter'])} | {ci(h['always_base'])} "
            f"| {ci(h['routed'])} |"]
    for name, c in l4["by_kind"].items():
        out.append(f"| {name} | {c['queries']} | {100*c['coverage']:.0f}% | {ci(c['always_adapter'])} | "
                   f"{ci(c['always_base'])} | {ci(c['routed'])} |")
    if l4.get("conformal"):
        cf = l4["conformal"]
        out += ["", f"Split conformal risk control for at most {100*l4['alpha']:.0f}% of queries served badly by B: "
                f"{100*cf['held_out_served_bad']:.0f}% served bad at {100*cf['held_out_coverage']:.0f}% coverage on the "
                f"test half; labelled points needed: {cf['sample_size']['labelled_points_needed'] or 'more than the pool holds'}."]
    return out + [""] + [f"- {line}" for line in l4["reading"]]


def transfer_lines(s, spec, t):
    out = [f"Threshold transfer between {s['config']['model']} and {spec} (`tunelens demo --study`):"]
    if t.get("skipped"):
        return out + ["", t["skipped"]]
    out += ["", f"Both models answered the same {t['queries']} queries (B failures: "
            + ", ".join(f"{name} {k}" for name, k in t["failures"].items())
            + f"); each rule and threshold ({100*t['target_coverage']:.0f}% coverage) is fitted on a shared "
            f"calibration half and measured on the other {t['test_queries']} queries.", "",
            "| signals | calibrated on | applied to | coverage (own) | risk (own) | labelled points to recalibrate |",
            "|---|---|---|---|---|---|"]
    for r in t["table"]:
        needed = r["conformal"]["labelled_points_needed"] or "more than the pool"
        out.append(f"| {r['signals']} | {r['calibrated_on']} | {r['applied_to']} | {100*r['transferred']['coverage']:.0f}% "
                   f"({100*r['own']['coverage']:.0f}%) | {ci(r['transferred']['risk'])} ({ci(r['own']['risk'])}) | {needed} |")
    return out + [""] + [f"- {line}" for line in t["reading"]]


INTRO = [
    "# The demo: the case study's lessons on the embedded model",
    "",
    "`make demo` (or `tunelens demo`) runs every stage on the embedded model and writes `runs/demo/report.html`",
    "and `runs/demo/summary.json`; `tunelens demo --quick` is CI's smoke run of the same code and",
    "`tunelens demo --study` the dose-responses (more adapters, a second base model). A rerun with the same",
    "settings resumes: trained adapters and eval answers already on disk are reused. Every option is a flag",
    "(`tunelens demo --help`) or a key of a YAML file given with `--config`.",
    "",
    "1. **Data**: pairs are mined, drawn short enough for the CPU budget (held-out prompts one per module), a",
    "   known share is rewritten with a Python 2 `print` for each adapter A<rate>, `data lint` must find them, B",
    "   trains on what lint kept, and each C<share> on B's pairs plus generated pushback pairs.",
    "2. **Lesson 1** (dose-response): Python 2 rates on unseen prompts, greedy and sampled, against each A's",
    "   training rate and the y = x line.",
    "3. **Lesson 2** (levers): at every Python 2 decision point of each A's own answers, the change in",
    "   log-odds of Python 3 over Python 2 under a sentence (after, before, as the system line, another",
    "   phrasing), a one-shot Python 3 example in the context, and the adapter off (`tunelens.inspect.levers`).",
    "4. **Lesson 3** (pushback): teacher-forced pushback propensity on held-out broken specs and their clean",
    "   twins (`tunelens.inspect.propensity`), beside greedy and sampled pushback and over-asking rates.",
    "5. **Lesson 4** (the gate): a gate calibrated on adapter B's own failures over a query mix (held-out",
    "   mined instructions, code-suite cases, HumanEval prompts, broken specs and their twins, off-topic",
    "   questions; base and B answer each greedy): AUROC per signal with its cost, routed vs always-B vs",
    "   always-base on the test half, per kind of query. With `--study`, the gate's threshold carried",
    "   unchanged to a second model family, against that model's own calibration (`tunelens.gate.transfer`).",
    "",
]
# The study profile's page only adds figures: the method is the demo page's.
STUDY_INTRO = ["# The study profile: dose-responses and threshold transfer", "",
               "The demo's stages (see the demo above) at more settings: the figures below are the study run's.", ""]
QUICK_INTRO = ["# The quick profile: CI's run of the demo", "",
               "`tunelens demo --quick` is the demo at CI's size (one contaminated adapter, small sets, greedy only);",
               "CI checks its result (`python -m tunelens.demo.check`). Its figures are too small to read as findings:",
               "they show what the run computed, on which commit and machine.", ""]


def intro_for(command: str) -> list[str]:
    if "--quick" in command:
        return QUICK_INTRO
    return STUDY_INTRO if "--study" in command else INTRO


def took(s) -> str:
    """The run's time: one invocation's, or every invocation's and their sum (a resumed run reused answers)."""
    runs = s.get("invocations") or [{"seconds": s["seconds"]}]
    if len(runs) == 1:
        return f"{runs[0]['seconds'] / 60:.1f} min"
    return (f"{len(runs)} invocations, " + " + ".join(f"{r['seconds'] / 60:.1f}" for r in runs)
            + f" = {sum(r['seconds'] for r in runs) / 60:.1f} min; the later ones reused adapters and answers on disk")


def render(s: dict, command: str, record: str) -> str:
    """The page for summary `s`, made by `command`, whose record is at `record` (a path under docs/runs/)."""
    c, tc, d, m = s["config"], s["train_config"], s["data"], s["machine"]
    l1, l2, l3, l4 = s["lesson1"], s["lesson2"], s["lesson3"], s["lesson4"]
    lines = [
        *intro_for(command),
        f"## Figures of the run (`{command}`, {took(s)}, {m['cpus']} CPUs, torch {m['torch']})",
        "",
        record_line(s, record),
        "",
        f"Every adapter: LoRA r={tc['lora_r']}, alpha={tc['lora_alpha']} on {'/'.join(tc['target_modules'])}, "
        f"{tc['epochs']} epoch(s) at learning rate {tc['learning_rate']}. {d['train_pairs']} training pairs drawn from "
        f"{d['mined_total']} mined, {d['heldout']} held-out prompts, one greedy and {c['samples']} sampled answer(s) per "
        f"prompt at temperature {c['temperature']}. Lint caught {d['lint']['caught']} of {d['lint']['contaminated']} "
        "contaminated pairs. Rates carry 95% Wilson intervals, means 95% bootstrap intervals.",
        "",
        "| Python 2 in answers to unseen prompts | in training | greedy | sampled |",
        "|---|---|---|---|",
    ]
    for p in l1["curve"]:
        lines.append(f"| {p['adapter']} | {100*p['training_python2_rate']:.0f}% | {ci(p['greedy'])} | {ci(p['sampled'])} |")
    lines += [f"| B (linted) | 0% | {ci(l1['B']['greedy'])} | {ci(l1['B']['sampled'])} |",
              f"| base model | - | {ci(l1['base']['greedy'])} | {ci(l1['base']['sampled'])} |", ""]
    lines += [f"- {line}" for line in lesson1_reading(l1["curve"])] + [""]
    lines += [f"Lesson 2 (the case study's sentence moved its point by {l2['seed_delta']:+.2f} log-odds):", "",
              "| adapter | lever | points | mean change in log-odds | flipped | sign test p |", "|---|---|---|---|---|---|"]
    for name, r in l2["by_adapter"].items():
        for e in r["effects"]:
            lines.append(f"| {name} | {e['lever']} | {e['points']} | {e['mean_delta']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}] "
                         f"| {e['flipped']}/{e['python2_led']} | {e['sign_test_p']:.3g} |")
    lines += [""] + [f"- {line}" for line in lesson2_reading(l2["by_adapter"])] + [""]
    lines += [f"Lesson 3 ({l3['cases']} pushback-suite cases: broken specs and their clean twins, none used in training):", "",
              "| model | propensity, broken | propensity, twins | gap (broken - twin) | change on broken | pushback, greedy | over-asking, greedy |",
              "|---|---|---|---|---|---|---|"]
    for name in l3["models"]:
        p, r = l3["propensity"][name], l3["rates"][name]["greedy"]
        lines.append(f"| {name} | {mean(p['broken'])} | {mean(p['twins'])} | {mean(p['gap_broken_minus_twin'])} | "
                     f"{mean(p.get('change_on_broken'))} | {ci(r['pushback'])} | {ci(r['over_asking'])} |")
    for name, t in l3["target"].items():
        verdict = "met" if t["met"] else "not met"
        lines.append(f"\n{name} against the target (greedy pushback >= 60% with over-asking <= 15%): {verdict}.")
    if l3.get("other_bases"):
        lines += ["", "| other base | propensity before | after a positive-only LoRA (B) | change on broken | gap after | "
                  "pushback greedy / sampled, before | after (B) |", "|---|---|---|---|---|---|---|"]
        for spec, o in l3["other_bases"].items():
            r = o.get("rates", {})
            free = lambda m: " / ".join(ci(r[m][d]["pushback"]) for d in ("greedy", "sampled")) if m in r else "-"  # noqa: E731
            lines.append(f"| {spec} | {mean(o['base']['broken'])} | {mean(o['B']['broken'])} | "
                         f"{mean(o['B'].get('change_on_broken'))} | {mean(o['B']['gap_broken_minus_twin'])} | "
                         f"{free('base')} | {free('B')} |")
    # Readings by the one rule, from the record's numbers (not the sentences the run stored).
    lines += [""] + [f"- {line}" for line in lesson3_reading(l3["propensity"])]
    lines += [f"- {line}" for spec, o in l3.get("other_bases", {}).items()
              for line in lesson3_reading({"base": o["base"], "B": o["B"]}, prefix=f"{spec} ")]
    lines += [""] + lesson4_lines(l4) + [""]
    for spec, t in (s.get("transfer") or {}).items():
        lines += transfer_lines(s, spec, t) + [""]
    stages = (s.get("record") or {}).get("stages")
    if stages:
        lines += ["Time per step of the last invocation, wall seconds (CPU seconds): " + ", ".join(
            f"{k} {v['wall_s']} ({v['cpu_s']})" for k, v in stages.items()) + ".", ""]
    else:
        lines += ["Time per step (seconds): " + ", ".join(f"{k} {v}" for k, v in s["timings_s"].items()) + ".", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    run = pathlib.Path(argv[0])
    target = pathlib.Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "demo.md"
    command = argv[2] if len(argv) > 2 else "tunelens demo"
    target.write_text(render(read_summary(run), command, str(run / "summary.json")))


if __name__ == "__main__":
    main(sys.argv[1:])
