"""results.jsonl: one typed row per answer, and reading and appending the file.

The schema (documented field by field in docs/eval.md) is versioned by `RESULTS_SCHEMA`; run.json
records the version a run directory was written with, so answers of two schemas never share a file.
A row on disk has exactly the keys of `ResultRow`, in its field order, except that `judged`,
`test_stdout` and `few_shot` are left out when they are None (no tests ran; the tests passed; no
few-shot examples were shown), so files written before a field existed still read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from tunelens.errors import UserError
from tunelens.io import atomic_write_text, read_jsonl_numbered

RESULTS_SCHEMA = 1
GREEDY, SAMPLED, REFERENCE = "greedy", "sampled", "reference"
KEY_FIELDS = ("suite", "case_id", "model", "decoding", "sample")


@dataclass(frozen=True)
class ResultRow:
    """One scored answer: the case, who answered and how, and what the checks found."""

    suite: str
    case_id: str
    type: str  # the case's query type
    expect: str  # code | pushback | refusal | other
    model: str  # base | tuned | reference
    decoding: str  # greedy | sampled | reference
    sample: int  # 0 for greedy and reference answers
    behaviour: str  # checks.classify: code | pushback | refusal | other
    as_expected: bool
    has_code: bool
    parses: bool | None  # None when there is no code
    python2: bool
    findings: tuple[dict, ...]  # tunelens.pycheck.check findings: {code, message, line}
    tests: str  # passed | failed | not-run | none
    test_reason: str | None
    prompt: str
    answer: str
    judged: str | None = None  # host | sandbox-apart; None when no tests ran
    test_stdout: str | None = None  # on a failure: the last 2,000 characters the answer printed
    bad: bool | None = None  # scoring.bad_output; None for pushback and refusal cases
    few_shot: tuple[dict, ...] | None = None  # examples shown before the prompt: {id, similarity}, in order

    @property
    def key(self) -> tuple:
        """What identifies an answer within one run directory (and what resuming skips on)."""
        return (self.suite, self.case_id, self.model, self.decoding, self.sample)

    def to_json(self) -> dict:
        """The row as written to results.jsonl (same keys, same order as schema 1 always had)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["findings"] = [dict(finding) for finding in self.findings]
        if self.few_shot is not None:
            data["few_shot"] = [dict(example) for example in self.few_shot]
        for name in _OMITTED_WHEN_NONE:
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_json(cls, data: object) -> ResultRow:
        """A row from one parsed line; ValueError saying which fields are missing, unknown or mistyped."""
        if not isinstance(data, dict):
            raise ValueError(f"a result line must be a JSON object, got {type(data).__name__}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"result line lacks field(s) {', '.join(missing)}")
        unknown = sorted(set(data) - set(_TYPES))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} (results schema {RESULTS_SCHEMA}, docs/eval.md)")
        for name, value in data.items():
            if not _has_type(value, _TYPES[name]):
                raise ValueError(f"field '{name}' must be {_type_names(_TYPES[name])}, got {type(value).__name__}")
        few_shot = tuple(data["few_shot"]) if data.get("few_shot") is not None else None
        return cls(**{**data, "findings": tuple(data["findings"]), "few_shot": few_shot})


_OMITTED_WHEN_NONE = ("judged", "test_stdout", "few_shot")
_TYPES = {f.name: f.type for f in fields(ResultRow)}
_REQUIRED = tuple(name for name in _TYPES if name not in _OMITTED_WHEN_NONE)
# The annotations are strings (postponed evaluation); checking against them needs real types.
_KINDS = {"str": (str,), "int": (int,), "bool": (bool,), "None": (type(None),), "tuple[dict, ...]": (list,)}


def _kinds(annotation: str) -> tuple[type, ...]:
    return tuple(kind for part in annotation.split(" | ") for kind in _KINDS[part])


def _has_type(value: object, annotation: str) -> bool:
    kinds = _kinds(annotation)
    if isinstance(value, bool) and bool not in kinds:  # JSON true is not a sample number
        return False
    if isinstance(value, list):
        return list in kinds and all(isinstance(item, dict) for item in value)
    return isinstance(value, kinds)


def _type_names(annotation: str) -> str:
    return annotation.replace("tuple[dict, ...]", "a list of objects").replace(" | ", " or ")


def read_result_rows(path: Path) -> list[ResultRow]:
    """Rows of results.jsonl. A last line cut off by a crash is dropped (and the file repaired);
    a bad line anywhere else is a UserError naming its line."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    numbered = read_jsonl_numbered(path, torn_tail=True)
    last = text.split("\n")[-1]
    if last.strip() and (not numbered or numbered[-1][0] != text.count("\n") + 1):
        # Written by a run that died mid-line: drop it so appending starts on a clean line.
        atomic_write_text(path, text[:len(text) - len(last)])
    rows = []
    for number, data in numbered:
        try:
            rows.append(ResultRow.from_json(data))
        except ValueError as err:
            raise UserError(f"{path}:{number}: {err}") from None
    return rows


def read_results(path: Path) -> list[dict]:
    """Rows of results.jsonl as plain dicts (the on-disk keys), validated like `read_result_rows`."""
    return [row.to_json() for row in read_result_rows(path)]


def results_text(rows: list[ResultRow]) -> str:
    return "".join(json.dumps(row.to_json(), ensure_ascii=False) + "\n" for row in rows)


def append_results(path: Path, rows: list[ResultRow]) -> None:
    """Append one batch's lines and fsync, so a crash loses at most the batch being written."""
    with open(path, "ab") as handle:
        handle.write(results_text(rows).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def write_results(path: Path, rows: list[ResultRow]) -> None:
    """The whole file at once (reference runs, which are never resumed)."""
    atomic_write_text(path, results_text(rows))
