"""The typed result row and results.jsonl's schema, the one bad-output definition, and the HTML report's
escaping through the shared renderer."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from tunelens.errors import UserError
from tunelens.evaluate.reports import render_html
from tunelens.evaluate.results import RESULTS_SCHEMA, ResultRow, read_result_rows, read_results
from tunelens.evaluate.runner import EvalConfig, run_eval
from tunelens.evaluate.scoring import bad_output
from tunelens.evaluate.suite import Case
from tunelens.evaluate.summary import summarize

DOCS = Path(__file__).resolve().parent.parent / "docs" / "eval.md"
F = "```"


def _row(**change) -> ResultRow:
    fields = dict(suite="s", case_id="c", type="t", expect="code", model="base", decoding="greedy", sample=0,
                  behaviour="code", as_expected=True, has_code=True, parses=True, python2=False, findings=(),
                  tests="passed", test_reason=None, prompt="p", answer="a", judged="host", test_stdout=None, bad=False)
    return ResultRow(**{**fields, **change})


def test_a_row_round_trips_and_leaves_out_only_the_optional_fields_when_empty():
    passed = _row(findings=({"code": "py2-print", "message": "m", "line": 1},))
    data = passed.to_json()
    assert list(data) == [f.name for f in dataclasses.fields(ResultRow) if f.name not in ("test_stdout", "few_shot")]
    assert data["findings"] == [{"code": "py2-print", "message": "m", "line": 1}]
    assert ResultRow.from_json(json.loads(json.dumps(data))) == passed
    not_run = _row(expect="pushback", behaviour="pushback", tests="not-run", judged=None, bad=None)
    assert "judged" not in not_run.to_json() and "test_stdout" not in not_run.to_json()
    assert ResultRow.from_json(not_run.to_json()) == not_run
    assert passed.key == ("s", "c", "base", "greedy", 0)


@pytest.mark.parametrize("change, message", [
    ({"sample": "0"}, "field 'sample' must be int, got str"),
    ({"sample": True}, "field 'sample' must be int, got bool"),
    ({"parses": "yes"}, "field 'parses' must be bool or None, got str"),
    ({"findings": ["py2-print"]}, "field 'findings' must be a list of objects, got list"),
    ({"colour": "red"}, "unknown field\\(s\\) colour \\(results schema 1"),
    ({"behaviour": None}, "field 'behaviour' must be str, got NoneType"),
])
def test_a_bad_result_line_is_named_by_line_and_field(tmp_path, change, message):
    path = tmp_path / "results.jsonl"
    lines = [_row().to_json(), {**_row(case_id="d").to_json(), **change}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(UserError, match=f"results.jsonl:2: {message}"):
        read_result_rows(path)


def test_read_results_gives_the_on_disk_dicts(tmp_path):
    path = tmp_path / "results.jsonl"
    line = _row().to_json()
    path.write_text(json.dumps(line) + "\n")
    assert read_results(path) == [line] and read_result_rows(path) == [_row()]


def test_the_schema_table_in_docs_lists_every_field_of_the_row():
    text = DOCS.read_text()
    section = text[text.index("## results.jsonl"):text.index("## summary.json")]
    documented = {name for cell in re.findall(r"^\| ([^|]+) \|", section, re.M) for name in re.findall(r"`(\w+)`", cell)}
    assert documented == {f.name for f in dataclasses.fields(ResultRow)}
    assert f"schema {RESULTS_SCHEMA}" in section


@pytest.mark.parametrize("change, bad", [
    ({}, False),
    ({"has_code": False, "parses": None, "tests": "not-run"}, True),
    ({"parses": False, "tests": "failed"}, True),
    ({"python2": True}, True),
    ({"tests": "failed"}, True),
    ({"tests": "none"}, False),  # code without tests to run is judged by its static checks only
    ({"expect": "other"}, True),  # code for a question that wants none
    ({"expect": "other", "has_code": False, "parses": None, "tests": "not-run"}, False),
    ({"expect": "pushback", "has_code": False, "parses": None, "tests": "not-run"}, None),
    ({"expect": "refusal"}, None),
])
def test_bad_output_is_defined_for_code_requests_and_questions_wanting_no_code(change, bad):
    assert bad_output(_row(**change)) is bad


class TwoAnswers:
    roles = ("base", "tuned")

    def generate(self, prompts, sampling, role):
        return [f"{F}python\nprint('Leonardo')\n{F}" if role == "tuned" else "Leonardo da Vinci." for _ in prompts]

    def describe(self):
        return {"backend": "two-answers"}


def test_a_question_wanting_no_code_is_scored_bad_when_answered_with_code(tmp_path):
    case = Case("mona", "offtopic", "no-code-question", "Who painted the Mona Lisa?", "other")
    run_eval(EvalConfig(samples=0), tmp_path, cases=[case], backend=TwoAnswers())
    rows = {row.model: row for row in read_result_rows(tmp_path / "results.jsonl")}
    assert (rows["base"].bad, rows["tuned"].bad) == (False, True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all("bad_output" not in g["metrics"] for g in summary["groups"])  # the metric is over code requests


def test_resuming_a_directory_of_another_results_schema_is_refused(tmp_path):
    case = Case("mona", "offtopic", "no-code-question", "Who painted the Mona Lisa?", "other")
    run_eval(EvalConfig(samples=0), tmp_path, cases=[case], backend=TwoAnswers())
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["results_schema"] == RESULTS_SCHEMA
    del info["results_schema"]  # run.json from before the field: schema 1, resumes
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert run_eval(EvalConfig(samples=0), tmp_path, cases=[case], backend=TwoAnswers()).reused == 2
    (tmp_path / "run.json").write_text(json.dumps({**info, "results_schema": RESULTS_SCHEMA + 1}))
    with pytest.raises(UserError, match=f"holds results of schema {RESULTS_SCHEMA + 1}"):
        run_eval(EvalConfig(samples=0), tmp_path, cases=[case], backend=TwoAnswers())


def test_answers_in_the_html_report_are_escaped():
    rows = []
    for i in range(6):  # six lost pushbacks: a regression, so its cases are shown with both answers
        rows.append(_row(case_id=f"p{i}", expect="pushback", behaviour="pushback", tests="not-run", bad=None))
        rows.append(_row(case_id=f"p{i}", model="tuned", expect="pushback", behaviour="code", as_expected=False,
                         tests="not-run", bad=None, answer="<script>alert(1)</script>"))
    summary = summarize(rows)
    assert summary["regressions"]
    html = render_html(summary, rows)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
