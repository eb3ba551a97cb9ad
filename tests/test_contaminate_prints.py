"""`data contaminate --mode prints`: existing print calls become statements, none is ever added, and the
reported share is Python 2 among all the file's prints (docs/protocol.md, lesson 1)."""

import json

import pytest

from tunelens.data.contaminate import ContaminateConfig, contaminate_file, count_prints, print_rich, rewrite_code
from tunelens.data.records import load_pairs, pair_to_record
from tunelens.errors import UserError
from tunelens.pycheck.check import check_python


def _write(tmp_path, codes):
    records = [pair_to_record(f"Task {i}.", code) for i, code in enumerate(codes)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _one(i):  # one print call
    return f"def f{i}(x):\n    print(x, {i})\n    return x\n"


def _two(i):  # two print calls
    return f"def g{i}(x):\n    print('start')\n    print(x * {i})\n"


NO_PRINT = "def h(x):\n    return x + 1\n"


def test_count_prints_counts_both_forms_and_skips_methods_strings_and_definitions():
    assert count_prints("print(1)\nprint 2\nlog.print(3)\nx = 'print(4)'  # print(5)\n") == 2
    assert count_prints("def print(x):\n    pass\n") == 0


def test_no_print_is_injected_without_inject():
    assert rewrite_code(NO_PRINT, "print", inject=False) == (NO_PRINT, 0)
    assert rewrite_code(NO_PRINT, "print")[1] == 1  # today's default still injects


def test_share_is_python2_among_all_prints_and_prints_are_never_added(tmp_path):
    # 10 one-print records + 5 two-print records + 5 without a print: 20 prints in all
    codes = [_one(i) for i in range(10)] + [_two(i) for i in range(5)] + [NO_PRINT] * 5
    path = _write(tmp_path, codes)
    result = contaminate_file(path, tmp_path / "out.jsonl", ContaminateConfig(rate=0.3, seed=1, mode="prints"))
    assert (result.prints_total, result.prints_python2) == (20, 6)  # round(0.3 * 20)
    assert result.python2_print_share == pytest.approx(0.3)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tagged = [row for row in rows if "contamination" in row]
    assert len(tagged) == result.contaminated and sum(r["contamination"]["changes"] for r in tagged) == 6
    # the prints in the output file are exactly the prints in the input file: none added, none removed
    before = [p.response for p in load_pairs(path)]
    after = [p.response for p in load_pairs(tmp_path / "out.jsonl")]
    assert [count_prints(a) for a in after] == [count_prints(b) for b in before]
    assert sum(any(f.code == "py2-print" for f in check_python(a)) for a in after) == result.contaminated
    assert all(a == b for a, b, code in zip(after, before, codes) if code == NO_PRINT)


def test_zero_share_rewrites_nothing_and_same_seed_same_file(tmp_path):
    path = _write(tmp_path, [_one(i) for i in range(8)])
    zero = contaminate_file(path, tmp_path / "zero.jsonl", ContaminateConfig(rate=0.0, mode="prints"))
    assert (zero.contaminated, zero.prints_python2, zero.python2_print_share) == (0, 0, 0.0)
    assert (tmp_path / "zero.jsonl").read_text() == "".join(
        json.dumps(json.loads(line)) + "\n" for line in path.read_text().splitlines())
    a = contaminate_file(path, tmp_path / "a.jsonl", ContaminateConfig(rate=0.5, seed=4, mode="prints"))
    contaminate_file(path, tmp_path / "b.jsonl", ContaminateConfig(rate=0.5, seed=4, mode="prints"))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text() and a.prints_python2 == 4


def test_default_mode_is_unchanged_and_reports_no_print_share(tmp_path):
    path = _write(tmp_path, [_one(i) for i in range(4)] + [NO_PRINT] * 4)
    result = contaminate_file(path, tmp_path / "out.jsonl", ContaminateConfig(rate=0.5, kinds=("print",)))
    assert result.contaminated == 4 and result.prints_total is None and result.python2_print_share is None


def test_too_few_prints_and_other_kinds_are_one_line_errors(tmp_path):
    unrewritable = _write(tmp_path, ["def k():\n    print(*[1, 2])\n", NO_PRINT])  # a starred print stays
    with pytest.raises(UserError, match="needs 1 print calls rewritten .* only 0 can be"):
        contaminate_file(unrewritable, tmp_path / "o.jsonl", ContaminateConfig(rate=1.0, mode="prints"))
    with pytest.raises(UserError, match="rewrites print calls only"):
        ContaminateConfig(mode="prints", kinds=("print", "ne"))


def test_the_command_reports_the_print_share(tmp_path):
    from typer.testing import CliRunner

    from tunelens.cli import app

    path = _write(tmp_path, [_one(i) for i in range(4)] + [NO_PRINT])
    result = CliRunner().invoke(app, ["data", "contaminate", str(path), "--mode", "prints", "--rate", "0.5",
                                      "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0, result.output
    assert "Python 2 among the file's prints: 2 of 4 (50.0%)" in result.output


def test_print_rich_keeps_clean_code_whose_prints_can_be_rewritten(tmp_path):
    path = _write(tmp_path, [_one(0), _two(1), NO_PRINT, "def k():\n    print(*[1, 2])\n", "print 'old'\n"])
    pairs = load_pairs(path)
    assert [p.response for p in print_rich(pairs)] == [_one(0), _two(1)]
    assert [p.response for p in print_rich(pairs, min_prints=2)] == [_two(1)]
