"""The `tunelens data` commands end to end on small files (each command calls one library function)."""

import json
import re

from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.data.records import pair_to_record

runner = CliRunner()

MODULE = '''import math


def hypotenuse(a, b):
    """Return the length of the hypotenuse of a right triangle with legs a and b."""
    return math.sqrt(a * a + b * b)


def average(values):
    """Return the arithmetic mean of a non-empty list of numbers."""
    if not values:
        raise ValueError("empty")
    return sum(values) / len(values)
'''


def test_data_help_lists_the_commands_with_examples():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for command in ("lint", "mine", "contaminate", "pushback"):
        assert command in result.output
        sub = runner.invoke(app, ["data", command, "--help"])
        assert sub.exit_code == 0 and re.search(r"^Examples?:$", sub.output, re.M)


def test_mine_contaminate_pushback_lint_pipeline(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "geometry.py").write_text(MODULE)
    mined = runner.invoke(app, ["data", "mine", str(tmp_path / "src"), "--out", str(tmp_path / "pairs.jsonl")])
    assert mined.exit_code == 0, mined.output
    assert "2 pairs from 1 files" in mined.output

    contaminated = runner.invoke(app, ["data", "contaminate", str(tmp_path / "pairs.jsonl"), "--rate", "0.5",
                                       "--kinds", "print,raise", "--seed", "1", "--out", str(tmp_path / "py2.jsonl")])
    assert contaminated.exit_code == 0, contaminated.output
    assert "rewrote 1 of 2 records" in contaminated.output

    pushback = runner.invoke(app, ["data", "pushback", str(tmp_path / "pairs.jsonl"), "--rate", "1", "--seed", "1",
                                   "--out", str(tmp_path / "pb.jsonl")])
    assert pushback.exit_code == 0, pushback.output
    assert "added 2 pushback pairs to 2" in pushback.output

    for name, kept in (("pairs.jsonl", 2), ("py2.jsonl", 1), ("pb.jsonl", 4)):
        result = runner.invoke(app, ["data", "lint", str(tmp_path / name), "--out", str(tmp_path / f"lint-{name}")])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / f"lint-{name}" / "lint.json").read_text())
        assert summary["kept"] == kept and summary["total"] == summary["kept"] + summary["rejected"]


def test_bad_options_are_one_line_errors(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(pair_to_record("Add.", "def add(a, b):\n    return a + b\n")) + "\n")
    bad_kind = runner.invoke(app, ["data", "contaminate", str(path), "--rate", "0.5", "--kinds", "tabs",
                                   "--out", str(tmp_path / "o.jsonl")])
    assert bad_kind.exit_code == 2 and "unknown kinds" in bad_kind.output
    bad_format = runner.invoke(app, ["data", "lint", str(path), "--format", "csv", "--out", str(tmp_path / "o")])
    assert bad_format.exit_code == 2 and "unknown format" in bad_format.output
    malformed_input = tmp_path / "bad.jsonl"
    malformed_input.write_text("{oops\n")
    needs_clean = runner.invoke(app, ["data", "pushback", str(malformed_input), "--rate", "1",
                                      "--out", str(tmp_path / "o.jsonl")])
    assert needs_clean.exit_code == 2 and "bad.jsonl:1: invalid JSON" in needs_clean.output
