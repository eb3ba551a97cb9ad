"""Write docs/safety.md and its figures from a safety study's summary.json, so no number is typed in.

    tunelens study safety --out runs/safety && python scripts/safety_doc.py runs/safety
"""
import pathlib
import sys

from doc_format import ci, read_summary
from tunelens.studies.safety_figures import figures

ROOT = pathlib.Path(__file__).resolve().parent.parent
run = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/safety")
s = read_summary(run)
c, labels, models = s["config"], s["labels"], s["models"]
ft, prop = s["free_text"], s["propensity"]
decodings = list(ft["rates"][models[0]])

images = ROOT / "docs" / "images"
images.mkdir(parents=True, exist_ok=True)
drawn = figures(s)
for name, png in drawn.items():
    (images / f"safety-{name.replace('_', '-')}.png").write_bytes(png)



def mean(cell):
    return f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}]"


def sign(cell):
    return f"{cell['up']} up, {cell['down']} down, p={cell['sign_p']:.2g}"


def moved(cell, what):
    """A sentence part that says whether the interval excludes zero, in which direction."""
    if cell["low"] > 0:
        return f"raised {what} by {mean(cell)} ({sign(cell)})"
    if cell["high"] < 0:
        return f"lowered {what} by {mean(cell)} ({sign(cell)})"
    return f"did not move {what} detectably: {mean(cell)} ({sign(cell)})"


def change(model, against="base"):
    return next(x for x in prop["changes"] if x["model"] == model and x["against"] == against)


def test(model, against, decoding, metric):
    return next(t for t in ft["mcnemar"] if (t["model"], t["against"], t["decoding"], t["metric"])
                == (model, against, decoding, metric))


mixes = [m for m in models if m.startswith("refusal-")]
base_greedy = ft["rates"]["base"]["greedy"]["refusal"]
lines = [
    "# Safety after a narrow fine-tune",
    "",
    "The seed asked: *is anyone doing safety regression tests after fine-tuning on narrow positive-only data?*",
    "Qi et al. (2023) found that even benign fine-tuning wears away a model's refusals; Betley et al. (2025) made a",
    "model misaligned on unrelated questions with about 6,000 narrow code examples; Bianchi et al. (2024) restored",
    "most of the lost safety with a few hundred refusal examples (about 3% of training), and found that too many",
    "make a model refuse harmless requests. `tunelens study safety` runs that experiment with the real stages:",
    "",
    "1. **Data.** Code pairs mined from the standard library (`data mine`) train a positive-only code LoRA. For each",
    "   refusal share, `data refusal` appends generated \"harmful request -> refusal\" pairs making up that share of",
    "   the training file. Requests are composed from templates of eight kinds of harm (malware, credential theft,",
    "   stalking, evading detection, intrusion, destructive, fraud, harassment); responses decline politely in",
    "   varied words, say why, and usually offer a safe alternative. The bundled `safety` suite stays held out:",
    "   its schemes are not among the templates, and every generated request is checked against its 80 prompts",
    "   (a request with word 3-gram Jaccard >= 0.2 to any of them is dropped; tests check that none shares even",
    "   a six-word run with a suite prompt).",
    "2. **Train.** One LoRA per data set, same settings and seed: the code LoRA (share 0) and one per refusal share.",
    "3. **Free text.** `eval --suite safety` on every adapter against the base model, greedy and sampled: refusal",
    "   on the 40 harmful requests, over-refusal on their 40 benign look-alikes (each harmful request has a twin",
    "   that reads like it but is legitimate), exact McNemar on the same cases.",
    "4. **Teacher-forced refusal propensity.** For every prompt, the log-odds of refusal openings (\"I can't help",
    "   with that\", ...) over comply openings (a code fence, \"Sure\", ...), as lesson 3 measures pushback. It is",
    "   continuous and paired, so it sees a shift that never wins the argmax. Reported per model: the mean on",
    "   harmful requests and on look-alikes (95% bootstrap), the *gap* (each harmful request minus its twin: how",
    "   well the model tells them apart), and every paired change with a bootstrap interval and a sign test.",
    "",
    "```",
    "tunelens study safety --out runs/safety [--train-pairs 48 --shares 0.05,0.15 --samples 1 --max-new-tokens 64]",
    "python scripts/safety_doc.py runs/safety   # this page and its figures, from runs/safety/summary.json",
    "```",
    "",
    f"## The run on `{c['model']}`",
    "",
    f"Command: `tunelens study safety --out runs/safety --train-pairs {c['train_pairs']} --shares "
    f"{','.join(str(x) for x in c['shares'])} --epochs {c['epochs']} --learning-rate {c['learning_rate']} "
    f"--samples {c['samples']} --max-new-tokens {c['max_new_tokens']}"
    + (f" --limit {c['limit']}" if c.get("limit") else "") + f"` ({s['seconds']/60:.1f} min on this shared "
    f"2-core CPU). LoRA r=32/alpha=64 on all seven projections, batch {c['batch_size']}; sampled answers at "
    f"temperature {c['temperature']}. {s['cases']['harmful']} harmful requests and {s['cases']['lookalike']} look-alikes"
    + (f" (the suite's first {c['limit']} harmful requests and their twins: on this busy shared CPU a training step "
       "took about a minute of wall time, so the run was cut to fit; the command's default is the whole suite)."
       if c.get("limit") else "."),
    "",
    "| model | training pairs | refusal pairs | distinct-trigram ratio of refusals | closest request to a suite prompt |",
    "|---|---|---|---|---|",
    f"| {labels['code']} | {s['data']['code_pairs']} | 0 | - | - |",
]
for name in mixes:
    d = s["data"]["refusal_data"][name]
    lines.append(f"| {labels[name]} | {d['total']} | {d['refusal_pairs']} ({100*d['share']:.1f}%) | "
                 f"{d['distinct_trigram_ratio']:.2f} | Jaccard {d['max_suite_similarity']:.2f} |")
lines += ["", "### Free text (95% Wilson intervals)", "",
          "| model | " + " | ".join(f"refused harmful, {d} | refused look-alike, {d}" for d in decodings) + " |",
          "|---|" + "---|---|" * len(decodings)]
for m in models:
    lines.append(f"| {labels[m]} | " + " | ".join(f"{ci(ft['rates'][m][d]['refusal'])} | "
                                                  f"{ci(ft['rates'][m][d]['over_refusal'])}" for d in decodings) + " |")
lines += ["", "![refusal and over-refusal rates](images/safety-free-text.png)", "",
          "Exact McNemar, paired on the same case and sample (worse: only the earlier model got it right).", "",
          "| model | against | decoding | metric | worse | better | p |", "|---|---|---|---|---|---|---|"]
for t in ft["mcnemar"]:
    lines.append(f"| {labels[t['model']]} | {labels[t['against']]} | {t['decoding']} | {t['metric']} | "
                 f"{t['base_only']} | {t['tuned_only']} | {t['p_value']:.3g} |")
lines += ["", "### Teacher-forced refusal propensity (log-odds; mean, 95% bootstrap)", "",
          "| model | harmful | look-alike | gap (harmful - twin) | gap sign test |", "|---|---|---|---|---|"]
for m in models:
    p = prop["models"][m]
    lines.append(f"| {labels[m]} | {mean(p['harmful'])} | {mean(p['lookalike'])} | {mean(p['gap'])} | {sign(p['gap'])} |")
lines += ["", "![refusal propensity per model](images/safety-propensity.png)", "",
          "| model | against | change on harmful | change on look-alikes | change of the gap |", "|---|---|---|---|---|"]
for x in prop["changes"]:
    lines.append(f"| {labels[x['model']]} | {labels[x['against']]} | {mean(x['harmful'])}, {sign(x['harmful'])} | "
                 f"{mean(x['lookalike'])}, {sign(x['lookalike'])} | {mean(x['gap'])}, {sign(x['gap'])} |")
lines += ["", "![paired change from the base model](images/safety-change.png)", "", "### What the run shows", ""]
code = change("code")
lines.append(f"- **Before any fine-tune** the base model refuses {ci(base_greedy)} of the harmful requests greedily: "
             "free-text refusal has nothing to lose at this scale, so McNemar on it cannot show a regression "
             "(a drop from 0 is impossible), only a gain.")
lines.append(f"- **The positive-only code LoRA** {moved(code['harmful'], 'refusal log-odds on harmful requests')}; it "
             f"{moved(code['lookalike'], 'them on look-alikes')}, and {moved(code['gap'], 'the harmful-minus-twin gap')}.")
for name in mixes:
    x, y = change(name), change(name, "code")
    greedy = ft["rates"][name]["greedy"]
    lines.append(f"- **{labels[name]}**: against the code LoRA it {moved(y['harmful'], 'harmful-request log-odds')} and "
                 f"{moved(y['lookalike'], 'look-alike log-odds')} (the over-refusal side), and "
                 f"{moved(y['gap'], 'the gap')}. Greedy free text: refuses {ci(greedy['refusal'])} of harmful requests "
                 f"(McNemar vs base p={test(name, 'base', 'greedy', 'refusal')['p_value']:.2g}) and "
                 f"{ci(greedy['over_refusal'])} of look-alikes (p={test(name, 'base', 'greedy', 'over_refusal')['p_value']:.2g}).")
n = s["cases"]["harmful"]
lines += [
    "",
    f"With {n} twin pairs the smallest possible two-sided sign-test p is {2 / 2 ** n:.2g}, and a percentile bootstrap "
    "over so few items is narrow: read an interval that excludes 0 while the sign test stays above 0.05 as a lead, "
    "not a finding.",
    "",
    "## What only a larger model can show",
    "",
    f"`{c['model']}` is instruction-tuned but tiny: it refuses {base_greedy['k']} of {base_greedy['n']} harmful requests "
    "greedily before any fine-tune (it writes the malware). So the question the seed asked, *does a narrow fine-tune",
    "erase refusals the model had?*, cannot be answered in free text here: there are no refusals to erase, and a",
    "refusal rate at 0% has no room to drop. What this scale can show is the direction of the pressure, in the",
    "teacher-forced propensity: whether the code LoRA pushes refusal openings further down, whether a few refusal",
    "pairs pull them back up, and whether they pull the look-alikes up with them (the over-refusal cost, which the",
    "gap measures directly). Whether that pressure crosses the argmax, and how many harmful requests turn from",
    "refused to answered, needs a model that refuses to begin with.",
    "",
    "## At Gemma 4 E2B scale",
    "",
    "- **A real baseline.** An instruction-tuned 2B model refuses most of these requests; the free-text McNemar then",
    "  measures the thing asked (refused before, answered after), and the greedy and sampled rates can differ.",
    "- **Training size.** The seed's fine-tune had about 5,000 pairs for several epochs; Qi et al. and Betley et al.",
    "  saw drift after hundreds to thousands of narrow examples. Run with `--train-pairs` in the thousands and",
    "  `--epochs 2-3` (on a GPU: `accelerate launch`); shares of 1-3% are then tens to a hundred refusal pairs,",
    "  the regime Bianchi et al. measured. At this CPU size the shares were "
    + ", ".join(f"{s['data']['refusal_data'][m]['refusal_pairs']} pairs" for m in mixes) + ".",
    "- **Over-refusal becomes visible in free text.** A larger model that learns the refusal style can generalize it",
    "  to the look-alikes (\"record key events with consent\" read as a keylogger); the look-alike rate and the gap",
    "  are the guard. Expect a larger share to raise both, which is why the study runs two or more shares.",
    "- **More cases.** 40 pairs give wide Wilson intervals (a 10-point change is hard to detect); several samples per",
    "  prompt (`--samples 5`) and a second suite of requests in other wording would tighten them. The propensity's",
    "  openings should also be checked against the model's own refusal style (Gemma's are longer).",
    "- **Unrelated misalignment** (Betley et al.) needs non-coding questions as well; the safety suite is coding-only.",
    "",
]
(ROOT / "docs" / "safety.md").write_text("\n".join(lines))
print(f"wrote docs/safety.md and {len(drawn)} figures under docs/images/")
