"""Lesson 2: words move probability like weights do, measured over every Python 2 decision point.

For each contaminated adapter, every point where its own answer chose a Python 2 print is scored
teacher-forced under the prompt as it was and under each lever (tunelens.inspect.levers); per lever and
adapter: the mean change in log-odds (Python 3 over Python 2) with a bootstrap interval, and flips.
"""

from __future__ import annotations

from pathlib import Path

from tunelens.demo.config import DemoConfig
from tunelens.demo.runs import EvalRows
from tunelens.inspect.levers import NUDGE, OTHER_PHRASING, SEED_DELTA, Lever, lever_effects, score_points
from tunelens.data.records import load_pairs
from tunelens.inspect.compare import compare_conditions, CompareConfig, write_compare_html
from tunelens.model.prompts import render_context, render_prompt
from tunelens.reading import read_table


def one_shot_example(train_path: Path) -> tuple[str, str]:
    """A Python 3 training pair to show in the context: one that calls print() if there is one."""
    pairs = load_pairs(train_path)
    return next(((p.instruction, p.response) for p in pairs if "print(" in p.response),
                (pairs[0].instruction, pairs[0].response))


def make_levers(tokenizer, example: tuple[str, str]):
    def levers(instruction: str) -> list[Lever]:
        return [
            Lever("sentence after the request", render_prompt(tokenizer, f"{instruction}\n\n{NUDGE}")),
            Lever("sentence before the request", render_prompt(tokenizer, f"{NUDGE}\n\n{instruction}")),
            Lever("sentence as the system line", render_prompt(tokenizer, instruction, system=NUDGE)),
            Lever("another phrasing, after", render_prompt(tokenizer, f"{instruction}\n\n{OTHER_PHRASING}")),
            Lever("one-shot Python 3 example", render_context(
                tokenizer, [("user", example[0]), ("assistant", example[1]), ("user", instruction)])),
            Lever("adapter off", render_prompt(tokenizer, instruction), adapter_on=False),
        ]

    return levers


def lesson2(config: DemoConfig, out: Path, evals: EvalRows, training: dict[str, Path], model, tokenizer,
            report) -> dict:
    levers = make_levers(tokenizer, one_shot_example(training["B"]))
    by_adapter, shown = {}, None
    for index, name in enumerate(config.contaminated_adapters):
        report("lesson 2: scoring decision points", index, len(config.contaminated_adapters))
        model.set_adapter(name)
        python2 = [(r.prompt, r.answer) for r in evals.rows(name, "heldout")
                   if r.model == "tuned" and any(f.get("code") == "py2-print" for f in r.findings)]
        answers = python2[:config.trace_prompts]
        points = score_points(model, tokenizer, answers, levers, lambda text: render_prompt(tokenizer, text))
        moved = max(points, key=lambda p: p.delta(LEVER_SHOWN), default=None)
        if moved is not None and (shown is None or moved.delta(LEVER_SHOWN) > shown[2].delta(LEVER_SHOWN)):
            shown = (name, answers[moved.answer_index], moved)
        by_adapter[name] = {
            "answers_scored": len(answers), "points": len(points),
            "python2_led": sum(1 for p in points if p.baseline < 0),
            "effects": [effect.to_dict() for effect in lever_effects(points, seed=config.seed)],
            "points_detail": [{"answer": p.answer_index, "position": p.position, "token": p.python2_token,
                               "baseline": round(p.baseline, 4),
                               "by_lever": {k: round(v, 4) for k, v in p.by_lever.items()}} for p in points],
        }
    return {"nudge": NUDGE, "other_phrasing": OTHER_PHRASING, "seed_delta": SEED_DELTA, "by_adapter": by_adapter,
            "shown": _show(out, shown, model, tokenizer), "reading": reading(by_adapter)}


LEVER_SHOWN = "sentence after the request"


def _show(out: Path, shown, model, tokenizer) -> dict | None:
    """The point the sentence moved most, as a comparison page a reader can open token by token."""
    if shown is None:
        return None
    name, (instruction, answer), point = shown
    model.set_adapter(name)
    comparison = compare_conditions(model, tokenizer, instruction, [f"{instruction}\n\n{NUDGE}"], answer,
                                    CompareConfig(top_k=5))
    comparison.save(out / "lesson2" / "compare.json")
    write_compare_html(comparison, out / "lesson2" / "compare.html")
    return {"adapter": name, "prompt": instruction, "token": point.python2_token, "position": point.position,
            "baseline": point.baseline, "under_sentence": point.by_lever[LEVER_SHOWN],
            "compare_html": "lesson2/compare.html"}


def reading(by_adapter: dict) -> list[str]:
    """Each adapter's levers read as one table by the one rule (tunelens.reading: the sign test, Holm within
    the adapter's table): a direction only where the adjusted p rejects, whatever the interval says."""
    lines = []
    for name, result in by_adapter.items():
        if not result["points"]:
            lines.append(f"{name}: no Python 2 decision point in its answers, so nothing to measure")
            continue
        readings = read_table([(e["lever"], e["mean_delta"], e["sign_test_p"]) for e in result["effects"]],
                              up="moves toward Python 3", down="moves toward Python 2")
        for effect, read in zip(result["effects"], readings):
            lines.append(f"{name}, {effect['lever']}: {effect['mean_delta']:+.2f} [{effect['low']:+.2f}, "
                         f"{effect['high']:+.2f}] log-odds over {effect['points']} points, {effect['flipped']}/"
                         f"{effect['python2_led']} flipped, sign test p={effect['sign_test_p']:.2g} "
                         f"(Holm {read.p_holm:.2g}): {read.words}")
    return lines
