"""`data lint`: split a pairs file into clean.jsonl and quarantine.jsonl, explaining every rejection.

Each record goes through, in order: reading (anything unreadable -> `malformed`), the id check (an id a
kept record has -> `duplicate-id`), the code check of every trained assistant turn (Python 2 idioms ->
`py2-*`, other parser errors -> `syntax-error`), the leak check against eval cases (`leak`), then exact
and near duplicates (`duplicate`, `near-duplicate`). Only kept records enter the id and duplicate
indexes, so a good pair is never dropped as the copy of a rejected one; total == kept + rejected.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelens.config import configclass, option
from tunelens.data.dedupe import Deduplicator
from tunelens.data.leaks import LeakIndex, load_eval_texts
from tunelens.pycheck.check import Finding, check_python, extract_code, has_fenced_code, looks_like_code
from tunelens.errors import UserError
from tunelens.io import atomic_write_json, atomic_write_text
from tunelens.data.records import (FORMATS, MAX_RECORD_BYTES, Malformed, Pair, json_line, read_pairs, record_text)
from tunelens.runtime import Progress

EXAMPLES_PER_REASON = 5


@configclass
class LintConfig:
    """Options of `data lint`: each field is one of its flags and a key of its --config YAML file."""

    fmt: str = option("auto", f"Record format: auto (detected) or one of {', '.join(FORMATS)} "
                                 "(chat includes multi-turn; prompt-completion takes strings or TRL message lists).",
                         flag="--format")
    near_duplicate_threshold: float = option(0.85, "Word 3-gram Jaccard similarity at which two pairs are near "
                                                   "duplicates (1 = exact only).", min=0.01, max=1.0,
                                             flag="--near-dup-threshold")
    against: tuple[str, ...] = option((), "Eval suite names or files (comma-separated or repeated) whose cases must "
                                          "not leak into training.")
    leak_threshold: float = option(0.5, "Share of the shorter text's n-grams shared with an eval case that makes a "
                                        "leak.", min=0.01, max=1.0)
    leak_ngram: int = option(8, "n of the word n-grams compared for leaks.", min=1, max=64)
    max_record_mb: float = option(MAX_RECORD_BYTES / 1_000_000, "Longer records are quarantined as malformed.",
                                  min=0.001)

    def validate(self) -> None:
        # Not declared as choices: that error would name the field `fmt`, not the --format flag people type.
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise UserError(f"unknown format {self.fmt!r}: use auto, {', '.join(FORMATS)}")

    @property
    def max_record_bytes(self) -> int:
        return int(self.max_record_mb * 1_000_000)


@dataclass(frozen=True)
class LintResult:
    total: int
    kept: int
    rejected: int
    by_reason: dict[str, int]  # records per reason code; a record with two reasons counts under both
    malformed: int  # the warning count: records that could not be read at all
    clean_path: Path
    quarantine_path: Path
    summary_path: Path
    report_path: Path
    seconds: float
    examples: dict[str, list[dict]] = field(default_factory=dict, repr=False)


def check_response(response: str) -> list[Finding]:
    """Findings for a completion's code: fenced blocks, or the whole text when it is code; prose
    (a pushback answer, say) has no code to check."""
    if has_fenced_code(response) or looks_like_code(response):
        return check_python(extract_code(response))
    return []


def lint_file(in_path: str | Path, out_dir: str | Path, config: LintConfig = LintConfig(),
              progress: Progress | None = None) -> LintResult:
    """Lint one JSONL file or dataset directory; write clean.jsonl, quarantine.jsonl, lint.json and lint.md
    into out_dir (each atomically). `progress("linting", records done, 0)` follows the records (their
    number is not known before the end: records are read as a stream)."""
    started = time.perf_counter()
    in_path, out_dir = Path(in_path), Path(out_dir)
    check_out_dir(out_dir)
    leak_index = LeakIndex(load_eval_texts(config.against), config.leak_ngram, config.leak_threshold) \
        if config.against else None
    linter = _Linter(config, leak_index)
    clean_lines: list[str] = []
    quarantine: list[dict] = []
    for item in read_pairs(in_path, config.fmt, config.max_record_bytes):
        entry = linter.judge(item)
        if entry is None:
            clean_lines.append(record_text(item))
        else:
            quarantine.append(entry)
        if progress is not None:
            progress("linting", len(clean_lines) + len(quarantine), 0)
    return _write_outputs(in_path, out_dir, config, clean_lines, quarantine, time.perf_counter() - started,
                          leak_cases=len({t.case_id for t in leak_index.texts}) if leak_index else 0)


def check_out_dir(out_dir: Path) -> None:
    """Before any reading: --out names a directory (made if missing); a file there, or a file in the
    way of making it, is a one-line error rather than a traceback after the whole input was read."""
    for path in (out_dir, *out_dir.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out_dir else f"cannot be made: {path} is a file"
                raise UserError(f"--out {out_dir}: {what}; --out names a directory for clean.jsonl, "
                                "quarantine.jsonl, lint.json and lint.md")
            return


class _Linter:
    def __init__(self, config: LintConfig, leak_index: LeakIndex | None):
        self.config = config
        self.leak_index = leak_index
        self.dedupe = Deduplicator(config.near_duplicate_threshold)
        self.kept_ids: dict[str, int] = {}  # explicit id -> line of the kept record that has it

    def judge(self, item: Pair | Malformed) -> dict | None:
        """None when the record is kept, else its quarantine entry."""
        if isinstance(item, Malformed):
            return {"line": item.line, "reasons": [_reason("malformed", item.message, None)], "raw": item.raw_text}
        reasons = self._id_reasons(item) + check_turns(item)
        leak = self._leak(item)
        if leak:
            reasons.append(_reason("leak", leak, None))
        if reasons:
            return _entry(item, reasons)
        match, state = self.dedupe.check(*_dedupe_texts(item))
        if match is not None:
            how = "same instruction and response as" if match.kind == "duplicate" else \
                f"{match.similarity:.0%} similar (word 3-gram Jaccard) to"
            return _entry(item, [_reason(match.kind, f"{how} the kept record on line {match.of_key}", None)])
        self.dedupe.add(item.line, state)
        if "id" in item.raw:
            self.kept_ids[item.id] = item.line
        return None

    def _id_reasons(self, pair: Pair) -> list[dict]:
        """A later record reusing a kept record's id would make every id-keyed lookup (eval splits,
        gate neighbours, provenance) ambiguous. Ids derived from content are left to the duplicate check."""
        first = self.kept_ids.get(pair.id) if "id" in pair.raw else None
        message = f"id {pair.id!r} is already used by the kept record on line {first}"
        return [] if first is None else [_reason("duplicate-id", message, None)]

    def _leak(self, pair: Pair) -> str | None:
        if self.leak_index is None:
            return None
        texts = {"instruction": "\n\n".join(pair.user_texts),
                 "code": "\n\n".join(extract_code(text) for text in pair.assistant_texts)}
        leak = self.leak_index.find(texts)
        return leak.message(self.config.leak_ngram) if leak else None


def check_turns(pair: Pair) -> list[dict]:
    """Findings for the code of every trained assistant turn (or a text record's text); in a multi-turn
    record each finding names its turn."""
    texts = pair.assistant_texts
    reasons = []
    for number, text in enumerate(texts, start=1):
        for finding in check_response(text):
            reason = finding.to_dict()
            if len(texts) > 1:
                reason["turn"] = number
                reason["message"] = f"assistant turn {number}: {reason['message']}"
            reasons.append(reason)
    return reasons


def _dedupe_texts(pair: Pair) -> tuple[str, str]:
    """(prompt side, answer side) compared for duplicates: for one exchange its instruction and response,
    for a conversation every user turn and every assistant turn."""
    if len(pair.conversation) <= 2:
        return pair.instruction, pair.response
    return ("\n\n".join(pair.user_texts),
            "\n\n".join(t.content for t in pair.conversation if t.role == "assistant"))


def _reason(code: str, message: str, line: int | None) -> dict:
    return {"code": code, "message": message, "line": line}


def _entry(pair: Pair, reasons: list[dict]) -> dict:
    return {"line": pair.line, "id": pair.id, "reasons": reasons, "record": pair.raw}


def _write_outputs(in_path: Path, out_dir: Path, config: LintConfig, clean_lines: list[str],
                   quarantine: list[dict], seconds: float, leak_cases: int) -> LintResult:
    by_reason: Counter = Counter()
    examples: dict[str, list[dict]] = {}
    for entry in quarantine:
        for code in dict.fromkeys(reason["code"] for reason in entry["reasons"]):
            by_reason[code] += 1
            if len(examples.setdefault(code, [])) < EXAMPLES_PER_REASON:
                first = next(r for r in entry["reasons"] if r["code"] == code)
                examples[code].append({"line": entry["line"], "id": entry.get("id"), "message": first["message"],
                                       "code_line": first["line"]})
    total = len(clean_lines) + len(quarantine)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_path, quarantine_path = out_dir / "clean.jsonl", out_dir / "quarantine.jsonl"
    atomic_write_text(clean_path, "".join(line + "\n" for line in clean_lines))
    # json_line, not plain json.dumps: one lone surrogate in a rejected record must not lose the whole file
    atomic_write_text(quarantine_path, "".join(json_line(entry) + "\n" for entry in quarantine))
    result = LintResult(total=total, kept=len(clean_lines), rejected=len(quarantine),
                        by_reason=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
                        malformed=by_reason.get("malformed", 0), clean_path=clean_path,
                        quarantine_path=quarantine_path, summary_path=out_dir / "lint.json",
                        report_path=out_dir / "lint.md", seconds=seconds, examples=examples)
    summary = {"input": str(in_path), "total": result.total, "kept": result.kept, "rejected": result.rejected,
               "by_reason": result.by_reason, "malformed": result.malformed, "seconds": round(seconds, 3),
               "config": {**asdict(config), "against": list(config.against)}, "leak_cases": leak_cases}
    atomic_write_json(result.summary_path, summary)
    atomic_write_text(result.report_path, render_report(in_path, result, config))
    return result


_REASON_TEXT = {
    "malformed": "could not be read as a pair",
    "syntax-error": "code that Python 3 cannot parse (not a Python 2 idiom)",
    "duplicate": "exact copy of a kept record", "duplicate-id": "reuses the id of a kept record",
    "near-duplicate": "near copy of a kept record", "leak": "overlaps an eval case",
    "py2-print": "Python 2 print statement", "py2-except": "`except E, e`", "py2-backtick": "backtick repr",
    "py2-ne": "`<>` operator", "py2-octal": "old octal literal", "py2-ur-string": "`ur''` string",
    "py2-long": "long literal `10L`", "py2-exec": "exec statement", "py2-raise": "`raise E, msg`",
    "py2-tuple-params": "tuple parameters", "py2-name": "Python 2-only name",
}


def render_report(in_path: Path, result: LintResult, config: LintConfig) -> str:
    """lint.md: the counts, then a few examples per reason, so a human can see why records were dropped."""
    lines = [f"# Lint report: `{in_path}`", "",
             f"- total records: **{result.total}**", f"- kept: **{result.kept}** (`{result.clean_path.name}`)",
             f"- rejected: **{result.rejected}** (`{result.quarantine_path.name}`)",
             f"- malformed (warnings): {result.malformed}",
             f"- near-duplicate threshold {config.near_duplicate_threshold}; leak check: "
             + (f"{config.leak_ngram}-grams, threshold {config.leak_threshold}, against {', '.join(config.against)}"
                if config.against else "off (no --against)"),
             f"- time: {result.seconds:.1f} s", ""]
    if result.by_reason:
        lines += ["| reason | records | meaning |", "|---|---:|---|"]
        lines += [f"| `{code}` | {count} | {_REASON_TEXT.get(code, '')} |" for code, count in result.by_reason.items()]
        lines += ["", "A record with several reasons is counted under each, so this column can add up to more "
                      "than the rejected count.", ""]
        for code, examples in result.examples.items():
            lines += [f"## `{code}`", ""]
            for example in examples:
                where = f", code line {example['code_line']}" if example["code_line"] else ""
                ident = f" `{example['id']}`" if example["id"] else ""
                lines.append(f"- line {example['line']}{ident}{where}: {_one_line(example['message'])}")
            lines.append("")
    else:
        lines.append("Nothing rejected.")
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
