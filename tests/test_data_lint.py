"""`data lint`: what is kept, what is quarantined and why, and that the counts reconcile."""

import json
import random

from typer.testing import CliRunner

from tunelens.data.dedupe import Deduplicator, jaccard, shingles
from tunelens.data.lint import LintConfig, check_response, lint_file
from tunelens.data.records import pair_to_record

ADD = "def add(a, b):\n    return a + b\n"


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _quarantine(out):
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]


def test_counts_reconcile_and_reasons_are_recorded(tmp_path):
    records = [
        pair_to_record("Add two numbers.", ADD),                                    # 1 kept
        pair_to_record("Add two numbers.", ADD),                                    # 2 duplicate of 1
        pair_to_record("Greet.", "```python\nprint 'hi'\n```"),                    # 3 py2-print
        pair_to_record("Loop.", "for i in xrange(3):\n    pass\n"),                 # 4 py2-name
        pair_to_record("Broken.", "def f(:\n    pass\n"),                           # 5 syntax-error
        "{oops",                                                                    # 6 malformed
        pair_to_record("Bad spec.", "The text asks for ascending order but the example is descending. Which?"),  # 7 kept prose
    ]
    path = _write_jsonl(tmp_path / "pairs.jsonl", records)
    result = lint_file(path, tmp_path / "out")
    assert (result.total, result.kept, result.rejected) == (7, 2, 5)
    assert result.by_reason == {"duplicate": 1, "malformed": 1, "py2-name": 1, "py2-print": 1, "syntax-error": 1}
    summary = json.loads((tmp_path / "out" / "lint.json").read_text())
    assert summary["total"] == summary["kept"] + summary["rejected"] == 7
    quarantine = {entry["line"]: entry for entry in _quarantine(tmp_path / "out")}
    assert sorted(quarantine) == [2, 3, 4, 5, 6]
    assert quarantine[2]["reasons"][0]["code"] == "duplicate" and "line 1" in quarantine[2]["reasons"][0]["message"]
    assert quarantine[3]["reasons"] == [{"code": "py2-print", "message": quarantine[3]["reasons"][0]["message"],
                                         "line": 1}]
    assert quarantine[3]["record"] == records[2]
    assert quarantine[5]["reasons"][0]["code"] == "syntax-error" and quarantine[5]["reasons"][0]["line"] == 1
    assert quarantine[6]["raw"] == "{oops" and quarantine[6]["reasons"][0]["code"] == "malformed"
    report = (tmp_path / "out" / "lint.md").read_text()
    assert "| `py2-print` | 1 |" in report and "line 3" in report


def test_clean_file_keeps_records_byte_for_byte(tmp_path):
    lines = ['{"prompt": "Add.",   "completion": "def add(a, b):\\n    return a + b\\n", "extra": 1}',
             '{"completion": "x = [1, 2]\\n", "prompt": "List."}']
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    lint_file(path, tmp_path / "out")
    assert (tmp_path / "out" / "clean.jsonl").read_text() == "\n".join(lines) + "\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clean.jsonl", "lint.json", "lint.md",
                                                                    "quarantine.jsonl"]  # no temp files left


def test_a_rejected_record_does_not_shadow_its_clean_twin(tmp_path):
    py2 = pair_to_record("Show the total.", "def show(total):\n    print 'total', total\n")
    py3 = pair_to_record("Show the total.", "def show(total):\n    print('total', total)\n")
    result = lint_file(_write_jsonl(tmp_path / "p.jsonl", [py2, py3]), tmp_path / "out")
    assert (result.kept, result.by_reason) == (1, {"py2-print": 1})


def test_near_duplicates_are_kept_once(tmp_path):
    body = "\n".join(f"    total += values[{i}] * {i}" for i in range(30))
    first = pair_to_record("Weighted sum.", f"def weighted(values):\n    total = 0\n{body}\n    return total\n")
    second = pair_to_record("Weighted sum!", f"def weighted(values):\n    total = 0\n{body}\n    return total  # done\n")
    other = pair_to_record("Reverse a string.", "def rev(s):\n    return s[::-1]\n")
    path = _write_jsonl(tmp_path / "p.jsonl", [first, second, other])
    result = lint_file(path, tmp_path / "out")
    assert (result.kept, result.by_reason) == (2, {"near-duplicate": 1})
    strict = lint_file(path, tmp_path / "out2", LintConfig(near_duplicate_threshold=1.0))
    assert strict.kept == 3  # threshold 1.0: exact duplicates only


def test_lsh_near_duplicates_match_brute_force_jaccard():
    """The fast path (MinHash LSH candidates + exact Jaccard) against checking every earlier kept pair."""
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(60)]
    base_texts = [" ".join(rng.choice(vocabulary) for _ in range(80)) for _ in range(15)]
    texts = []
    for text in base_texts:
        texts.append(text)
        words = text.split()
        for edits in (1, 3, 25):  # near copies, and one far enough to be distinct
            copy = list(words)
            for _ in range(edits):
                copy[rng.randrange(len(copy))] = rng.choice(vocabulary)
            texts.append(" ".join(copy))
    threshold = 0.8
    dedupe = Deduplicator(threshold)
    fast, kept = [], []
    for index, text in enumerate(texts):
        match, state = dedupe.check("q", text)
        brute = any(jaccard(shingles("q\n" + text), shingles("q\n" + texts[k])) >= threshold for k in kept)
        fast.append(match is not None)
        if not brute:
            kept.append(index)
        if match is None:
            dedupe.add(index, state)
        assert (match is not None) == brute, f"text {index}"
    assert sum(fast) >= 20  # the test really exercises near duplicates


def test_leaks_against_a_plain_jsonl_of_eval_cases(tmp_path):
    prompt = "Write a function that returns the longest common prefix of a list of strings, or '' if none."
    reference = ("def longest_prefix(words):\n    if not words:\n        return ''\n    prefix = words[0]\n"
                 "    for word in words[1:]:\n        while not word.startswith(prefix):\n"
                 "            prefix = prefix[:-1]\n    return prefix\n")
    cases = _write_jsonl(tmp_path / "cases.jsonl", [{"id": "lcp", "prompt": prompt, "reference": reference}])
    records = [pair_to_record(prompt, "def f():\n    return 1\n"),                        # prompt leak
               pair_to_record("Prefix helper.", reference),                             # code leak
               pair_to_record("Add two numbers.", ADD)]                                 # no leak
    result = lint_file(_write_jsonl(tmp_path / "p.jsonl", records), tmp_path / "out",
                       LintConfig(against=(str(cases),)))
    assert (result.kept, result.by_reason) == (1, {"leak": 2})
    messages = [entry["reasons"][0]["message"] for entry in _quarantine(tmp_path / "out")]
    assert "instruction overlaps eval case lcp (prompt)" in messages[0]
    assert "code overlaps eval case lcp (reference)" in messages[1]


def test_check_response_ignores_prose_and_checks_fenced_code():
    assert check_response("I need more detail: should the list be sorted ascending or descending?") == []
    assert [f.code for f in check_response("Sure:\n```python\nx = 0777\n```")] == ["py2-octal"]


def test_cli_exit_status_and_strict(tmp_path):
    from tunelens.cli import app

    path = _write_jsonl(tmp_path / "p.jsonl", [pair_to_record("Add.", ADD), "not json"])
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "lint", str(path), "--out", str(tmp_path / "o1")])
    assert ok.exit_code == 0, ok.output
    assert "1 kept" in ok.output and "1 malformed" in ok.output
    strict = runner.invoke(app, ["data", "lint", str(path), "--out", str(tmp_path / "o2"), "--strict"])
    assert strict.exit_code == 1
    missing = runner.invoke(app, ["data", "lint", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o3")])
    assert missing.exit_code == 2 and "no such file" in missing.output


# ---------------------------------------------------------------- bad input (issue 13): every case ends with
# total == kept + rejected, one reason per quarantined record, and all four outputs written.


def _lint_reconciles(path, out):
    result = lint_file(path, out)
    assert result.total == result.kept + result.rejected
    for name in ("clean.jsonl", "quarantine.jsonl", "lint.json", "lint.md"):
        assert (out / name).is_file(), name
    quarantine = _quarantine(out)
    assert len(quarantine) == result.rejected and all(entry["reasons"] for entry in quarantine)
    clean = (out / "clean.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(clean) == result.kept
    return result, quarantine


def test_a_5000_digit_integer_is_quarantined_not_a_traceback(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [pair_to_record("Add.", ADD),
                                               '{"prompt": "p", "completion": "c", "n": ' + "9" * 5000 + "}"])
    result, [entry] = _lint_reconciles(path, tmp_path / "out")
    assert (result.total, result.kept, result.rejected) == (2, 1, 1)
    assert entry["line"] == 2 and "4,300" in entry["reasons"][0]["message"]


def test_a_lone_surrogate_in_a_kept_or_rejected_record(tmp_path):
    # Line 2 would be kept but for the surrogate in its text (dedupe used to crash on it); line 3 is
    # rejected for Python 2 and carries a surrogate in another field (the quarantine write used to crash).
    surrogate_text = '{"prompt": "Add \\ud800.", "completion": "def add(a, b):\\n    return a + b\\n"}'
    rejected = '{"prompt": "Greet.", "completion": "print \'hi\'\\n", "note": "\\udfff"}'
    first = {"prompt": "Sub.", "completion": "def sub(a, b):\n    return a - b\n"}
    path = _write_jsonl(tmp_path / "p.jsonl", [first, surrogate_text, rejected])
    result, quarantine = _lint_reconciles(path, tmp_path / "out")
    assert (result.total, result.kept, result.rejected) == (3, 1, 2)
    by_line = {entry["line"]: entry for entry in quarantine}
    assert "lone surrogate U+D800" in by_line[2]["reasons"][0]["message"]
    assert "'prompt'" in by_line[2]["reasons"][0]["message"]
    assert by_line[3]["reasons"][0]["code"] == "py2-print" and by_line[3]["record"]["note"] == "\udfff"


def test_cr_only_line_endings_are_four_records_not_one(tmp_path):
    records = [json.dumps(pair_to_record(f"Task {i}.", f"def f{i}():\n    return {i}\n")) for i in range(4)]
    path = tmp_path / "cr.jsonl"
    path.write_bytes("\r".join(records).encode("utf-8") + b"\r")
    result, _ = _lint_reconciles(path, tmp_path / "out")
    assert (result.total, result.kept, result.rejected) == (4, 4, 0)
    mixed = tmp_path / "mixed.jsonl"  # CRLF, CR and LF in one file
    mixed.write_bytes((records[0] + "\r\n" + records[1] + "\r" + records[2] + "\n" + records[3]).encode("utf-8"))
    assert lint_file(mixed, tmp_path / "out2").kept == 4


def test_a_utf16_file_with_bom_is_three_records_not_four(tmp_path):
    records = [json.dumps(pair_to_record(f"Task {i}.", f"def f{i}():\n    return {i}\n"), ensure_ascii=False)
               for i in range(3)]
    for encoding in ("utf-16", "utf-16-be", "utf-32"):
        path = tmp_path / f"{encoding}.jsonl"
        codec = {"utf-16": "utf-16-le", "utf-16-be": "utf-16-be", "utf-32": "utf-32-le"}[encoding]
        path.write_bytes(("\ufeff" + "\r\n".join(records) + "\r\n").encode(codec))
        result, _ = _lint_reconciles(path, tmp_path / f"out-{encoding}")
        assert (result.total, result.kept, result.rejected) == (3, 3, 0), encoding
        assert (tmp_path / f"out-{encoding}" / "clean.jsonl").read_text(encoding="utf-8").splitlines() == records


def test_later_records_with_a_kept_id_are_quarantined_naming_the_first_line(tmp_path):
    records = [pair_to_record(f"Task {i}.", f"def f{i}():\n    return {i}\n", id="same") for i in range(3)]
    path = _write_jsonl(tmp_path / "p.jsonl", records)
    result, quarantine = _lint_reconciles(path, tmp_path / "out")
    assert (result.total, result.kept, result.rejected) == (3, 1, 2)
    assert result.by_reason == {"duplicate-id": 2}
    assert [entry["line"] for entry in quarantine] == [2, 3]
    assert all("kept record on line 1" in entry["reasons"][0]["message"] for entry in quarantine)


def test_an_id_of_a_rejected_record_stays_free(tmp_path):
    records = [pair_to_record("Greet.", "print 'hi'\n", id="x"), pair_to_record("Greet.", "print('hi')\n", id="x")]
    result, [entry] = _lint_reconciles(_write_jsonl(tmp_path / "p.jsonl", records), tmp_path / "out")
    assert (result.kept, entry["line"], entry["reasons"][0]["code"]) == (1, 1, "py2-print")


def test_every_assistant_turn_is_checked_and_named(tmp_path):
    record = {"messages": [{"role": "user", "content": "Greet."}, {"role": "assistant", "content": "print 'hi'\n"},
                           {"role": "user", "content": "Now add."}, {"role": "assistant", "content": ADD}]}
    result, [entry] = _lint_reconciles(_write_jsonl(tmp_path / "p.jsonl", [record]), tmp_path / "out")
    assert result.rejected == 1
    assert entry["reasons"][0]["code"] == "py2-print" and entry["reasons"][0]["turn"] == 1
    assert entry["reasons"][0]["message"].startswith("assistant turn 1:")


def test_conversations_are_duplicates_only_when_every_turn_repeats(tmp_path):
    def convo(first_question):
        return {"messages": [{"role": "user", "content": first_question}, {"role": "assistant", "content": ADD},
                             {"role": "user", "content": "Now subtract."},
                             {"role": "assistant", "content": "def sub(a, b):\n    return a - b\n"}]}
    records = [convo("Add two numbers."), convo("Write a completely different opening request about strings."),
               convo("Add two numbers.")]
    result, [entry] = _lint_reconciles(_write_jsonl(tmp_path / "p.jsonl", records), tmp_path / "out")
    assert (result.kept, entry["line"], entry["reasons"][0]["code"]) == (2, 3, "duplicate")


def test_lint_reads_parquet_and_writes_its_rows_as_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "Add.", "completion": ADD}, {"prompt": "Greet.", "completion": "print 'hi'\n"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    result, [entry] = _lint_reconciles(tmp_path / "pairs.parquet", tmp_path / "out")
    assert (result.kept, entry["line"]) == (1, 2)
    assert json.loads((tmp_path / "out" / "clean.jsonl").read_text()) == rows[0]


def test_out_naming_an_existing_file_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from tunelens.cli import app

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "completion": "c"}\n')
    taken = tmp_path / "lint.txt"
    taken.write_text("not a directory")
    for out, says in ((taken, "is a file"), (taken / "sub", f"cannot be made: {taken} is a file")):
        result = CliRunner().invoke(app, ["data", "lint", str(pairs), "--out", str(out)])
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and says in lines[0], result.output
    assert taken.read_text() == "not a directory"
