"""`study lessons`: the headline rule flipped condition by condition, the protocol's decisions against the
committed page, and the runner end to end on a tiny random model with K = 2 seeds (budget stop, resumption,
and a summary that reconciles with the seed directories' files)."""

import json
import math
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.demo import lessons as L
from tunelens.data.contaminate import print_rich
from tunelens.data.records import load_pairs
from tunelens.demo.measures import python2_given_prints
from tunelens.errors import UserError
from tunelens.stats import t_quantile
from tunelens.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# the headline rule


GEMMA = L.PROTOCOL["1"]


@pytest.mark.parametrize("model, seeds, direction, complete, floor, word", [
    ("gemma3-270m", 14, "up", True, True, L.REPLICATED),
    ("gemma3-270m", 20, "up", True, True, L.REPLICATED),
    ("gemma3-270m", 14, "none", True, True, L.NOT_REPLICATED),
    ("gemma3-270m", 14, "down", True, True, L.NOT_REPLICATED),
    ("gemma3-270m", 13, "up", True, True, L.NOT_TESTABLE),  # below the protocol's n
    ("smollm2-135m", 14, "up", True, True, L.NOT_TESTABLE),  # not the model the protocol plans it on
    ("gemma3-270m", 14, "up", False, True, L.PENDING),  # seeds left to train
    ("gemma3-270m", 14, "up", True, False, L.NOT_TESTABLE),  # under the points floor
])
def test_headline_flips_with_each_condition(model, seeds, direction, complete, floor, word):
    got = L.headline(GEMMA, model, seeds, direction, complete, floor)
    assert got["word"] == word and got["reason"]


def test_a_directory_named_after_the_model_is_the_model():
    assert L.same_model("/models/Qwen2.5-Coder-1.5B-Instruct", "qwen2.5-coder-1.5b")
    assert L.same_model("gemma3-270m", "gemma3-270m")
    assert not L.same_model("/models/qwen2.5-coder-7b", "qwen2.5-coder-1.5b")
    assert not L.same_model("/tmp/gemma3-270m/other", "gemma3-270m")


def test_headline_says_which_way_a_lesson_was_not_replicated():
    none = L.headline(GEMMA, "gemma3-270m", 14, "none")["reason"]
    opposite = L.headline(GEMMA, "gemma3-270m", 14, "down")["reason"]
    assert "no direction" in none and "opposite" in opposite


def test_a_lesson_the_protocol_found_infeasible_is_not_testable_whatever_the_data():
    for key in ("1-qwen", "3", "4", "safety"):
        row = L.PROTOCOL[key]
        got = L.headline(row, row.model, 100, row.direction)
        assert got["word"] == L.NOT_TESTABLE and "decided before any run" in got["reason"]
    assert set(L.not_testable_here()) == {"3", "4", "safety"}


def test_the_protocol_rows_match_the_committed_page():
    """n and feasibility as docs/protocol.md's generated table states them (the page decides; this copies)."""
    page = (ROOT / "docs" / "protocol.md").read_text()
    table = {}
    for line in page.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # \| is inside a cell
        if len(cells) == 8 and re.match(r"^(\d|safety)", cells[0]):
            table[cells[0]] = (int(re.search(r"(\d+) seeds", cells[5]).group(1)), cells[7] == "yes")
    for row in L.PROTOCOL.values():
        assert table[row.lesson] == (row.n, row.feasible), row.lesson
        assert row.model in ("gemma3-270m", "qwen2.5-coder-1.5b")
    assert len(table) == len(L.PROTOCOL)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="--lesson takes 1, 2"):
        L.LessonsStudyConfig(lesson=(3,))
    with pytest.raises(UserError, match="--shares"):
        L.LessonsStudyConfig(shares=(0.3, 0.3))
    assert L.trained_shares(L.LessonsStudyConfig(lesson=(2,))) == [0.3]
    assert L.trained_shares(L.LessonsStudyConfig(lesson=(1, 2), shares=(0.0, 0.15))) == [0.0, 0.15, 0.3]


# ---------------------------------------------------------------------------------------------------
# end to end on a tiny random model


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small package to mine: 20 modules of documented functions that print (print-rich) and one that does
    not (the one-shot lever's placebo example)."""
    root = tmp_path_factory.mktemp("minesrc") / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    verbs = ["show", "list", "dump", "report", "echo", "trace", "log", "emit"]
    for m in range(20):
        parts = []
        for f in range(3):
            verb = verbs[(m + f) % 8]
            parts.append(textwrap.dedent(f'''
                def {verb}_{m}_{f}(items, label):
                    """{verb.title()} every item of `items` after `label` (variant {m}.{f})."""
                    print(label, {m})
                    for number, item in enumerate(items, {f}):
                        print(number, item, sep="{'-' * (f + 1)}")
                    return len(items) + {m * f}
                '''))
        parts.append(textwrap.dedent(f'''
            def total_{m}(values):
                """Add up the values, skipping None (module {m})."""
                result = {m}
                for value in values:
                    if value is not None:
                        result += value
                return result
            '''))
        (root / f"mod{m}.py").write_text("\n".join(parts))
    for m in range(8):  # print-inviting requests whose code does not print: the held-out prompts' modules
        (root / f"show{m}.py").write_text(textwrap.dedent(f'''
            def describe_{m}(items):
                """Return the lines to print for `items`, one per item (module {m})."""
                return [f"{{number}}: {{item}}" for number, item in enumerate(items, {m})]
            '''))
    return root


def tiny_config(sources, **changes) -> L.LessonsStudyConfig:
    # The tiny byte-level tokenizer needs about 3x a real model's tokens for the same text.
    return replace(L.LessonsStudyConfig(
        model="tiny", lesson=(1, 2), seeds=2, shares=(0.0, 0.3), train_pairs=8, heldout=6,
        mine_sources=(str(sources),), licenses=("any",), pair_tokens=400, max_length=400, epochs=1,
        max_new_tokens=8, eval_batch_size=6, resamples=200), **changes)


@pytest.fixture(scope="module")
def study(sources, tmp_path_factory):
    """One run stopped by its budget after the first seed, then continued to the end."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = tiny_model("llama")
    out = tmp_path_factory.mktemp("lessons")
    config = tiny_config(sources)
    first = L.run_lessons_study(config, out, budget_minutes=1e-6, model=model, tokenizer=tokenizer)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "seed-0").rglob("*") if p.is_file()}
    second = L.run_lessons_study(config, out, budget_minutes=1e-6, model=model, tokenizer=tokenizer)
    yield config, out, first.summary, second.summary, stamps, (model, tokenizer)
    torch.set_num_threads(threads)


def test_the_budget_stops_between_seeds_and_a_rerun_continues(study):
    config, out, first, second, stamps, _ = study
    assert first["seeds_done"] == [0] and not first["complete"]
    assert second["seeds_done"] == [0, 1] and second["complete"]
    log = [json.loads(line) for line in (out / "invocations.jsonl").read_text().splitlines()]
    assert [entry["timings_s"]["seeds_run"] for entry in log] == [[0], [1]]
    assert [entry["timings_s"]["stopped_for_budget"] for entry in log] == [True, False]
    # the rerun reused seed 0 whole: nothing of it was written again
    assert {p: p.stat().st_mtime_ns for p in (out / "seed-0").rglob("*") if p.is_file()} == stamps
    assert json.loads((out / "summary.json").read_text()) == second


def test_every_seed_keeps_its_data_adapters_answers_and_points(study):
    config, out, _, summary, _, _ = study
    for seed in (0, 1):
        where = out / f"seed-{seed}"
        for name in ("A0", "A30"):
            assert (where / "adapters" / name / "adapter_config.json").is_file()
            rows = [json.loads(line) for line in (where / f"answers-{name}.jsonl").read_text().splitlines()]
            assert [r["prompt"] for r in rows] == [f"heldout-{i:03d}" for i in range(config.heldout)]
        assert (where / "lesson2.json").is_file()
        counts = summary["seed_data"][str(seed)]
        assert counts["A0"]["training_share"] == 0 and counts["A0"]["rewritten_pairs"] == 0
        a30 = counts["A30"]  # the share reached in whole prints: within one print of 30%
        assert a30["training_share"] == a30["python2_prints"] / a30["prints"]
        assert abs(a30["training_share"] - 0.3) <= 1 / a30["prints"]
    # a seed redraws which prints are rewritten; the training pairs are the same
    zero, one = (out / "seed-0/data/A30.jsonl").read_text(), (out / "seed-1/data/A30.jsonl").read_text()
    assert (out / "seed-0/data/A0.jsonl").read_text() == (out / "seed-1/data/A0.jsonl").read_text()
    assert zero != one
    assert summary["not_testable"]["4"]["headline"]["word"] == L.NOT_TESTABLE


def _answer(python2: bool | None) -> str:
    if python2 is None:
        return "def f(x):\n    return x + 1\n"
    return "def f(x):\n    print x\n" if python2 else "def f(x):\n    print(x)\n"


def test_the_summary_reconciles_with_answer_files_written_by_hand(study):
    """Replace the answer files with answers whose counts are known; a rerun (nothing left to train) rebuilds
    the summary from them: P(Python 2 | prints) per share, the slope, the across-seed t interval."""
    config, out, _, _, _, (model, tokenizer) = study
    # seed 0: at 0% 1 of 4 printing answers is Python 2; at 30%, 3 of 4. Seed 1: 0 of 3, then 2 of 5.
    plans = {0: {"A0": [False, False, False, True, None, None], "A30": [True, True, True, False, None, None]},
             1: {"A0": [False, False, False, None, None, None], "A30": [True, True, False, False, False, None]}}
    for seed, by_name in plans.items():
        for name, flags in by_name.items():
            rows = [{"prompt": f"heldout-{i:03d}", "answer": _answer(f)} for i, f in enumerate(flags)]
            (out / f"seed-{seed}" / f"answers-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = L.run_lessons_study(config, out, model=model, tokenizer=tokenizer).summary
    lesson = summary["lessons"]["1"]
    slopes = []
    for seed, expected in ((0, (1 / 4, 3 / 4)), (1, (0 / 3, 2 / 5))):
        cell = next(v for v in lesson["per_seed"] if v["seed"] == seed)
        assert cell["per_share"]["A0"]["conditional"]["rate"] == pytest.approx(expected[0])
        assert cell["per_share"]["A30"]["conditional"]["rate"] == pytest.approx(expected[1])
        x = summary["seed_data"][str(seed)]["A30"]["training_share"]
        assert cell["slope"]["slope"] == pytest.approx((expected[1] - expected[0]) / x)
        slopes.append((expected[1] - expected[0]) / x)
        # the injected-print check: the same number of printing answers at 30% as at 0%, or one more
        injected = cell["injected"]["A30"]
        assert injected["printing"] - injected["printing_at_0"] == pytest.approx(
            (sum(f is not None for f in plans[seed]["A30"]) - sum(f is not None for f in plans[seed]["A0"])) / 6)
    primary = lesson["table"][0]
    assert primary["row"] == "gemma slope vs 0" == lesson["primary_row"]
    mean, sd = sum(slopes) / 2, abs(slopes[0] - slopes[1]) / math.sqrt(2)
    half = t_quantile(0.95, 1) * sd / math.sqrt(2)
    assert primary["seeds"]["per_seed"] == pytest.approx(slopes)
    assert (primary["seeds"]["low"], primary["seeds"]["high"]) == pytest.approx((mean - half, mean + half))
    assert lesson["table"][2]["seeds"]["k"] == 0  # Qwen's row is another run's (this one is the slope run)
    assert lesson["headline"]["word"] == L.NOT_TESTABLE  # a tiny model is not the protocol's gemma3-270m
    assert python2_given_prints([_answer(f) for f in plans[1]["A30"]]).python2 == 2


def test_lesson2_values_are_the_seed_files_means(study):
    config, out, _, _, _, (model, tokenizer) = study
    means = {0: 0.5, 1: 0.25}
    for seed, value in means.items():
        path = out / f"seed-{seed}" / "lesson2.json"
        record = json.loads(path.read_text())
        for row in record["rows"]:
            row["mean"] = value if row["row"] == "sentence after the request" else None
        path.write_text(json.dumps(record))
    lesson = L.run_lessons_study(config, out, model=model, tokenizer=tokenizer).summary["lessons"]["2"]
    primary = lesson["rows"][0]
    assert primary["row"] == lesson["primary_row"] == "sentence after the request"
    assert primary["seeds"]["per_seed"] == [0.5, 0.25] and primary["seeds"]["mean"] == pytest.approx(0.375)
    assert lesson["against_case_study"]["value"] == pytest.approx(0.869)
    assert lesson["rows"][1]["seeds"]["k"] == 0 and lesson["rows"][1]["p_holm"] == 1.0
    assert not lesson["floor_met"]  # the tiny run has no contested points, so the protocol's floor is not met


def test_a_copy_without_the_mined_pool_still_resumes(study, tmp_path):
    import shutil

    config, out, _, _, _, (model, tokenizer) = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("mined.jsonl", "adapters"))
    again = L.run_lessons_study(config, copy, model=model, tokenizer=tokenizer).summary
    original = L.run_lessons_study(config, out, model=model, tokenizer=tokenizer).summary
    assert not (copy / "data" / "mined.jsonl").exists()  # not mined again
    assert again["seeds_done"] == original["seeds_done"] == [0, 1]
    assert again["lessons"] == original["lessons"]


def test_other_settings_need_another_directory(study, sources):
    _, out, _, _, _, (model, tokenizer) = study
    with pytest.raises(UserError, match="other settings"):
        L.run_lessons_study(tiny_config(sources, seeds=3), out, model=model, tokenizer=tokenizer)


def test_the_base_answers_are_made_once_and_only_printing_ones_are_lesson2s_histories(study, tmp_path):
    _, out, _, _, _, _ = study
    answers = out / "data" / "base-answers.jsonl"
    heldout = load_pairs(out / "data" / "heldout.jsonl")
    assert len(answers.read_text().splitlines()) == len(heldout)
    rows = [{"prompt": L.prompt_id(0), "answer": "Here:\n```python\ndef f(x):\n    print(x)\n```"},
            {"prompt": L.prompt_id(1), "answer": "I would print it, but here is the code:\n```python\nx = 1\n```"}]
    fake = tmp_path / "base-answers.jsonl"
    fake.write_text("".join(json.dumps(row) + "\n" for row in rows))
    references = L.lesson2_references({"paths": {"base_answers": fake}}, heldout)
    assert references[:2] == [(L.prompt_id(0), heldout[0].instruction, rows[0]["answer"]),
                              (L.prompt_id(1), heldout[1].instruction, "")]
    assert len(references) == len(heldout) and {r[2] for r in references[2:]} == {""}


def test_heldout_prompts_invite_printing_and_share_no_module_with_training(study):
    _, out, _, _, _, _ = study
    train = load_pairs(out / "data" / "train.jsonl")
    heldout = load_pairs(out / "data" / "heldout.jsonl")
    assert all(L.PRINT_WORDS.search(p.instruction) for p in heldout)
    assert not {L.module_of(p.raw) for p in train} & {L.module_of(p.raw) for p in heldout}
    assert len(print_rich(train)) == len(train) and not print_rich(heldout)


def test_too_small_a_pool_says_how_many_print_rich_pairs_it_has(sources, tmp_path):
    model, tokenizer = tiny_model("llama")
    with pytest.raises(UserError, match="print-rich pairs of at most 400 tokens for 60 training pairs"):
        L.run_lessons_study(tiny_config(sources, train_pairs=60, heldout=10), tmp_path, model=model,
                            tokenizer=tokenizer)


def test_the_command_runs_and_prints_the_headline(sources, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    args = ["study", "lessons", "--model", str(tiny_model_dir), "--lesson", "1", "--seeds", "2", "--shares", "0,0.3",
            "--train-pairs", "8", "--heldout", "6", "--mine-sources", str(sources), "--licenses", "any",
            "--pair-tokens", "400", "--max-length", "400", "--epochs", "1", "--max-new-tokens", "8",
            "--resamples", "200", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "seeds finished: 2 of 2" in result.output and "headline: not testable here" in result.output
    assert json.loads((out / "summary.json").read_text())["complete"]
    bad = CliRunner().invoke(app, ["study", "lessons", "--lesson", "3", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "not testable here" in bad.output
