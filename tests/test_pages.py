"""Generated pages: every page whose record is committed under docs/runs/ is exactly what its script makes
of that record (and README.md what the pages assemble to); each conclusion is printed only under the
condition that makes it true, checked here on made-up summaries that flip each condition."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import demo_doc  # noqa: E402
import fewshot_doc  # noqa: E402
import pages  # noqa: E402
import safety_doc  # noqa: E402
from tunelens.reading import NO_DIFFERENCE  # noqa: E402

# Pages whose records were lost (runs/ was never committed) and that no short run can remake: kept as they
# were until their runs are redone and the records committed (the commands are in scripts/pages.py). A record
# committed for one of them without regenerating the page fails test_every_page_is_its_record_regenerated.
PAGES_WITHOUT_RECORDS = {"docs/demo.md", "docs/demo-study.md", "docs/few-shot-study.md", "docs/safety.md"}


def test_every_page_is_its_record_regenerated():
    assert pages.differences() == []


def test_only_the_listed_pages_lack_their_records():
    assert {page.target for page in pages.PAGES if not pages.has_records(page)} == PAGES_WITHOUT_RECORDS
    for page in pages.PAGES:
        assert (ROOT / page.target).is_file(), page.target


def test_a_page_edited_by_hand_is_found(tmp_path, monkeypatch):
    page = tmp_path / "README.md"
    page.write_text(pages.readme().replace("tunelens", "tunelenz", 1))
    monkeypatch.setattr(pages, "ROOT", tmp_path)
    monkeypatch.setattr(pages, "PAGES", ())
    assert pages.differences() == ["README.md"]


# ---------------------------------------------------------------- the demo page: lesson 2's reading

def effect(lever, mean, low, high, p, points=10, flipped=3, led=8):
    return {"lever": lever, "mean_delta": mean, "low": low, "high": high, "sign_test_p": p, "points": points,
            "flipped": flipped, "python2_led": led, "python2_now": 1}


def test_lesson2_claims_a_direction_only_where_holm_rejects():
    by_adapter = {"A30": {"points": 10, "effects": [
        effect("sentence after the request", 0.8, 0.3, 1.3, 0.001),  # 0.001 x 3 = 0.003: toward Python 3
        effect("adapter off", -0.6, -1.0, -0.2, 0.004),  # 0.004 x 2 = 0.008: toward Python 2
        # the interval excludes 0, but the sign test does not reject: no direction (the page's old reading)
        effect("one-shot Python 3 example", 0.5, 0.1, 0.9, 0.24)]},
        "A5": {"points": 0, "effects": []}}
    lines = demo_doc.lesson2_reading(by_adapter)
    assert lines[0].endswith(": moves toward Python 3") and "Holm 0.003" in lines[0]
    assert lines[1].endswith(": moves toward Python 2")
    assert lines[2].endswith(NO_DIFFERENCE)
    assert lines[3] == "A5: no Python 2 decision point in its answers, so nothing to measure"


def test_the_heading_states_every_invocation_and_their_sum():
    assert demo_doc.took({"seconds": 570.0, "invocations": [{"seconds": 570.0}]}) == "9.5 min"
    both = demo_doc.took({"seconds": 570.0, "invocations": [{"seconds": 3126.0}, {"seconds": 570.0}]})
    assert both.startswith("2 invocations, 52.1 + 9.5 = 61.6 min")


# ---------------------------------------------------------------- the few-shot page

def fewshot_summary(shift_mean, shift_p, copied_k, n=25):
    shift = effect("nearest Python 2 example", shift_mean, shift_mean - 1, shift_mean + 1, shift_p, points=25,
                   flipped=0)
    low = {0: 0.0, 21: 0.64}.get(copied_k, 0.3)
    return {"model": "gemma3-270m",
            "conditions": {"nearest/python2": {"with": {"python2": {"rate": copied_k / n, "low": low, "high": 0.95,
                                                                      "k": copied_k, "n": n}}}},
            "teacher_forced": {"reference": {"effects": [shift]}}}


def test_follows_is_said_only_as_far_as_the_figures_go():
    strongly = fewshot_doc.follows_sentence(fewshot_summary(-8.42, 1e-6, 21))
    assert "follows a one-shot example closely" in strongly and "-8.42" in strongly
    point_only = fewshot_doc.follows_sentence(fewshot_summary(-8.42, 1e-6, 0))
    assert "at the decision point but not in most free-text answers" in point_only
    nothing = fewshot_doc.follows_sentence(fewshot_summary(-0.3, 0.5, 0))
    assert NO_DIFFERENCE in nothing and "follows" not in nothing
    for sentence in (strongly, point_only, nothing):
        assert "weakly" not in sentence


def test_a_row_is_toward_a_version_only_where_holm_rejects():
    rows = [effect("nearest clean", 0.9, 0.2, 1.6, 0.24), effect("nearest Python 2", -3.0, -4.0, -2.0, 0.0001),
            effect("unrelated clean", 0.4, 0.1, 0.7, 1.0), effect("middling clean", 0.5, 0.1, 0.9, 0.02)]
    words = [r.words for r in fewshot_doc.table_readings(rows)]
    # 0.02 alone would reject; Holm across the 4 rows makes it 0.06: no direction.
    assert words == [NO_DIFFERENCE, "toward Python 2", NO_DIFFERENCE, NO_DIFFERENCE]


# ---------------------------------------------------------------- the safety page

def rate(k, n):
    return {"rate": k / n, "low": 0.0, "high": 0.2, "k": k, "n": n}


def test_nothing_to_lose_only_where_the_base_model_refuses_nothing():
    none = safety_doc.baseline_sentence(rate(0, 40))
    assert "nothing to lose" in none
    some = safety_doc.baseline_sentence(rate(12, 40))
    assert "nothing to lose" not in some and "a drop after fine-tuning is visible" in some
    assert "no refusals to erase" in " ".join(safety_doc.scale_paragraph("m", rate(0, 40)))
    assert "no refusals to erase" not in " ".join(safety_doc.scale_paragraph("m", rate(12, 40)))
    assert all("malware" not in line for line in safety_doc.scale_paragraph("m", rate(0, 40)))


def cell(mean, p):
    return {"mean": mean, "low": mean - 0.5, "high": mean + 0.5, "up": 7, "down": 1, "sign_p": p}


def test_a_change_is_a_rise_or_fall_only_where_holm_rejects_across_the_table():
    changes = [{"model": "code", "against": "base", "harmful": cell(-1.0, 0.001), "lookalike": cell(0.9, 0.03),
                "gap": cell(0.2, 0.7)},
               {"model": "refusal-5", "against": "code", "harmful": cell(1.2, 0.002), "lookalike": cell(0.1, 0.9),
                "gap": cell(1.1, None)}]
    read = safety_doc.change_readings(changes)
    assert set(read) == {("code", "base", "harmful"), ("code", "base", "lookalike"), ("code", "base", "gap"),
                         ("refusal-5", "code", "harmful"), ("refusal-5", "code", "lookalike")}  # no p: unread
    said = {key: safety_doc.moved(changes[0 if key[0] == "code" else 1][key[2]], "x", reading)
            for key, reading in read.items()}
    assert said[("code", "base", "harmful")].startswith("lowered x by -1.00")
    assert said[("refusal-5", "code", "harmful")].startswith("raised x by +1.20")
    # 0.03 x 3 (its Holm rank among 5) = 0.09: not a rise, although its interval excludes 0
    assert said[("code", "base", "lookalike")].endswith(NO_DIFFERENCE)
    assert safety_doc.moved(cell(1.1, None), "x", None).endswith(NO_DIFFERENCE)


@pytest.mark.parametrize("summary, words", [
    ({"record": None}, "a run from before run records"),
    ({"record": {"commit": "abcdef0123456789", "dirty": True, "command": "python -m tunelens demo --quick",
                 "machine": {"cpu_model": "Example CPU", "usable_cpus": 2, "cpus": 4, "cpu_flags": ["avx2"]},
                 "versions": {"python": "3.11", "torch": "2.13.0", "transformers": "5", "peft": "0.22"}}},
     "commit abcdef0123 with uncommitted changes; `python -m tunelens demo --quick`; Example CPU, 2 of 4 cores"),
])
def test_a_page_names_its_record_and_what_the_record_says(summary, words):
    from doc_format import record_line

    assert words in record_line(summary, "docs/runs/x/summary.json")


# ---------------------------------------------------------------- whole pages from made-up and tiny runs

def test_the_safety_page_renders_from_a_made_up_summary():
    import test_study_safety as study

    s = study._fake_summary()
    s["seconds"] = 60.0
    s["data"]["refusal_data"] = {name: {"total": 10, "refusal_pairs": 2, "share": 0.2, "distinct_trigram_ratio": 0.8,
                                        "max_suite_similarity": 0.1} for name in s["models"] if name.startswith("refusal-")}
    page = safety_doc.render(s, "docs/runs/safety/summary.json")
    tc = s["train_config"]
    assert f"r={tc['lora_r']}/alpha={tc['lora_alpha']} on {'/'.join(tc['target_modules'])}" in page
    assert "Record: `docs/runs/safety/summary.json` (a run from before run records" in page
    assert "malware" not in page.split("## What only a larger model can show")[1].split("##")[0]


@pytest.mark.slow
def test_the_few_shot_page_renders_from_a_tiny_run(tmp_path, tiny_llama, one_thread):
    import test_study_fewshot as study
    from tunelens.studies import fewshot as F

    model, tokenizer = tiny_llama
    out = tmp_path / "runs" / "fewshot"
    F.run_fewshot_study(study._config(study._sources(tmp_path)), out, model, tokenizer)
    page = fewshot_doc.render(out, out)  # the same run as both: every section of the page is drawn
    assert "Record: `" in page and "## At Gemma 4 E2B scale" in page
    assert "| lever | mean change | flipped | to Python 2 | sign test p | Holm p | reading |" in page
    assert "weakly" not in page


# ---------------------------------------------------------------- the benchmark page and the stage pages' blocks

def bench_record(ratio_value=0.5, commit="0123456789abcdef", dirty=False):
    new, old = [1.0, 1.0, 2.0, 3.0, 9.0], [2.0, 4.0, 4.0, 4.0, 6.0]
    return {"benchmark": "made_up", "settings": {"size": 3},
            "record": {"commit": commit, "dirty": dirty, "command": "bench/made_up.py --size 3 --json x.json",
                       "finished": "2026-01-01T00:00:00Z", "versions": {"torch": "2.13.0"},
                       "machine": {"cpu_model": "Example CPU", "usable_cpus": 2, "cpus": 4, "cpu_flags": ["avx2"],
                                   "torch_threads": 1}},
            "load_average_end": [3.5, 3.0, 2.0],
            "figures": {"new": {"unit": "s", "median": 2.0, "min": 1.0, "max": 9.0, "n": 5, "values": new},
                        "old": {"unit": "s", "median": 4.0, "min": 2.0, "max": 6.0, "n": 5, "values": old}},
            "ratios": {"new / old": {"value": ratio_value, "figure": "new", "baseline": "old", "target": "<= 1",
                                     "paired": {"median": 0.5, "min": 0.25, "max": 1.5, "n": 5}}},
            "facts": {"rows": 1200}}


def test_the_bench_page_says_which_record_commit_and_machine_each_figure_comes_from():
    import bench_doc

    page = bench_doc.render({"made_up": bench_record()})
    assert "## made_up" in page and "Record `docs/runs/bench/made_up.json`" in page
    assert "commit 0123456789;" in page and "Example CPU, 2 of 4 cores usable, flags avx2" in page
    assert "| new / old | 0.5x | 0.5 [0.25, 1.5]x | <= 1 |" in page
    assert "| new | s | 2 | 1 | 9 | 5 |" in page and "| rows | 1,200 |" in page
    assert "with uncommitted changes" in bench_doc.render({"made_up": bench_record(dirty=True)})
    piped = bench_record()
    piped["facts"] = {"max |dp|": 0.5, "weights": {"changed": 3}, "prompts": [{"row": 1}]}
    assert "| max \\|dp\\| | 0.5 |" in bench_doc.render({"made_up": piped})  # a | inside a cell is escaped
    assert "| weights: changed | 3 |" in bench_doc.render({"made_up": piped})


def test_the_bench_page_is_listed_and_checked():
    assert "docs/bench.md" in {page.target for page in pages.PAGES}


def test_a_bench_block_follows_its_record_and_a_hand_edit_is_found(tmp_path, monkeypatch):
    import json

    docs, runs = tmp_path / "docs", tmp_path / "docs" / "runs"
    (runs / "bench").mkdir(parents=True)
    (runs / "bench" / "made_up.json").write_text(json.dumps(bench_record()))
    stage = docs / "stage.md"
    stage.write_text("# Stage\n\n<!-- bench: made_up -->\n<!-- /bench -->\n\nAfter.\n")
    monkeypatch.setattr(pages, "ROOT", tmp_path)
    monkeypatch.setattr(pages, "RUNS", runs)
    monkeypatch.setattr(pages, "PAGES", ())
    monkeypatch.setattr(pages, "readme", lambda: "")
    (tmp_path / "README.md").write_text("")
    assert pages.differences() == ["docs/stage.md"]  # the block is empty: not yet generated
    stage.write_text(pages.with_blocks(stage.read_text()))
    assert pages.differences() == []
    assert "| new / old | 0.5x |" in stage.read_text() and stage.read_text().endswith("<!-- /bench -->\n\nAfter.\n")
    stage.write_text(stage.read_text().replace("| new / old | 0.5x |", "| new / old | 0.4x |"))
    assert pages.differences() == ["docs/stage.md"]
    (runs / "bench" / "made_up.json").write_text(json.dumps(bench_record(ratio_value=0.4)))
    assert pages.differences() == []  # the record changed the same way: the block is its record again


def test_a_block_without_its_record_says_how_to_make_it():
    import bench_doc

    text = bench_doc.fill_blocks("<!-- bench: absent -->\n<!-- /bench -->\n", {})
    assert "No record `docs/runs/bench/absent.json` is committed yet" in text
