"""Write docs/few-shot-study.md and its figures from a few-shot study's summary.json, so no number is typed in.

    tunelens study few-shot --out runs/fewshot && python scripts/fewshot_doc.py runs/fewshot
    python scripts/fewshot_doc.py runs/fewshot runs/fewshot-B   # and a run on a model that answers bare prompts

`render` is a function of the runs' summaries (and their answers.jsonl) alone: scripts/pages.py regenerates
the page from the records under docs/runs/, and every direction it states is the one reading rule's
(tunelens.reading: the sign test, Holm within each table).
"""
import json
import pathlib
import sys

from doc_format import ci, read_summary, record_line
from tunelens.reading import NO_DIFFERENCE as NO_DIFFERENCE_WORDS, read_one, read_table
from tunelens.studies.fewshot_report import figures
from tunelens.studies.replicates import first_seed_run, seeds_section

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_figures(s: dict) -> int:
    """The page's figures under docs/images/, drawn from the summary alone; returns how many."""
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    drawn = figures(s)
    for name, png in drawn.items():
        (images / f"fewshot-{name}.png").write_bytes(png)
    return len(drawn)


def runs_took(summary) -> str:
    """The run's time; a resumed run directory lists every invocation (the later ones reuse answers)."""
    runs = summary.get("invocations") or [{"seconds": summary["seconds"]}]
    if len(runs) == 1:
        return f"{runs[0]['seconds'] / 60:.1f} min"
    return "invocations of " + ", ".join(f"{r['seconds'] / 60:.1f}" for r in runs) + " min (resumed)"



def mean(e):
    return f"{e['mean_delta']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}]"


def table_readings(effects: list[dict]):
    """One teacher-forced table's rows read by the one rule: sign test, Holm across the table's levers."""
    return read_table([(e["lever"], e["mean_delta"], e["sign_test_p"]) for e in effects],
                      up="toward Python 3", down="toward Python 2")


def follows_sentence(s: dict) -> str:
    """How closely this model follows a one-shot example, said only as far as its figures go: the nearest
    Python 2 example's teacher-forced shift (the one rule on its sign test) and its free-text Python 2 rate."""
    shift = _effect(s, "nearest Python 2 example")
    copied = s["conditions"]["nearest/python2"]["with"]["python2"]
    reading = read_one(shift["lever"], shift["mean_delta"], shift["sign_test_p"], up="toward Python 3",
                       down="toward Python 2")
    figures_said = (f"a nearest Python 2 example moves the log-odds by {mean(shift)} (sign test p="
                    f"{shift['sign_test_p']:.2g}, {shift['python2_now']} of {shift['points']} points turned to Python "
                    f"2) and {ci(copied)} of its answers with it are Python 2")
    if reading.direction != "down":
        return (f"On `{s['model']}` the example's pull toward Python 2 is {NO_DIFFERENCE_WORDS}: {figures_said}.")
    if copied["rate"] is not None and copied["low"] >= 0.5:
        return f"`{s['model']}` follows a one-shot example closely: {figures_said}."
    return (f"`{s['model']}` follows a one-shot example at the decision point but not in most free-text answers: "
            f"{figures_said}.")


def auroc(value):
    return "-" if value is None else f"{value:.2f}"


def check_lines(summary) -> list[str]:
    """The context check's AUROCs and false alarms of one run as bullets, and its flag rate per condition."""
    check = summary["context_check"]
    bad, broad = check["labels"]["bad"], check["labels"]["bad_or_missed_function"]
    return [
        f"- **AUROC for \"this example made the answer bad\"**: {auroc(bad['auroc'])} ({bad['positives']} examples made it "
        f"bad, {bad['negatives']} did not; {bad['excluded_bad_alone']} left out because the prompt was bad alone). By "
        "reason: " + ", ".join(f"{k} {auroc(v)}" for k, v in bad["auroc_by_signal"].items()) + ". Flagged "
        f"{ci(bad['detected'])} of the examples that made the answer bad.",
        f"- **Counting a missed function as bad too**: AUROC {auroc(broad['auroc'])} ({broad['positives']} positives, "
        f"{broad['negatives']} negatives); flagged {ci(broad['detected'])} of the positives.",
        *[f"- **{title}**: AUROC {auroc(label['auroc'])} ({label['positives']} positives, {label['negatives']} "
          "negatives; by reason: " + ", ".join(f"{k} {auroc(v)}" for k, v in label["auroc_by_signal"].items()) +
          f"); flagged {ci(label['detected'])} of the positives."
          for title, label in (("The answer copied the example's defect", check["labels"].get("copied_defect")),
                               ("The answer with the example is bad (whatever it was alone)",
                                check["labels"].get("bad_with_example"))) if label],
        f"- **False alarms on clean, nearest examples**: {ci(check['false_alarm_nearest_clean'])} (target at most 5%).",
        "",
        "| example | flagged |", "|---|---|",
        *[f"| {level} {summary['quality_labels'][quality]} | "
          f"{ci(check['flagged_by_condition'][f'{level}/{quality}'])} |"
          for level in summary["levels"] for quality in summary["qualities"]],
    ]


def study_command(config, run_dir: pathlib.Path) -> str:
    """The `tunelens study few-shot` line that makes a run like `run_dir`'s, paths as typed from the
    directory that holds runs/."""
    root = run_dir.resolve().parent.parent
    adapter = pathlib.Path(config["adapter"]).resolve() if config.get("adapter") else None
    shown = adapter.relative_to(root) if adapter and adapter.is_relative_to(root) else adapter
    return (f"tunelens study few-shot --out {run_dir.resolve().relative_to(root)} --model {config['model']}"
            + (f" --adapter {shown}" if shown else "")
            + (f" --sources {','.join(config['sources'])}" if list(config["sources"]) != ["stdlib"] else "")
            + f" --pool {config['pool']} --heldout {config['heldout']} --max-new-tokens {config['max_new_tokens']}"
            + f" --trace-answers {config['trace_answers']}")


def _effect(summary, lever: str):
    return next(e for e in summary["teacher_forced"]["reference"]["effects"] if e["lever"] == lever)


def answers_with_print(run_dir: pathlib.Path) -> tuple[int, int]:
    """(answers that contain `print`, answers) in a run's answers.jsonl: where a print decision was reached."""
    rows = [json.loads(line) for line in (run_dir / "answers.jsonl").read_text().splitlines() if line.strip()]
    return sum("print" in row["answer"] for row in rows), len(rows)


def reading_lines(s, run: pathlib.Path, t, run_dir: pathlib.Path) -> list[str]:
    """What the answering run `t` adds, each figure from its summary (and answers) and the base run's `s`;
    each bullet's heading says only what its figures show."""
    made_bad = t["context_check"]["labels"]["bad"]
    shift, base_shift = _effect(t, "nearest Python 2 example"), _effect(s, "nearest Python 2 example")
    sentence = _effect(t, t["teacher_forced"]["sentence_lever"])
    printed, answers = answers_with_print(run_dir)
    base_printed, base_answers = answers_with_print(run)
    copied = t["conditions"]["nearest/python2"]["with"]["python2"]
    decided = read_one(shift["lever"], shift["mean_delta"], shift["sign_test_p"]).direction == "down"
    cases = made_bad["positives"] + made_bad["negatives"]
    return [
        "Reading this run:",
        f"- **{'No Python 2 copied' if copied['k'] == 0 else 'Python 2 copied'} in free text**: {ci(copied)} of the"
        " tuned model's answers with the nearest Python 2 example are Python 2, against"
        f" {ci(s['conditions']['nearest/python2']['with']['python2'])} for the base model above;"
        f" {printed} of its {answers} answers contain `print` at all (base model: {base_printed} of {base_answers}).",
        f"- **Where a print is reached, {'the example still decides it' if decided else NO_DIFFERENCE_WORDS}**:"
        f" teacher-forced at the prints of the reference answers, a nearest Python 2 example moves the log-odds by"
        f" {mean(shift)} (sign test p={shift['sign_test_p']:.2g}) and turns {shift['python2_now']} of"
        f" {shift['points']} points to Python 2 (base model: {mean(base_shift)}, {base_shift['python2_now']} of"
        f" {base_shift['points']}); the instruction sentence moves them by {mean(sentence)}.",
        f"- **Examples made {made_bad['positives']} of {cases} answers bad** ((example, prompt) cases that were fine"
        f" alone). The check's reasons describe the example (lint, distance from the query), not whether this model"
        f" will follow it; its AUROC for these cases is {auroc(made_bad['auroc'])}.",
    ]


def answering_run_lines(s, run: pathlib.Path, run_dir: pathlib.Path) -> list[str]:
    """A second run, on a model that answers bare prompts well, so "this example made the answer bad" has
    positives: its command, correctness and copying per condition, and the check's figures."""
    t = read_summary(run_dir)
    tc, tconds = t["config"], t["conditions"]
    who = f"{tc['model']} with the adapter {pathlib.Path(tc['adapter']).name}" if tc.get("adapter") else tc["model"]
    out = [
        "", f"### The same study on a model that answers bare prompts: {who}", "",
        "The run above cannot measure \"this example made the answer bad\": the base model's bare answers are all bad",
        "already. This run repeats the study on the same prompts and examples with a model that writes a usable",
        f"function for most bare prompts. Command: `{study_command(tc, run_dir)}` ({runs_took(t)}). Without any example its",
        f"answers are bad in {ci(t['baseline']['bad'])} of the prompts and Python 2 in {ci(t['baseline']['python2'])}.",
        "", "| example | Python 2 | copied name | copied body | bad | alone | McNemar p (bad) |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in t["levels"]:
        for quality in t["qualities"]:
            x = tconds[f"{level}/{quality}"]
            w, wo = x["with"], x["without"]
            out.append(f"| {level} {t['quality_labels'][quality]} | {ci(w['python2'])} | {ci(w['name_copied'])} | "
                       f"{ci(w['body_copied'])} | {ci(w['bad'])} | {ci(wo['bad'])} | {x['mcnemar']['bad']['p_value']:.2g} |")
    return out + ["", record_line(t, str(run_dir / "summary.json")), "", *reading_lines(s, run, t, run_dir), "",
                  "The context check on this run's cases:", "", *check_lines(t)]

def render(run: pathlib.Path, second: pathlib.Path | None = None) -> str:
    """The page from the run directory (or record) `run`, and `second`, a run on a model that answers bare
    prompts, when given."""
    s = read_summary(run)
    c, levels, qualities, qlabels = s["config"], s["levels"], s["qualities"], s["quality_labels"]
    conds, tf = s["conditions"], s["teacher_forced"]
    command = study_command(c, run)
    lines = [
        "# Examples in the context: are they copied when they don't match?",
        "",
        "The case study asked: *when you inject \"good example\" retrievals into the prompt, does the model just follow them",
        "even when the user query doesn't quite match?*, and *what's the right way to detect context the model",
        "shouldn't trust before generation, not after?* Min et al. (2022) found that demonstrations teach format more",
        "than correctness; ClashEval (2024) found that models adopt wrong retrieved content over their own correct",
        "prior more than 60% of the time, more often when their own confidence is low. `tunelens study few-shot`",
        "measures this for any model with the real stages, and `tunelens context check` is the check before generation.",
        "",
        "## Method",
        "",
        "1. **Data.** A pool is mined from real code (`data mine`). `draw_pairs` draws an example pool and held-out",
        "   prompts, one per module, from modules that give no example, so no prompt (or a sibling function of it) is",
        "   an example. Every pair is short enough for the CPU budget, clean Python 3, and defines a function.",
        "2. **One example per prompt, at controlled similarity and quality.** Similarity is the rank of the example's",
        "   instruction in the pool by cosine similarity to the prompt (all-MiniLM-L6-v2): **nearest** (rank 1),",
        "   **middling** (the median rank) and **unrelated** (the last rank). Quality: **clean** (the pair as mined);",
        "   **Python 2** (the same pair with its prints made Python 2 statements, by `data contaminate`'s rewrite; a",
        "   `print \"...\"` is added where it has none); **wrong function** (the response of another pool pair, the one",
        "   least similar to both the example and the prompt, shown under the example's instruction). Each example is",
        "   one user and one assistant turn before the request, in the model's own chat format (`tunelens.retrieval.fewshot`).",
        "   With the prompt alone (the baseline) that is 10 prompts per held-out one, answered greedily in wide batches.",
        "3. **Copying**, per answer, against the example it was shown (and, for comparison, on the same prompt's",
        "   answer without an example, against the same example):",
        "   - *Python 2*: the answer's code has a Python 2 idiom (the eval's check);",
        "   - *copied name*: the answer defines a function named like the example's, when that name is not the one the",
        "     prompt asks for;",
        "   - *copied body*: at least half of the example's distinctive body lines appear verbatim (stripped) in the",
        "     answer. Distinctive: at least 8 characters, not a `def` or decorator line, not inside a docstring, and",
        "     not a line of the prompt's own reference answer (which the model could write without the example).",
        "     Undefined when the example has fewer than 2 such lines.",
        "4. **Correctness**: the eval's one definition of a bad output (`scoring.bad_output`: no code, code that does",
        "   not parse, or Python 2; mined prompts have no tests), against the baseline with exact McNemar on the same",
        "   prompts. *Missed function* (the answer defines no function with the asked name) is reported beside it.",
        "5. **Teacher-forced**, lesson 2's measure (`tunelens.inspect.levers`): at each Python 2 print of an answer, the",
        "   log-odds of a call `print(` over the Python 2 token, with the answer's tokens forced, under the prompt alone",
        "   and under each of the nine examples and lesson 2's sentence (\"" + tf["nudge"] + "\" after the request):",
        "   words in the prompt and examples in the context on one scale. Answers scored: every prompt's reference",
        "   answer made Python 2 (so every prompt has points, whatever the model wrote), and up to",
        f"   {c['trace_answers']} generated answers that wrote a Python 2 print.",
        "6. **The context check** (`tunelens context check`, `tunelens.inspect.context_check.check_context`) scores each",
        "   example before generation from four reasons, each a risk in [0, 1]: *lint* (the example's code does not",
        "   parse or has Python 2 idioms: 1); *off query* (cosine of its instruction to the query: 1 at or below 0.1,",
        "   0 at or above 0.3, linear between); *mismatch* (its response never mentions the function its instruction",
        "   names: 1; else the share of named arguments missing); *unfamiliar* (with a gate: its instruction's",
        "   similarity to the nearest training instruction, on the same ramp). The risk is the largest reason; the",
        "   context is flagged at 0.5. The similarity ramp was set from the pool's similarity distribution (nearest",
        "   examples sit at 0.4-0.7, median-rank ones at 0.1-0.3), never from answers. Its AUROC is for predicting",
        "   *this example made the answer bad*: bad with the example, among prompts answered fine without one",
        "   (prompts already bad alone cannot be made bad and are left out, and counted). The false-alarm rate is",
        "   the share of clean, nearest examples it flags (target at most 5%).",
        "",
        "```",
        "tunelens study few-shot --out runs/fewshot     # its record says how long it took, and where",
        "python scripts/fewshot_doc.py runs/fewshot     # this page and its figures, from runs/fewshot/summary.json",
        "tunelens study few-shot --out runs/fewshot-B --adapter runs/study/adapters/B   # a model that answers bare prompts",
        "python scripts/fewshot_doc.py runs/fewshot runs/fewshot-B   # the page with both runs",
        "tunelens context check --query 'Parse an ISO date.' --examples shots.jsonl [--gate runs/gate]",
        "```",
        "",
        f"## The run on `{s['model']}`",
        "",
        record_line(s, str(run / "summary.json")),
        "",
        f"Command: `{command}` ({runs_took(s)}). {s['prompts']} held-out prompts, a",
        f"pool of {s['data']['pool']} examples (of {s['data']['mined_total']} mined pairs), greedy answers of at most",
        f"{c['max_new_tokens']} tokens. Without any example the model's answers are bad in {ci(s['baseline']['bad'])}",
        f"of the prompts and Python 2 in {ci(s['baseline']['python2'])}.",
        "",
        "### Copying and correctness by similarity and quality (95% Wilson; \"alone\" = same prompts, no example)",
        "",
        "| example | mean cosine | Python 2 | alone | copied name | alone | copied body | alone | bad | alone | McNemar p (bad) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        for quality in qualities:
            x = conds[f"{level}/{quality}"]
            w, wo = x["with"], x["without"]
            lines.append(f"| {level} {qlabels[quality]} | {x['similarity']['mean']:.2f} | {ci(w['python2'])} | "
                         f"{ci(wo['python2'])} | {ci(w['name_copied'])} | {ci(wo['name_copied'])} | {ci(w['body_copied'])} | "
                         f"{ci(wo['body_copied'])} | {ci(w['bad'])} | {ci(wo['bad'])} | {x['mcnemar']['bad']['p_value']:.2g} |")
    lines += ["", "![copying against similarity](images/fewshot-copying.png)", "",
              "### Teacher-forced: examples and words on one scale", "",
              "Change in log-odds (Python 3 call over the Python 2 token) against the prompt alone; mean with a 95% "
              "paired bootstrap interval; flipped = points where Python 2 led alone and Python 3 leads with the lever; "
              "to Python 2 = the reverse.", ""]
    for source in ("reference", "generated"):
        found = tf.get(source, {})
        if not found.get("points"):
            lines += [f"*{source} answers*: no decision point to score.", ""]
            continue
        lines += [f"**{source} answers** ({found['points']} points in {found['answers']} answers)", "",
                  "| lever | mean change | flipped | to Python 2 | sign test p | Holm p | reading |",
                  "|---|---|---|---|---|---|---|"]
        for e, reading in zip(found["effects"], table_readings(found["effects"])):
            lines.append(f"| {e['lever']} | {mean(e)} | {e['flipped']}/{e['python2_led']} | {e['python2_now']} | "
                         f"{e['sign_test_p']:.2g} | {reading.p_holm:.2g} | {reading.words} |")
        lines.append("")
    lines += ["![lever effects](images/fewshot-levers.png)", "", "### The context check", ""]
    lines += check_lines(s)
    lines += answering_run_lines(s, run, second) if second else []
    lines += [
        "",
        "Reading the check: lint is exact for the Python 2 examples and the off-query ramp flags every unrelated",
        "example by construction, so the flag rates above show the rule, not a discovery. What the run measures is",
        "whether the flagged contexts are the ones that hurt (the AUROC), and whether trusted, well-matched context",
        "passes (the false-alarm rate). A context that the check flags but that did not hurt this model is not wasted:",
        "it is context a larger model, which follows its context more closely, would copy.",
        "",
        "## At Gemma 4 E2B scale",
        "",
        f"- **Stronger in-context learning.** {follows_sentence(s)} Instruction-tuned",
        "  2B models are expected to follow the format, names and style of in-context examples more closely (the case study's",
        "  fine-tune was trained on single-turn pairs, so a retrieved example is also a distribution shift). Expect",
        "  higher copy rates at every similarity, and the Python 2 copy rate to stay high even for unrelated examples,",
        "  the ClashEval pattern: context wins where the model's own prior is weak.",
        "- **Teacher-forced first.** The log-odds shift is the measure with power at this scale; at 2B the free-text",
        "  rates become informative too. Compare the example levers with the sentence on the same points: lesson 2's",
        "  question (which lever moves the decision) then has an answer for retrieval as well as for wording.",
        "- **More and longer examples.** `--few-shot K` retrieves K examples; at K = 3-5 one bad example among good",
        "  ones is the realistic case, and whether the model copies the outlier is the next experiment.",
        "- **Correctness with tests.** Mined prompts have no tests, so \"bad\" here is syntax and Python 2 only;",
        "  with the code suite or HumanEval prompts (which have tests) a wrong-function example's harm is measurable",
        "  as failed tests, not only as a missed function name.",
        "- **The check's thresholds** should be re-read from the new pool's similarity distribution (a larger",
        "  embedder or a different domain moves cosines), and the combined risk could be calibrated on outcomes as",
        "  the gate is (`gate calibrate --outcomes`), once there are enough contexts that really hurt.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    run = pathlib.Path(argv[0] if argv else "runs/fewshot")
    second = pathlib.Path(argv[1]) if len(argv) > 1 else None
    seeds = read_summary(run) if (run / "summary.json").is_file() else {}
    if "across_seeds" in seeds:  # --seeds K > 1: the prose from the first seed's run, then every seed's figures
        run = first_seed_run(run, seeds)
    page = render(run, second)
    if "across_seeds" in seeds:
        page += "\n\n## Across seeds\n\n" + "\n".join(seeds_section(seeds, ("baseline/", "conditions/")))
    (ROOT / "docs" / "few-shot-study.md").write_text(page)
    print(f"wrote docs/few-shot-study.md and {write_figures(read_summary(run))} figures under docs/images/")


if __name__ == "__main__":
    main(sys.argv[1:])
