"""scripts/lessons_doc.py on made-up records that flip each condition of the headline rule: the page says
pending with the commands when no finished record exists, and reads every finished one by the one rule."""

import importlib.util
import pathlib

import pytest

from tunelens.demo import lessons as L
from tunelens.demo.measures import lesson1_table
from tunelens.inspect.levers import LEVER_ROWS, lesson2_table

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def doc():
    spec = importlib.util.spec_from_file_location("lessons_doc", ROOT / "scripts" / "lessons_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gemma(slopes, model="gemma3-270m", planned=None, complete=True):
    planned = len(slopes) if planned is None else planned
    per_seed = [{"seed": i, "per_share": {"A0": {}, "A5": {}, "A15": {}, "A30": {}}} for i in range(len(slopes))]
    return {"protocol_commit": "0123456789abcdef", "lessons": {"1": {
        "role": "1", "model": model, "seeds": list(range(len(slopes))), "seeds_planned": planned,
        "complete": complete, "per_seed": per_seed, "answers_per_adapter": 64, "table": lesson1_table(slopes, []),
        "primary_row": "gemma slope vs 0"}}}


def qwen2(sentence, model="qwen2.5-coder-1.5b", planned=None, complete=True, floor=True):
    planned = len(sentence) if planned is None else planned
    values = {row: [v / 2 for v in sentence] for row, _, _ in LEVER_ROWS}
    values["sentence after the request"] = sentence
    return {"protocol_commit": "0123456789abcdef", "lessons": {"2": {
        "model": model, "seeds": list(range(len(sentence))), "seeds_planned": planned, "complete": complete,
        "case_study": 0.869, "points_per_seed": [40] * len(sentence), "floor_met": floor,
        "primary_row": "sentence after the request", **lesson2_table(values)}}}


UP = [0.9, 1.1, 0.95, 1.05, 1.0, 0.9, 1.1, 0.97, 1.03, 1.0, 0.92, 1.08, 0.99, 1.01]
FLAT = [0.2, -0.2, 0.1, -0.1, 0.3, -0.3, 0.05, -0.05, 0.2, -0.2, 0.1, -0.1, 0.0, 0.0]
DOWN = [-v for v in UP]


def headline_of(page: str, title: str) -> str:
    section = page.split(title, 1)[1].split("\n## ", 1)[0]
    return section.split("**Headline: ", 1)[1].split("**", 1)[0]


def test_no_record_gives_a_pending_page_with_the_commands(doc, tmp_path):
    out = tmp_path / "lessons.md"
    doc.main([str(tmp_path / "none"), str(out)])
    page = out.read_text()
    assert headline_of(page, "Lesson 1:") == "pending" and headline_of(page, "Lesson 2:") == "pending"
    assert "--lesson 1 --seeds 14 --budget-minutes 90" in page and "302 min" in page  # protocol, amendment 1
    assert "--lesson 2 --seeds 4" in page and "339 min" in page
    for title in ("Lesson 3:", "Lesson 4:", "Safety:"):
        assert headline_of(page, title) == "not testable here"
    assert "[" not in page.split("## Lesson 3")[0].split("Records:")[1]  # no interval anywhere: no numbers
    assert page.count("| none yet |") == 2 and "Amendments to docs/protocol.md after a governed run: none." in page


@pytest.mark.parametrize("record, word", [
    (gemma(UP), "replicated"),
    (gemma(FLAT), "not replicated"),
    (gemma(DOWN), "not replicated"),
    (gemma(UP, model="smollm2-135m"), "not testable here"),
    (gemma(UP[:5]), "not testable here"),  # K = 5 is below the protocol's n of 14
    (gemma(UP[:3], planned=14, complete=False), "pending"),
])
def test_lesson1_headline_follows_the_rule(doc, record, word):
    page = doc.render({"lessons-1-gemma": record})
    assert headline_of(page, "Lesson 1:") == word
    if word != "pending":
        assert "gemma slope vs 0" in page and "per-seed values" in page


def test_lesson1_reads_no_direction_and_the_opposite_differently(doc):
    flat, down = doc.render({"a": gemma(FLAT)}), doc.render({"a": gemma(DOWN)})
    assert "claims no direction" in flat and "opposite" in down


def test_lesson1_table_joins_the_two_runs_with_holm_over_three_rows(doc):
    qwen_a30 = {"protocol_commit": "x", "lessons": {"1": {
        "role": "1-qwen", "model": "qwen2.5-coder-1.5b", "seeds": [0, 1], "seeds_planned": 2, "complete": True,
        "per_seed": [], "answers_per_adapter": 64, "table": lesson1_table([], [0.31, 0.35]),
        "primary_row": "Qwen A30 P(Python 2 | prints) vs 0"}}}
    page = doc.render({"lessons-1-gemma": gemma(UP), "lessons-2-qwen": qwen_a30})
    combined = L.lesson1_combined(gemma(UP)["lessons"]["1"], qwen_a30["lessons"]["1"])
    assert [r["seeds"]["k"] for r in combined["table"]] == [14, 14, 2]
    assert headline_of(page, "Lesson 1:") == "replicated"
    assert "Qwen A30 (lessons-2-qwen): 2 seeds" in page and "+0.330 [" in page
    assert "| Qwen A30 P(Python 2 \\| prints) vs 0 |" in page  # the pipe inside the cell is escaped
    assert "| lessons-1-gemma |" in page and "14 of" not in page  # made-up records carry no seeds_done
    assert combined["headlines"]["1-qwen"]["word"] == "not testable here"


@pytest.mark.parametrize("record, word", [
    (qwen2([0.8, 0.9, 1.0, 0.85]), "replicated"),
    (qwen2([0.3, -0.2, 0.1, -0.25]), "not replicated"),
    (qwen2([-0.8, -0.9, -1.0, -0.85]), "not replicated"),
    (qwen2([0.8, 0.9]), "not testable here"),  # K = 2 below n = 4
    (qwen2([0.8, 0.9, 1.0, 0.85], floor=False), "not testable here"),
    (qwen2([0.8, 0.9, 1.0, 0.85], model="gemma3-270m"), "not testable here"),
    (qwen2([0.8], planned=4, complete=False), "pending"),
])
def test_lesson2_headline_follows_the_rule(doc, record, word):
    page = doc.render({"lessons-2-qwen": record})
    assert headline_of(page, "Lesson 2:") == word


def test_lesson2_says_how_it_compares_with_the_case_study(doc):
    page = doc.render({"lessons-2-qwen": qwen2([0.2, 0.25, 0.22, 0.21])})
    assert "smaller than the case study's" in page and "+0.869" in page
    assert "| sentence after the request | +0.220 [" in page and "| 4 | +0.200, +0.250, +0.220, +0.210 |" in page
