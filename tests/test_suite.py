"""Suite files: the bundled suites' shape, the validation of user suites, and running a case's tests."""

import json
import re
from collections import Counter

import pytest

from tunelens.errors import UserError
from tunelens.evaluate.sandbox import Limits, run_python
from tunelens.evaluate.suite import (BUNDLED_SUITES, Case, load_suite, load_suites, run_case_tests,
                                     score_references, test_program)


@pytest.fixture(scope="module")
def bundled():
    return {name: load_suite(name) for name in BUNDLED_SUITES}


def code_cases_are_complete(cases):
    for case in cases:
        assert case.expect == "code" and case.tests and case.reference and case.entry_point, case.id


def test_code_suite_has_134_cases_over_23_types_each_runnable(bundled):
    cases = bundled["code"]
    types = Counter(case.type for case in cases)
    assert len(cases) >= 134 and len(types) >= 23
    code_cases_are_complete(cases)
    for case in cases:  # the prompt names the function the tests call
        assert f"`{case.entry_point}" in case.prompt, case.id


def test_pushback_suite_pairs_40_broken_specs_with_clean_twins(bundled):
    cases = bundled["pushback"]
    by_id = {case.id: case for case in cases}
    broken = [case for case in cases if case.expect == "pushback"]
    assert len(broken) >= 40
    assert {case.type for case in broken} == {"contradictory-constraints", "contradicting-examples",
                                              "impossible-requirements", "missing-information"}
    for case in broken:
        twin = by_id[case.twin]
        assert twin.twin == case.id and twin.type == case.type + "-clean"
        assert case.tests is None and case.reference is None
        code_cases_are_complete([twin])
    assert len(cases) == 2 * len(broken)


def test_safety_suite_pairs_40_harmful_requests_with_benign_lookalikes(bundled):
    cases = bundled["safety"]
    by_id = {case.id: case for case in cases}
    harmful = [case for case in cases if case.expect == "refusal"]
    benign = [case for case in cases if case.expect == "code"]
    assert len(harmful) >= 40 and len(benign) >= 40
    for case in harmful:
        assert case.tests is None and case.reference is None
        assert by_id[case.twin].expect == "code" and by_id[case.twin].type == case.type + "-lookalike"
    code_cases_are_complete(benign)


def test_humaneval_suite_is_the_164_problems_of_the_package(bundled):
    cases = bundled["humaneval"]
    assert len(cases) == 164 and cases[0].id == "HumanEval/0" and cases[-1].id == "HumanEval/163"
    code_cases_are_complete(cases)
    assert cases[0].entry_point == "has_close_elements" and cases[0].prompt.startswith("from typing import List")


def test_load_suites_combines_suites_and_keeps_ids_unique(bundled):
    cases = load_suites("code, pushback,safety")
    assert len(cases) == sum(len(bundled[name]) for name in ("code", "pushback", "safety"))
    assert len({case.id for case in cases}) == len(cases)
    with pytest.raises(UserError, match="appears in both"):
        load_suites("code,code")
    with pytest.raises(UserError, match="unknown suite 'nope'"):
        load_suites("code,nope")


# ---------------------------------------------------------------------------------------------------
# Test programs


def test_plain_case_program_is_code_then_tests():
    case = Case(id="t", suite="mine", type="x", prompt="p", expect="code", tests="assert f() == 1",
                entry_point="f")
    assert test_program(case, "def f():\n    return 1") == "def f():\n    return 1\n\nassert f() == 1\n"
    right = run_case_tests(case, "def f():\n    return 1")
    assert right.passed and right.judged == "host"
    wrong = run_case_tests(case, "def f():\n    return 2")
    assert not wrong.passed and wrong.reason == "test-failed" and wrong.detail == "line 1: assert f() == 1"


def test_humaneval_program_follows_the_package(bundled):
    case = bundled["humaneval"][0]
    program = test_program(case, case.reference)
    assert program.startswith(case.prompt + case.reference) and program.rstrip().endswith("check(has_close_elements)")
    verdict = run_case_tests(case, case.reference)
    assert verdict.passed and verdict.judged == "host"
    # An answer that is a whole function (what chat models write) redefines the prompt's stub.
    full = ("def has_close_elements(numbers, threshold):\n"
            "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
    assert run_case_tests(case, full).passed
    assert run_case_tests(case, "    return False\n").reason == "test-failed"
    with pytest.raises(ValueError):
        run_case_tests(Case(id="r", suite="s", type="t", prompt="p", expect="refusal"), "x = 1")


def test_score_references_reports_failing_and_missing_references_by_id():
    good = Case(id="good", suite="s", type="t", prompt="p", expect="code", tests="assert f() == 1",
                reference="def f():\n    return 1")
    bad = Case(id="bad", suite="s", type="t", prompt="p", expect="code", tests="assert f() == 1",
               reference="def f():\n    return 0")
    missing = Case(id="missing", suite="s", type="t", prompt="p", expect="code", tests="assert True")
    refusal = Case(id="refuse", suite="s", type="t", prompt="p", expect="refusal")
    scored = {case.id: result for case, result in score_references([good, bad, missing, refusal])}
    assert set(scored) == {"good", "bad", "missing"}  # nothing to run for a refusal
    assert scored["good"].passed
    assert scored["bad"].reason == "test-failed"
    assert scored["missing"].reason == "no-reference" and not scored["missing"].passed


def test_every_bundled_reference_and_humaneval_solution_passes(bundled):
    cases = [case for name in BUNDLED_SUITES for case in bundled[name]]
    scored = score_references(cases, workers=2)
    failures = [f"{case.suite}/{case.id}: {result.reason}" for case, result in scored if not result.passed]
    assert failures == []
    assert len(scored) == 144 + 40 + 40 + 164
    judged = Counter((case.suite, result.judged) for case, result in scored)
    # Every literal-shaped test is judged on the host; the rest run apart from the answer, none in
    # its process (docs/eval-suites.md has the table).
    assert judged[("humaneval", "host")] == 158 and judged[("humaneval", "sandbox-apart")] == 6
    assert judged[("code", "host")] >= 90
    assert sum(n for (suite, how), n in judged.items() if how == "sandbox-shared") == 0


def test_bundled_tests_reject_a_do_nothing_answer(bundled):
    # Real tests: an answer that defines the entry point but returns None must fail every case. All
    # cases run in one sandboxed program (each in its own namespace and directory) to keep this fast.
    cases = [case for name in ("code", "pushback", "safety") for case in bundled[name] if case.expect == "code"]
    jobs = [(case.id, _stub(case) + "\n\n" + case.tests) for case in cases]
    program = (
        "import json, os\n"
        f"jobs = json.loads({json.dumps(json.dumps(jobs))})\n"
        "passed = []\n"
        "for number, (case_id, source) in enumerate(jobs):\n"
        "    os.mkdir(str(number)); os.chdir(str(number))\n"
        "    try:\n"
        "        exec(source, {'__name__': 'stub'})\n"
        "        passed.append(case_id)\n"
        "    except Exception:\n"
        "        pass\n"
        "    os.chdir('..')\n"
        "print(json.dumps(passed))\n")
    result = run_python(program, Limits(wall_s=120))
    assert result.passed, result.stderr[-500:]
    assert len(jobs) == 144 + 40 + 40 and json.loads(result.stdout) == []


def _stub(case):
    names = set(re.findall(r"^(?:def|class) (\w+)", case.reference, re.M)) | {case.entry_point}
    return "\n".join(f"def {name}(*args, **kwargs):\n    return None" for name in sorted(names))


# ---------------------------------------------------------------------------------------------------
# Validation of user suite files


GOOD = {"id": "a", "type": "t", "prompt": "Write `f`.", "expect": "code", "tests": "assert f() == 1",
        "entry_point": "f", "reference": "def f():\n    return 1"}


def write_jsonl(tmp_path, *records):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_and_yaml_suites_load(tmp_path):
    cases = load_suite(write_jsonl(tmp_path, GOOD, {**GOOD, "id": "b"}))
    assert [c.id for c in cases] == ["a", "b"] and cases[0].suite == "mine" and cases[0].entry_point == "f"
    path = tmp_path / "other.yaml"
    path.write_text("suite: named\ncases:\n  - id: x\n    type: t\n    prompt: Say no.\n    expect: refusal\n")
    (case,) = load_suite(path)
    assert case == Case(id="x", suite="named", type="t", prompt="Say no.", expect="refusal")
    listed = tmp_path / "listed.yml"
    listed.write_text("- id: y\n  type: t\n  prompt: Hm?\n  expect: pushback\n")
    assert load_suite(listed)[0].suite == "listed"
    opted_in = load_suite(write_jsonl(tmp_path, {**GOOD, "tests": "f()", "differential": True}))[0]
    assert opted_in.differential and run_case_tests(opted_in, "def f():\n    return 1").passed
    assert run_case_tests(opted_in, "def f():\n    return 2").reason == "differs-from-reference"


@pytest.mark.parametrize("change, field, problem", [
    ({"colour": "red"}, "colour", "unknown field"),
    ({"id": None}, "id", "is required"),
    ({"prompt": "  "}, "prompt", "is required"),
    ({"expect": "cod"}, "expect", "must be one of code, pushback, refusal"),
    ({"tests": None}, "tests", "is required when expect is code"),
    ({"tests": "assert (("}, "tests", "not valid Python 3"),
    ({"reference": "print 'hi'"}, "reference", "not valid Python 3"),
    ({"entry_point": "my func"}, "entry_point", "identifier"),
    ({"type": 3}, "type", "must be a string"),
    ({"expect": "refusal", "tests": "assert True", "reference": None}, "tests", "only cases that expect code"),
    ({"differential": "yes"}, "differential", "must be true or false"),
    ({"expect": "pushback", "tests": None, "reference": None, "differential": True}, "differential", "expect code"),
    ({"differential": True, "reference": None}, "differential", "needs a reference"),
    ({"differential": True, "tests": "for x in (1, 2):\n    f()"}, "differential", "host can judge"),
])
def test_bad_fields_are_named_with_file_line_and_case(tmp_path, change, field, problem):
    path = write_jsonl(tmp_path, GOOD, {**GOOD, "id": "second", **change})
    with pytest.raises(UserError) as err:
        load_suite(path)
    message = str(err.value)
    assert str(path) in message and "line 2" in message and f"field '{field}'" in message and problem in message
    if change.get("id", "x") is not None:
        assert "case 'second'" in message


def test_duplicate_ids_and_broken_twins_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"line 2: field 'id': duplicate id 'a'"):
        load_suite(write_jsonl(tmp_path, GOOD, GOOD))
    with pytest.raises(UserError, match=r"field 'twin': no case has id 'ghost'"):
        load_suite(write_jsonl(tmp_path, {**GOOD, "twin": "ghost"}))
    one_way = {"id": "p", "type": "t", "prompt": "?", "expect": "pushback", "twin": "a"}
    with pytest.raises(UserError, match=r"case 'a' must name 'p' as its twin"):
        load_suite(write_jsonl(tmp_path, GOOD, one_way))


def test_unreadable_files_get_clear_errors(tmp_path):
    bad_json = tmp_path / "broken.jsonl"
    bad_json.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(UserError, match=r"broken.jsonl: line 2: not valid JSON"):
        load_suite(bad_json)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("- id: a\n  prompt: [unclosed\n")
    with pytest.raises(UserError, match=r"broken.yaml: not valid YAML"):
        load_suite(bad_yaml)
    wrong_top = tmp_path / "top.yaml"
    wrong_top.write_text("tests: []\n")
    with pytest.raises(UserError, match=r"top level must be a list of cases"):
        load_suite(wrong_top)
    yaml_line = tmp_path / "lines.yaml"
    yaml_line.write_text("- id: a\n  type: t\n  prompt: p\n  expect: refusal\n\n- id: b\n  type: t\n  prompt: p\n  expect: nope\n")
    with pytest.raises(UserError, match=r"lines.yaml: line 6 \(case 'b'\): field 'expect'"):
        load_suite(yaml_line)
    with pytest.raises(UserError, match=r"must end in .yaml, .yml or .jsonl"):
        (tmp_path / "cases.txt").write_text("x")
        load_suite(tmp_path / "cases.txt")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="has no cases"):
        load_suite(empty)


@pytest.mark.parametrize("name, data, message", [
    ("latin1.jsonl", json.dumps(GOOD).encode() + b"\n\xff\n", r"latin1.jsonl: line 2: not UTF-8 text \(byte 0xff\)"),
    ("latin1.yaml", b"- id: a\n  prompt: caf\xe9\n", r"latin1.yaml: line 2: not UTF-8 text"),
    ("big.jsonl", b'{"id": "a"}\n{"id": ' + b"9" * 5000 + b"}\n", r"big.jsonl: line 2: a value cannot be read"),
    ("big.yaml", b"- id: a\n  type: t\n  tests: " + b"9" * 5000 + b"\n", r"big.yaml: line 3: a value cannot be read"),
    ("date.yaml", b"- id: a\n- id: 2020-02-30\n", r"date.yaml: line 2: a value cannot be read: day is out of range"),
    ("deep.jsonl", b"[" * 100_000 + b"\n", r"deep.jsonl: line 1: JSON nested too deeply"),
])
def test_undecodable_and_unbuildable_values_are_user_errors_with_their_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError, match=message):
        load_suite(path)


def test_a_directory_named_like_a_suite_file_is_a_user_error(tmp_path):
    (tmp_path / "x.yaml").mkdir()
    with pytest.raises(UserError, match=r"x.yaml: cannot read the suite file: Is a directory"):
        load_suite(tmp_path / "x.yaml")


def test_deeply_nested_tests_code_is_refused_by_field(tmp_path):
    path = write_jsonl(tmp_path, {**GOOD, "tests": "x" + "[0]" * 100_000})
    with pytest.raises(UserError, match=r"line 1 \(case 'a'\): field 'tests': is nested too deeply"):
        load_suite(path)


def test_a_line_separator_inside_a_jsonl_string_does_not_split_the_line(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({**GOOD, "prompt": "one\u2028two\x0cthree"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_suite(path)[0].prompt == "one\u2028two\x0cthree"
