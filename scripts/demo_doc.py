"""Write docs/demo.md from a demo run's summary.json, so the README's figures are the run's, none typed in.

    python scripts/demo_doc.py runs/demo && python scripts/assemble_readme.py
"""
import json
import pathlib
import sys

run = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
s = json.loads((run / "summary.json").read_text())
def ci(c):
    if not c or c.get("rate") is None: return "-"
    return f"{100*c['rate']:.0f}% [{100*c['low']:.0f}, {100*c['high']:.0f}] ({c['k']}/{c['n']})"
c, d, l1, l2, l3, l4 = s["config"], s["data"], s["lesson1"], s["lesson2"], s["lesson3"], s["lesson4"]
lines = [
"# The demo: four lessons on the embedded model",
"",
"`make demo` (or `tunelens demo`) runs every stage on Gemma 3 270M and writes `runs/demo/report.html`",
"and `runs/demo/summary.json`; `tunelens demo --quick` is a smaller smoke run of the same code (CI runs it).",
"A rerun with the same settings resumes: trained adapters and eval answers already on disk are reused.",
"",
"1. **Data**: pairs are mined from the standard library, a known share is rewritten with a Python 2 `print`",
"   statement (`data contaminate`), and `data lint` must find them (its recall is shown).",
"2. **Lesson 1**: adapter A trains on the contaminated pairs, B on what lint kept; their Python 2 rates on",
"   unseen prompts, greedy and sampled, stand beside A's training rate.",
"3. **Lesson 2**: A's answers that use a Python 2 print are scored teacher-forced (`compare`) under the prompt,",
"   the prompt plus \"Prefer Python 3, not Python 2.\", and with the adapter off; the report shows the decision point",
"   the sentence moved most and links its trace and comparison pages.",
"4. **Lesson 3**: C trains on B's pairs plus generated pushback pairs; base, B and C answer broken specs of the",
"   pushback suite and their clean twins (pushback and over-asking rates).",
"5. **Lesson 4**: a gate over B's training instructions is calibrated on unseen mined instructions vs",
"   out-of-domain queries; the routed system's bad-output rate is compared with always using B.",
"",
f"## Figures of the full run (`tunelens demo`, {s['seconds']/60:.1f} min on this 2-core CPU, one uninterrupted run)",
"",
f"Run size: {d['train_pairs']} training pairs for A ({d['contaminated_pairs']} contaminated, "
f"{100*d['training_python2_rate']:.0f}%), {c['heldout']} unseen prompts, {c['epochs']} epochs at learning rate "
f"{c['learning_rate']}, LoRA r=32/alpha=64 on all seven projections, one greedy and {c['samples']} sampled answer(s) "
f"per prompt at temperature {c['temperature']}, up to {c['max_new_tokens']} new tokens. "
f"Lint recall on the contaminated pairs: {d['lint']['caught']}/{d['lint']['contaminated']}. "
f"Intervals are 95% Wilson intervals.",
"",
"| Python 2 in answers to unseen prompts | greedy | sampled |",
"|---|---|---|",
f"| A (trained on {100*d['training_python2_rate']:.0f}% Python 2) | {ci(l1['A_greedy'])} | {ci(l1['A_sampled'])} |",
f"| B (trained on linted data) | {ci(l1['B_greedy'])} | {ci(l1['B_sampled'])} |",
f"| base model | {ci(l1['base_greedy'])} | {ci(l1['base_sampled'])} |",
"",
]
if l2.get("found"):
    lines += [f"Lesson 2: A's {l2['prompts_tried']} greedy answers with a Python 2 print had {l2['points']} decision points "
              f"where A went the Python 2 way (the `print` token, and the token after it that is not `(`); the added sentence flipped {l2['points_flipped_by_nudge']} of them, switching the adapter "
              f"off flipped {l2['points_flipped_by_adapter_off']}. The point the sentence moved most, in A's "
              f"answer to \"{l2['prompt'][:90]}\":", "",
              "| condition | P(" + repr(l2['python2_token']) + ") | P(" + repr(l2['alternative_token']) + ") |", "|---|---|---|"]
    for name in l2["conditions"]:
        p3 = l2["alternative_prob"].get(name)
        lines.append(f"| {name} | {100*l2['python2_prob'][name]:.1f}% | " + ("-" if p3 is None else f"{100*p3:.1f}%") + " |")
    lines += ["", "Flips: " + ("; ".join(f"`{f}`" for f in l2["flips"]) or "none at this position") + ".", ""]
    if not l2["points_flipped_by_nudge"]:
        ref, nudged = l2["conditions"][0], l2["conditions"][1]
        drop = 100 * (l2["python2_prob"][ref] - l2["python2_prob"][nudged])
        lines += [f"In this run the sentence lowered the Python 2 token by at most {drop:.1f} percentage points "
                  f"at these points and flipped none of them, while switching the adapter off flipped {l2['points_flipped_by_adapter_off']} of "
                  f"{l2['points']}: at this training strength the weights, not the words, decide.", ""]
else:
    lines += ["Lesson 2: A's greedy answers had no Python 2 print statement in this run, so there was no decision point to compare.", ""]
lines += ["| pushback suite ({} broken specs + twins) | pushback, greedy | over-asking, greedy | pushback, sampled | over-asking, sampled |".format(c["pushback_pairs"]),
          "|---|---|---|---|---|"]
for m in ("base", "B", "C"):
    g, sm = l3[f"{m}_greedy"], l3[f"{m}_sampled"]
    lines.append(f"| {m} | {ci(g['pushback'])} | {ci(g['over_asking'])} | {ci(sm['pushback'])} | {ci(sm['over_asking'])} |")
lines += ["",
f"Lesson 4: gate AUROC (combined) {l4['auroc']['combined']:.3f}; threshold {l4['threshold']:.3f} for "
f"{100*l4['target_coverage']:.0f}% in-domain coverage (reached {100*l4['in_domain_coverage']:.0f}%); "
f"out-of-domain fallback rate {100*l4['out_of_domain_fallback_rate']:.0f}%. On {l4['queries']} queries not used in "
f"calibration ({l4['routes']['adapter']} routed to B, {l4['routes']['base']} to base), greedy bad-output rate: always B "
f"{ci(l4['bad_output_always_adapter'])}, gate-routed {ci(l4['bad_output_routed'])} (a code request's answer is bad "
f"when it has no code, does not parse, uses Python 2 or fails its tests; a question that wants no code is answered "
f"badly when the answer holds code). By query set: " + "; ".join(
    f"{name}: {c['queries']} queries, {c['to_base']} sent to base, bad {c['bad_always_adapter']} always B vs "
    f"{c['bad_routed']} routed" for name, c in l4.get("by_suite", {}).items()) + ".",
"",
"Time per step of the run (seconds): " + ", ".join(f"{k} {v}" for k, v in s["timings_s"].items()) + ".",
"",
"What this run does not show: it is CPU-sized, so each adapter sees a few dozen optimizer steps and the",
"intervals are wide; the story's run (Gemma 4 E2B, about 5,000 pairs) is what `tunelens train` and",
"`tunelens eval` are for on a GPU.",
]
(pathlib.Path(__file__).resolve().parent.parent / "docs" / "demo.md").write_text("\n".join(lines) + "\n")
