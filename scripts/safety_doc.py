"""Write docs/safety.md and its figures from a safety study's summary.json, so no number is typed in.

    tunelens study safety --out runs/safety && python scripts/safety_doc.py runs/safety

`render` is a function of the summary alone (scripts/pages.py regenerates the page from its record under
docs/runs/). A change is called a rise or a fall only where the one reading rule lets it (tunelens.reading:
its sign test, Holm across the table of paired changes); every other sentence is printed under the condition
that makes it true.
"""
import pathlib
import sys

from doc_format import ci, read_summary, record_line
from tunelens.reading import NO_DIFFERENCE, read_table
from tunelens.studies.replicates import first_seed_run, seeds_section
from tunelens.studies.safety_figures import figures

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_figures(s: dict) -> int:
    """The page's figures under docs/images/, drawn from the summary alone; returns how many."""
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    drawn = figures(s)
    for name, png in drawn.items():
        (images / f"safety-{name.replace('_', '-')}.png").write_bytes(png)
    return len(drawn)


def mean(cell):
    return f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}]"


def sign(cell):
    p = "-" if cell.get("sign_p") is None else f"{cell['sign_p']:.2g}"
    return f"{cell['up']} up, {cell['down']} down, p={p}"


def change_readings(changes: list[dict]) -> dict[tuple[str, str, str], object]:
    """Every paired change of the table (model, against, measure), read by the one rule with Holm's correction
    across the whole table; a cell without a sign test (no pairs) is left unread."""
    cells = {(x["model"], x["against"], part): x[part] for x in changes for part in ("harmful", "lookalike", "gap")}
    keys = [key for key, cell in cells.items() if cell.get("sign_p") is not None]
    readings = read_table([(str(key), cells[key]["mean"], cells[key]["sign_p"]) for key in keys],
                          up="raised", down="lowered")
    return dict(zip(keys, readings))


def moved(cell, what, reading):
    """A sentence part that names a direction only where the reading rule claims one."""
    if reading is None or not reading.claimed:
        return f"moved {what} by {mean(cell)} ({sign(cell)}): {NO_DIFFERENCE}"
    return f"{reading.words} {what} by {mean(cell)} ({sign(cell)}, Holm p={reading.p_holm:.2g})"


def baseline_sentence(base_greedy: dict) -> str:
    """What free-text refusal can show, given how often the base model refuses before any fine-tune."""
    said = f"- **Before any fine-tune** the base model refuses {ci(base_greedy)} of the harmful requests greedily"
    if base_greedy["k"] == 0:
        return (said + ": free-text refusal has nothing to lose at this scale, so McNemar on it cannot show a "
                "regression (a drop from 0 is impossible), only a gain.")
    return said + ": a drop after fine-tuning is visible in free text, in the McNemar table above."


def scale_paragraph(model: str, base_greedy: dict) -> list[str]:
    """What this model can and cannot show, from its own baseline refusal rate."""
    if base_greedy["k"] == 0:
        return [
            f"`{model}` refuses {base_greedy['k']} of {base_greedy['n']} harmful requests greedily before any fine-tune.",
            "So the question the case study asked, *does a narrow fine-tune erase refusals the model had?*, cannot be",
            "answered in free text here: there are no refusals to erase, and a refusal rate at 0% has no room to drop.",
            "What this scale can show is the direction of the pressure, in the teacher-forced propensity: whether the",
            "code LoRA pushes refusal openings further down, whether a few refusal pairs pull them back up, and whether",
            "they pull the look-alikes up with them (the over-refusal cost, which the gap measures directly). Whether",
            "that pressure crosses the argmax needs a model that refuses to begin with.",
        ]
    return [
        f"`{model}` refuses {ci(base_greedy)} of the harmful requests greedily before any fine-tune, so free text",
        "can show refusals erased (refused before, answered after: the McNemar table) beside the teacher-forced",
        "propensity, which sees pressure that has not yet crossed the argmax.",
    ]


def render(s: dict, record: str) -> str:
    """The page for the safety study's summary `s`, whose record is at `record`."""
    c, tc, labels, models = s["config"], s["train_config"], s["labels"], s["models"]
    ft, prop = s["free_text"], s["propensity"]

    def change(model, against="base"):
        return next(x for x in prop["changes"] if x["model"] == model and x["against"] == against)

    def test(model, against, decoding, metric):
        return next(t for t in ft["mcnemar"] if (t["model"], t["against"], t["decoding"], t["metric"])
                    == (model, against, decoding, metric))

    decodings = list(ft["rates"][models[0]])
    mixes = [m for m in models if m.startswith("refusal-")]
    base_greedy = ft["rates"]["base"]["greedy"]["refusal"]
    lines = [
        "# Safety after a narrow fine-tune",
        "",
        "The case study asked: *is anyone doing safety regression tests after fine-tuning on narrow positive-only data?*",
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
        + (f" --limit {c['limit']}" if c.get("limit") else "") + f"` ({s['seconds']/60:.1f} min). LoRA "
        f"r={tc['lora_r']}/alpha={tc['lora_alpha']} on {'/'.join(tc['target_modules'])}, batch {c['batch_size']}; "
        f"sampled answers at temperature {c['temperature']}. {s['cases']['harmful']} harmful requests and "
        f"{s['cases']['lookalike']} look-alikes"
        + (f" (the suite's first {c['limit']} harmful requests and their twins, cut to fit the CPU budget; the "
           "command's default is the whole suite)." if c.get("limit") else "."),
        "",
        record_line(s, record),
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
    read = change_readings(prop["changes"])
    lines.append(baseline_sentence(base_greedy))
    lines.append(f"- **The positive-only code LoRA** {moved(code['harmful'], 'refusal log-odds on harmful requests', read.get(('code', 'base', 'harmful')))}; it "
                 f"{moved(code['lookalike'], 'them on look-alikes', read.get(('code', 'base', 'lookalike')))}, and "
                 f"{moved(code['gap'], 'the harmful-minus-twin gap', read.get(('code', 'base', 'gap')))}.")
    for name in mixes:
        x, y = change(name), change(name, "code")
        greedy = ft["rates"][name]["greedy"]
        lines.append(f"- **{labels[name]}**: against the code LoRA it "
                     f"{moved(y['harmful'], 'harmful-request log-odds', read.get((name, 'code', 'harmful')))} and "
                     f"{moved(y['lookalike'], 'look-alike log-odds', read.get((name, 'code', 'lookalike')))} (the over-refusal side), "
                     f"and {moved(y['gap'], 'the gap', read.get((name, 'code', 'gap')))}. Greedy free text: refuses {ci(greedy['refusal'])} of harmful requests "
                     f"(McNemar vs base p={test(name, 'base', 'greedy', 'refusal')['p_value']:.2g}) and "
                     f"{ci(greedy['over_refusal'])} of look-alikes (p={test(name, 'base', 'greedy', 'over_refusal')['p_value']:.2g}).")
    n = s["cases"]["harmful"]
    lines += [
        "",
        f"With {n} twin pairs the smallest possible two-sided sign-test p is {2 / 2 ** n:.2g}; a direction above is "
        "claimed only where the sign test rejects at 0.05 after Holm's correction across the table of paired changes.",
        "",
        "## What only a larger model can show",
        "",
        *scale_paragraph(c['model'], base_greedy),
        "",
        "## At Gemma 4 E2B scale",
        "",
        "- **A real baseline.** An instruction-tuned 2B model refuses most of these requests; the free-text McNemar then",
        "  measures the thing asked (refused before, answered after), and the greedy and sampled rates can differ.",
        "- **Training size.** The case study's fine-tune had about 5,000 pairs for several epochs; Qi et al. and Betley et al.",
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
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    run = pathlib.Path(argv[0] if argv else "runs/safety")
    s = read_summary(run)
    seeds = None
    if "across_seeds" in s:  # --seeds K > 1: the prose from the first seed's run, then every seed's figures
        seeds, run = s, first_seed_run(run, s)
        s = read_summary(run)
    page = render(s, str(run / "summary.json"))
    if seeds:
        page += "\n\n## Across training seeds\n\n" + "\n".join(seeds_section(seeds, ("free_text/", "propensity/")))
    (ROOT / "docs" / "safety.md").write_text(page)
    print(f"wrote docs/safety.md and {write_figures(s)} figures under docs/images/")


if __name__ == "__main__":
    main(sys.argv[1:])
