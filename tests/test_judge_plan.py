"""Which tests are judged on the host, how their asserts are evaluated there, and the strict wire format."""

import ast

import pytest

from tunelens.evaluate.judge_plan import MAX_REPEAT, NotHostShape, evaluate, host_plan
from tunelens.evaluate.sandbox_boot import Malformed, _decode as decode, _encode as encode
from tunelens.evaluate.sandbox_boot import _Unserializable as NotPlain
from tunelens.evaluate.suite import load_suite


def plan(tests, entry_point="f"):
    return host_plan(tests, entry_point)


@pytest.mark.parametrize("tests", [
    "assert f(1) == 2",
    "assert f([1, 2], k=3) == {'a': (1, 2.5)}, 'message with f(9) is never run'",
    "assert f('x') is None\nassert not f(0)\nassert f(1) is True",
    "import math\nassert math.isclose(f(2), 1.41, rel_tol=1e-2)\nassert abs(f(3) - 1.7) < 0.1",
    "assert sorted(f(-1)) == [1, 2]\nassert len(f(2)) == 2 and f(3)[0] == 'a'\nassert f(4)[1:] == (2,)",
    "xs = [3, 1]\nassert f(xs) == [1, 3]\nassert xs == [3, 1]",
    "got = f(1)\nassert len(got) == 2\nassert g(got) == 0",
    "\n\nMETADATA = {'author': 'x'}\n\ndef check(candidate):\n    print\n    assert candidate(1) == 2\n    assert True\n",
])
def test_host_shapes(tests):
    assert not isinstance(plan(tests), NotHostShape), plan(tests)


@pytest.mark.parametrize("tests, why", [
    ("for x in range(3):\n    assert f(x) == x", "For statement"),
    ("try:\n    f(-1)\nexcept ValueError:\n    pass", "Try statement"),
    ("assert f(1).upper() == 'A'", "attribute"),
    ("assert len([x for x in f(1)]) == 2", "ListComp"),
    ("assert isinstance(f(1), list) and f(2) is f(2)", "'is' against"),
    ("assert f(1) ** 2 == 4", "** on an answer's result"),
    ("assert sum(range(f(1))) == 4", "range() of an answer's result"),
    ("assert len(bytes(f(1))) == 4", "bytes() of an answer's result"),
    ("assert f(g(1)) == 2", "computed from results"),
    ("def helper():\n    return 1\nassert f(1) == helper()", "FunctionDef"),
    ("assert print(1) is None", "not a function of the answer"),
    ("xs = [1]\nassert f(0) or f(xs)", "inside and/or"),
    ("assert f(range(3)) == 3", "not plain data: range"),
    ("assert f(undefined) == 1", "uses the name 'undefined'"),
    ("x = 1", "no asserts"),
])
def test_other_shapes_stay_in_the_sandbox(tests, why):
    result = plan(tests)
    assert isinstance(result, NotHostShape) and why in str(result), result


def test_probes_run_the_answer_and_nothing_else():
    result = plan("xs = [2]\nassert f(1, xs, k='v') == [1]\nassert g() == f(2)")
    assert [p.name for p in result.probes] == ["f", "g", "f"]
    assert result.probes[0].args == [["i", "0x1"], ["$", "xs"]] and result.probes[0].kwargs == [["k", ["s", "v"]]]
    assert result.wire()[0] == ["set", "xs", ["l", [["i", "0x2"]]]]
    # HumanEval's check(candidate) calls the entry point
    humaneval = host_plan("def check(candidate):\n    assert candidate(3) == 4\n", "inc")
    assert [p.name for p in humaneval.probes] == ["inc"]


def literal_shape(case) -> bool:
    """The issue's shape: every statement is `assert candidate(literals) == literal` (or f(...))."""
    tree = ast.parse(case.tests)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    body = checks[0].body if checks else tree.body
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.Name)):
            continue
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
                and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)
                and isinstance(node.test.left, ast.Call) and isinstance(node.test.left.func, ast.Name)):
            return False
        try:
            [ast.literal_eval(a) for a in node.test.left.args]
            ast.literal_eval(node.test.comparators[0])
        except ValueError:
            return False
    return True


@pytest.mark.parametrize("suite, host_at_least", [("humaneval", 158), ("code", 90)])
def test_every_literal_shaped_bundled_case_is_judged_on_the_host(suite, host_at_least):
    cases = [case for case in load_suite(suite) if case.expect == "code"]
    on_host = [case for case in cases if not isinstance(plan(case.tests, case.entry_point), NotHostShape)]
    literal = [case for case in cases if literal_shape(case)]
    assert len(literal) > 50
    assert {c.id for c in literal} <= {c.id for c in on_host}
    assert len(on_host) >= host_at_least


# ---------------------------------------------------------------------------------------------------
# Evaluating on the host


class FakeProbes:
    def __init__(self, values):
        self.values = values
        self.fetched = []

    def __getitem__(self, index):
        self.fetched.append(index)
        return self.values[index]

    def variable(self, name):
        raise KeyError(name)


def test_and_or_short_circuit_like_python():
    result = plan("assert f(1) == 0 and f(2) == 1")
    probes = FakeProbes([5, 1])
    assert evaluate(result.asserts[0].expr, probes) is False and probes.fetched == [0]


def test_the_host_refuses_to_build_huge_values_from_a_result():
    result = plan("assert f(1) * 'ab' == ''")
    with pytest.raises(MemoryError):
        evaluate(result.asserts[0].expr, FakeProbes([MAX_REPEAT]))


# ---------------------------------------------------------------------------------------------------
# The wire


@pytest.mark.parametrize("value", [None, True, 0, -(2 ** 100), 2.5, float("-inf"), "s\udc80", b"\x00",
                                   [1, [2]], (1,), {"k": (1, 2)}, {1, 2}, frozenset({3}), {(1, 2): None}])
def test_plain_values_round_trip_with_their_exact_types(value):
    back = decode(encode(value))
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    back = decode(encode(float("nan")))
    assert type(back) is float and back != back


@pytest.mark.parametrize("tagged", [
    "x", [], ["zz", 1], ["i", "12"], ["i", 12], ["i", "0x1", 2], ["f", "1" * 50], ["f", "pi"], ["B", 1],
    ["b", "0"], ["s", 5], ["l", "abc"], ["S", [["l", []]]], ["d", [[["l", []], ["n"]]]], ["d", [[["n"]]]],
    ["n", 1], ["t", [["q"]]], ["i", "-0x"], ["i", "0x1 "], ["A", "|O", [1], [["n"]]], ["A", "<f8", [2], [["s", "x"]]],
    ["A", "<f8", [3], [["f", "0x1p0"]]], ["A", "<f8", [-1], []],
])
def test_malformed_results_are_refused(tagged):
    with pytest.raises(Malformed):
        decode(tagged)


def test_nesting_is_bounded_both_ways():
    deep = ["n"]
    for _ in range(100):
        deep = ["l", [deep]]
    with pytest.raises(Malformed):
        decode(deep)
    value = None
    for _ in range(100):
        value = [value]
    with pytest.raises(NotPlain):
        encode(value)


def test_only_exact_types_are_sent():
    class Int(int):
        pass

    for value in (Int(1), object(), range(3), [Int(2)]):
        with pytest.raises(NotPlain):
            encode(value)


def test_numpy_arrays_and_scalars_cross_as_plain_data():
    np = pytest.importorskip("numpy")
    for value in (np.arange(6, dtype=np.int32).reshape(2, 3), np.array([0.5, np.inf]), np.array(True), np.zeros((0, 2))):
        back = decode(encode(value))
        assert type(back) is np.ndarray and back.dtype == value.dtype and np.array_equal(back, value)
    assert decode(encode(np.float64(2.5))) == 2.5 and type(decode(encode(np.int64(3)))) is int
    class Sub(np.ndarray):
        pass
    for value in (np.zeros(2).view(Sub), np.array([object()]), np.array(["a"])):
        with pytest.raises(NotPlain):
            encode(value)
