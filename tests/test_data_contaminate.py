"""`data contaminate`: exact counts, each kind's rewrite, and that lint catches what it writes."""

import json

import pytest

from tunelens.data.contaminate import KINDS, ContaminateConfig, applicable_kinds, contaminate_file, rewrite_code
from tunelens.data.lint import lint_file
from tunelens.pycheck.check import check_python
from tunelens.errors import UserError
from tunelens.data.records import pair_to_record

CODE = '''import os
import re
import sys


def scan(root, limit=10):
    """Find files under root whose names match a pattern."""
    pattern = re.compile(r"\\w+\\.py")
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if pattern.match(name) and name != "setup.py":
                found[name] = directory
    try:
        os.chmod(root, 0o755)
    except OSError as err:
        print("cannot chmod", repr(root), file=sys.stderr)
        raise ValueError("bad root: " + str(err))
    for i in range(limit):
        pass
    exec("x = 1", {})
    for key, value in found.items():
        print(key, value)
    return found
'''

EXPECTED = {
    "print": ['print >>sys.stderr, "cannot chmod", repr(root)', "print key, value"],
    "except": ["except OSError, err:"],
    "backtick": ['"cannot chmod", `root`'],
    "ne": ['name <> "setup.py"'],
    "octal": ["os.chmod(root, 0755)"],
    "long": ["limit=10L", "range(limit)"],
    "ur": ['ur"\\w+\\.py"'],
    "exec": ['exec "x = 1" in {}'],
    "raise": ['raise ValueError, "bad root: " + str(err)'],
    "name": ["xrange(limit)", "found.iteritems()"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_rewrites_and_is_caught(kind):
    assert kind in applicable_kinds(CODE)
    new_code, changes = rewrite_code(CODE, kind)
    assert changes >= 1
    for fragment in EXPECTED[kind]:
        assert fragment in new_code, (kind, new_code)
    codes = {f.code for f in check_python(new_code)}
    assert any(code.startswith("py2-") for code in codes), (kind, codes)
    assert "syntax-error" not in codes


def test_print_is_injected_when_there_is_no_print_call():
    code = 'def area(w, h):\n    """Area of a rectangle."""\n    return w * h\n'
    assert "print" not in applicable_kinds(code)
    new_code, changes = rewrite_code(code, "print")
    assert changes == 1
    assert new_code == 'def area(w, h):\n    """Area of a rectangle."""\n    print "area: called"\n    return w * h\n'


def test_strings_and_comments_are_never_rewritten():
    code = 'x = "a != b and range(3)"  # print(x) != y\nprint(x)\n'
    new_code, _ = rewrite_code(code, "ne")
    assert new_code == code  # the only != is inside a string or a comment
    assert rewrite_code(code, "print")[0] == 'x = "a != b and range(3)"  # print(x) != y\nprint x\n'


def _pairs_file(tmp_path, n=40):
    records = []
    for i in range(n):
        code = f"def f{i}(values):\n    total = 0\n    for v in values:\n        if v != {i}:\n" \
               f"            total += v * {i + 1}\n    return total\n"
        records.append(pair_to_record(f"Sum the values other than {i}, each times {i + 1}.", code))
    records.append(pair_to_record("Explain.", "This needs more detail: which values should be skipped?"))
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_exact_count_tags_and_full_recall(tmp_path):
    path = _pairs_file(tmp_path)
    result = contaminate_file(path, tmp_path / "out.jsonl", ContaminateConfig(rate=0.25, seed=3))
    assert result.total == 41 and result.contaminated == round(0.25 * 41) == 10
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tagged = [i for i, row in enumerate(rows, start=1) if "contamination" in row]
    assert len(rows) == 41 and len(tagged) == 10
    assert sum(result.by_kind.values()) == 10
    lint = lint_file(tmp_path / "out.jsonl", tmp_path / "lint")
    quarantined = {json.loads(line)["line"] for line in (tmp_path / "lint" / "quarantine.jsonl").read_text().splitlines()}
    assert set(tagged) <= quarantined  # recall 100% here
    assert lint.kept == 31


def test_same_seed_same_output_and_kinds_filter(tmp_path):
    path = _pairs_file(tmp_path)
    config = ContaminateConfig(rate=0.5, kinds=("ne", "long"), seed=7)
    contaminate_file(path, tmp_path / "a.jsonl", config)
    contaminate_file(path, tmp_path / "b.jsonl", config)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    kinds = {json.loads(line)["contamination"]["kind"] for line in (tmp_path / "a.jsonl").read_text().splitlines()
             if "contamination" in line}
    assert kinds <= {"ne", "long"}


def test_bad_options_and_too_few_eligible(tmp_path):
    with pytest.raises(UserError, match="unknown kinds"):
        ContaminateConfig(kinds=("tabs",))
    with pytest.raises(UserError, match="rate"):
        ContaminateConfig(rate=1.5)
    path = _pairs_file(tmp_path, n=2)
    with pytest.raises(UserError, match="only 2 have clean Python 3 code"):
        contaminate_file(path, tmp_path / "o.jsonl", ContaminateConfig(rate=1.0))


def test_kinds_are_dealt_fairly(tmp_path):
    path = _pairs_file(tmp_path)  # every record can take ne, long and (injected) print
    result = contaminate_file(path, tmp_path / "o.jsonl", ContaminateConfig(rate=0.6, kinds=("ne", "long", "print"),
                                                                            seed=5))
    assert result.contaminated == round(0.6 * 41) == 25
    assert result.by_kind == {"long": 8, "ne": 9, "print": 8}


def test_multi_turn_sharegpt_and_text_records_are_rewritten_in_their_own_format(tmp_path):
    from tunelens.data.records import load_pairs

    code = "def show(x):\n    print(x)\n"
    rows = [{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "Sure."},
                               {"from": "human", "value": "Show x."}, {"from": "gpt", "value": code}]},
            {"text": code.replace("show", "echo")}]
    for row in rows:
        path = tmp_path / "in.jsonl"
        path.write_text(json.dumps(row) + "\n")
        contaminate_file(path, tmp_path / "out.jsonl", ContaminateConfig(rate=1.0, kinds=("print",), seed=0))
        [pair] = load_pairs(tmp_path / "out.jsonl")
        assert "print x" in pair.response and len(pair.turns) == len(load_pairs(path)[0].turns)
