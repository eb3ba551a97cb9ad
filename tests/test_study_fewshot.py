"""`study few-shot`: the copy measures and the check's summary by hand, the choice of examples, the
token-id prompts of batched generation, the levers, and one end-to-end run (with resume) on a tiny model."""

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.errors import UserError
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.studies import fewshot as F
from tunelens.studies.fewshot_measures import (body_copied, condition_summary, copy_measures, defined_names,
                                               distinctive_lines, missed_function, name_copied, paired_test)
from tunelens.studies.fewshot_report import build_summary, check_summary, figures

PNG = b"\x89PNG\r\n\x1a\n"
EXAMPLE = '''def total_size(paths):
    """Return the summed size of the files.

    Missing files count as zero.
    """
    total = 0
    for path in paths:
        total += os.path.getsize(path)
    return total
'''
REFERENCE = '''def count_lines(paths):
    """Count the lines."""
    total = 0
    for path in paths:
        total += len(open(path).readlines())
    return total
'''


def test_distinctive_lines_skip_docstrings_short_lines_and_the_reference():
    assert distinctive_lines(EXAMPLE) == ["total = 0", "for path in paths:", "total += os.path.getsize(path)",
                                          "return total"]
    # Lines the prompt's own answer has could be written without the example.
    assert distinctive_lines(EXAMPLE, REFERENCE) == ["total += os.path.getsize(path)"]


def test_body_copied_by_hand():
    copied = "def count_lines(paths):\n    total = 0\n    for path in paths:\n        total += os.path.getsize(path)\n"
    assert body_copied(copied, EXAMPLE) is True  # 3 of 4 distinctive lines
    assert body_copied("def f():\n    total = 0\n", EXAMPLE) is False  # 1 of 4
    assert body_copied(copied, EXAMPLE, REFERENCE) is None  # one distinctive line left: too few to tell


def test_names_defined_copied_and_missed():
    assert defined_names("def a():\n  pass\n    async def b(x): pass\nprint 'def c'") == ["a", "b"]
    assert name_copied("def total_size(p):\n    return 0", EXAMPLE, "count_lines") is True
    assert name_copied("def count_lines(p):\n    return 0", EXAMPLE, "count_lines") is False
    assert name_copied("def total_size(p):\n    return 0", EXAMPLE, "total_size") is None  # same name: can't tell
    assert missed_function("def total_size(p): pass", "count_lines") is True
    assert missed_function("def count_lines(p): pass", "count_lines") is False
    measures = copy_measures("def total_size(p): pass", EXAMPLE, REFERENCE, python2=False, bad=True)
    assert measures == {"python2": False, "name_copied": True, "body_copied": None, "missed_function": True,
                        "bad": True}


def _row(condition, with_bad, without_bad, risk, python2=False, missed=False, similarity=0.5):
    level, quality = condition.split("/")
    measures = {"python2": python2, "name_copied": None, "body_copied": None, "missed_function": missed}
    return {"prompt_id": "p", "condition": condition, "level": level, "quality": quality, "similarity": similarity,
            "with": {**measures, "bad": with_bad}, "without": {**measures, "python2": False, "missed_function": False,
                                                              "bad": without_bad},
            "check": {"risk": risk, "risks": {"lint": risk, "off_query": 0.0, "mismatch": 0.0}}}


def test_paired_test_counts_prompts_made_worse():
    rows = [_row("nearest/python2", True, False, 1.0)] * 5 + [_row("nearest/python2", False, True, 1.0)]
    result = paired_test(rows, "bad")
    assert (result["base_only"], result["tuned_only"]) == (5, 1)
    assert result["p_value"] == pytest.approx(2 * 7 / 64)  # 2 * P(X <= 1), X ~ Bin(6, 1/2)
    summary = condition_summary(rows)
    assert summary["with"]["bad"]["k"] == 5 and summary["without"]["bad"]["k"] == 1 and summary["n"] == 6


def test_check_summary_by_hand():
    rows = [_row("nearest/clean", False, False, 0.1), _row("nearest/clean", False, False, 0.6),
            _row("nearest/python2", True, False, 0.9), _row("middling/python2", True, False, 0.4),
            _row("middling/clean", True, True, 0.0),  # bad alone: the context cannot have made it bad
            _row("unrelated/clean", False, False, 0.2, missed=True)]
    s = check_summary(rows, threshold=0.5)
    bad = s["labels"]["bad"]
    assert (bad["positives"], bad["negatives"], bad["excluded_bad_alone"]) == (2, 3, 1)
    # positives 0.9, 0.4 against negatives 0.1, 0.6, 0.2: 5 of 6 pairs ordered right
    assert bad["auroc"] == pytest.approx(5 / 6)
    assert (bad["detected"]["k"], bad["detected"]["n"]) == (1, 2)
    assert s["labels"]["bad_or_missed_function"]["positives"] == 3
    assert (s["false_alarm_nearest_clean"]["k"], s["false_alarm_nearest_clean"]["n"]) == (1, 2)
    # Defined whatever the model did alone: the 6th row (bad alone) counts too.
    anyway = s["labels"]["bad_with_example"]
    assert (anyway["positives"], anyway["negatives"], anyway["excluded_bad_alone"]) == (3, 3, 0)
    # positives 0.9, 0.4, 0.0 against 0.1, 0.6, 0.2: 3 + 2 + 0 of 9 pairs ordered right
    assert anyway["auroc"] == pytest.approx(5 / 9)


def test_copied_defect_needs_the_defect_the_answer_did_not_have_alone():
    from tunelens.studies.fewshot_report import copied_defect

    assert copied_defect(_row("nearest/python2", True, False, 1.0, python2=True))
    assert not copied_defect(_row("nearest/python2", True, False, 1.0, python2=False))
    assert not copied_defect(_row("nearest/clean", True, False, 0.0, python2=True))  # a clean example has no defect
    wrong = _row("middling/wrong_function", False, False, 1.0)
    wrong["with"]["name_copied"], wrong["without"]["name_copied"] = True, False
    assert copied_defect(wrong)
    wrong["without"]["name_copied"] = True  # it wrote that name without the example too
    assert not copied_defect(wrong)
    rows = [_row("nearest/python2", True, False, 0.9, python2=True), _row("nearest/clean", False, False, 0.1),
            _row("unrelated/python2", True, False, 0.3, python2=False)]
    label = check_summary(rows, threshold=0.5)["labels"]["copied_defect"]
    assert (label["positives"], label["negatives"], label["auroc"]) == (1, 2, 1.0)


def test_python2_version_rewrites_prints():
    assert F.python2_version("def f(x):\n    print(x)\n    return x\n") == "def f(x):\n    print x\n    return x\n"
    assert 'print "' in F.python2_version("def f(x):\n    return x\n")  # a print statement is added
    assert F.python2_version("This is prose, not code.") is None


def _record(name, instruction, body="    return x\n"):
    return {"id": f"mined:{name}", "messages": [{"role": "user", "content": instruction},
                                                {"role": "assistant", "content": f"def {name}(x):\n{body}"}]}


POOL = [_record("sort_names", "Write a Python function `sort_names(x)` that sorts the names alphabetically."),
        _record("parse_date", "Write a Python function `parse_date(x)` that parses an ISO date string."),
        _record("zip_dirs", "Write a Python function `zip_dirs(x)` that compresses every directory into a zip."),
        _record("hex_color", "Write a Python function `hex_color(x)` that converts an RGB triple to hex."),
        _record("send_mail", "Write a Python function `send_mail(x)` that sends an email over SMTP.")]
HELD = [_record("sort_words", "Write a Python function `sort_words(x)` that sorts the words alphabetically.")]


def test_build_cases_ranks_by_similarity_and_builds_each_quality():
    embedder = HashingEmbedder(256)
    cases = F.build_cases(POOL, HELD, embedder)
    assert [c["condition"] for c in cases] == ["baseline"] + [F.condition_name(l, q) for l, q in F.conditions()]
    by = {c["condition"]: c for c in cases}
    assert by["nearest/clean"]["example"]["id"] == "mined:sort_names"
    sims = [by[f"{level}/clean"]["similarity"] for level in F.LEVELS]
    assert sims == sorted(sims, reverse=True) and sims[0] > sims[-1]
    vectors = embedder.encode([HELD[0]["messages"][0]["content"]] + [p["messages"][0]["content"] for p in POOL])
    assert max(float(vectors[0] @ v) for v in vectors[1:]) == pytest.approx(sims[0], abs=1e-5)
    clean, py2, wrong = (by[f"nearest/{q}"]["example"] for q in F.QUALITIES)
    assert clean["instruction"] == py2["instruction"] == wrong["instruction"]
    assert "print" in py2["response"] and "print" not in clean["response"]
    assert wrong["response"] != clean["response"] and "sort_names" not in wrong["response"]


def test_generate_batch_takes_token_id_prompts(tiny_llama, one_thread):
    from tunelens.engine.generate import SamplingConfig, generate_batch
    from tunelens.model.prompts import encode_prompt

    model, tokenizer = tiny_llama
    sampling = SamplingConfig(max_new_tokens=5)
    texts = ["Reverse a list.", "Add two numbers together."]
    by_text = generate_batch(model, tokenizer, texts, sampling, batch_size=2)
    by_ids = generate_batch(model, tokenizer, [encode_prompt(tokenizer, t) for t in texts], sampling, batch_size=2)
    assert by_ids == by_text


def test_levers_put_each_example_in_the_context_and_move_the_points(tiny_llama, one_thread):
    from tunelens.retrieval.fewshot import Example, render_few_shot
    from tunelens.inspect.levers import score_points
    from tunelens.model.prompts import render_prompt

    model, tokenizer = tiny_llama
    cases = F.build_cases(POOL, HELD, HashingEmbedder(256))
    query = HELD[0]["messages"][0]["content"]
    levers = F.make_levers(tokenizer, cases)(query)
    assert [lever.name for lever in levers][-1] == F.SENTENCE_LEVER and len(levers) == 10
    nearest = next(c for c in cases if c["condition"] == "nearest/python2")
    assert levers[1].prompt == render_few_shot(tokenizer, [Example.from_dict(nearest["example"])], query)
    answer = F.python2_version(HELD[0]["messages"][1]["content"])
    points = score_points(model, tokenizer, [(query, answer)], F.make_levers(tokenizer, cases),
                          lambda text: render_prompt(tokenizer, text))
    assert points and all(abs(p.delta(levers[0].name)) > 1e-4 for p in points)  # the context changed the odds


MODULE_TOPICS = ("scale", "shift", "clip", "count", "join", "split", "merge", "rank")


def _sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for topic in MODULE_TOPICS:
        functions = [f'''def {topic}_{i}(values, factor):
    """Return each value {topic}ed by factor, variant {i}."""
    result = []
    for value in values:
        result.append(value * factor + {i})
    print("done", len(result))
    return result
''' for i in range(4)]
        (src / f"mod_{topic}.py").write_text("\n\n".join(functions))
    return src


def _config(src, **overrides):
    return F.FewShotStudyConfig(**{"model": "tiny", "sources": (str(src),), "pool": 12, "heldout": 3,
                                   "pair_tokens": 400, "max_new_tokens": 6, "batch_size": 8,
                                   "embedder": "hashing-256", "trace_answers": 2, "resamples": 200, **overrides})


def test_study_end_to_end_and_resume(tmp_path, tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    config = _config(_sources(tmp_path))
    out = tmp_path / "run"
    result = F.run_fewshot_study(config, out, model, tokenizer)
    s = result.summary
    assert json.loads((out / "summary.json").read_text()) == s
    assert s["record"]["stages"] and s["record"]["machine"]["cpus"] >= 1  # the run record (runtime.finish_run)
    assert len((out / "cases.jsonl").read_text().splitlines()) == 3 * 10
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3 * 10
    assert len((out / "rows.jsonl").read_text().splitlines()) == 3 * 9
    assert s["prompts"] == 3 and set(s["conditions"]) == {F.condition_name(l, q) for l, q in F.conditions()}
    assert all(cell["n"] == 3 for cell in s["conditions"].values())
    reference = s["teacher_forced"]["reference"]
    assert reference["answers"] == 3 and reference["points"] >= 3 and len(reference["effects"]) == 10
    assert s["context_check"]["flagged_by_condition"]["nearest/python2"]["k"] == 3  # lint catches every one
    assert (out / "copying.png").read_bytes().startswith(PNG) and (out / "levers.png").read_bytes().startswith(PNG)
    # A rerun reuses the answers and points; other settings are refused.
    stamp = (out / "answers.jsonl").stat().st_mtime_ns
    again = F.run_fewshot_study(config, out, model, tokenizer)
    assert (out / "answers.jsonl").stat().st_mtime_ns == stamp and again.summary["conditions"] == s["conditions"]
    with pytest.raises(UserError, match="other settings"):
        F.run_fewshot_study(replace(config, seed=1), out, model, tokenizer)


def test_an_interrupted_run_generates_only_what_is_missing(tmp_path, tiny_llama, one_thread, monkeypatch):
    import tunelens.engine.generate as generation

    model, tokenizer = tiny_llama
    config = _config(_sources(tmp_path))
    out = tmp_path / "run"
    F.run_fewshot_study(config, out, model, tokenizer)
    kept = (out / "answers.jsonl").read_text().splitlines()[:-4]
    (out / "answers.jsonl").write_text("\n".join(kept) + "\n")
    asked = []
    real = generation.generate_batch
    monkeypatch.setattr(F, "generate_batch", lambda m, t, prompts, *a, **k: asked.append(len(prompts))
                        or real(m, t, prompts, *a, **k))
    F.run_fewshot_study(config, out, model, tokenizer)
    assert sum(asked) == 4 and len((out / "answers.jsonl").read_text().splitlines()) == 30


def test_figures_come_from_a_summary_alone(tmp_path, tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    config = _config(_sources(tmp_path))
    result = F.run_fewshot_study(config, tmp_path / "run", model, tokenizer)
    pngs = figures(json.loads(json.dumps(result.summary)))
    assert set(pngs) == {"copying", "levers"} and all(p.startswith(PNG) for p in pngs.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    points = json.loads((tmp_path / "run" / "points.json").read_text())
    rebuilt = build_summary(config, result.summary["data"], rows, points, "tiny")
    assert rebuilt["conditions"] == result.summary["conditions"]


def test_cli_study_few_shot_help_and_bad_options():
    runner = CliRunner()
    helped = runner.invoke(app, ["study", "few-shot", "--help"])
    assert helped.exit_code == 0 and "tunelens study few-shot --out runs/fewshot" in helped.output
    assert runner.invoke(app, ["study", "few-shot", "--pool", "2", "--out", "x"]).exit_code != 0
    assert runner.invoke(app, ["study", "few-shot", "--check-threshold", "2"]).exit_code != 0
