"""scripts/extraction_counts.py counts the answers that parse only because the judge extracts the entry point."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("extraction_counts", ROOT / "scripts" / "extraction_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(case_id: str, answer: str, parses: bool, tests: str) -> dict:
    return {"suite": "humaneval", "case_id": case_id, "type": "humaneval", "expect": "code", "model": "base",
            "decoding": "greedy", "sample": 0, "behaviour": "code", "as_expected": True, "has_code": True,
            "parses": parses, "python2": False, "findings": [], "tests": tests, "test_reason": None,
            "prompt": "", "answer": answer, "bad": tests != "passed"}


def test_only_answers_cut_in_their_trailing_prints_count(tmp_path):
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    whole = "```python\n" + body + "```\n"
    cut = "Here it is:\n```python\ndef has_close_elements(numbers, threshold):\n" + body + "\nprint(has_close("
    broken = "```python\ndef has_close_elements(numbers, threshold:\n    return 1\n```\n"
    rows = [_row("HumanEval/0", whole, True, "passed"), _row("HumanEval/0", cut, True, "passed"),
            _row("HumanEval/0", broken, False, "failed")]
    rows[1]["sample"], rows[2]["sample"] = 1, 2
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = _script().counts(tmp_path)
    assert counts == {"humaneval / base / greedy": {"answers with code": 3, "parse only by extraction": 1,
                                                    "of them pass their tests": 1}}
