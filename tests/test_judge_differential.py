"""Differential judging: the reference's outputs on the tests' calls as the expected values."""

import math

import pytest

from judge_forgeries import OMNI
from tunelens.evaluate.judge import FLOAT_TOLERANCE, Case, agrees, judge, judged_by
from tunelens.evaluate.judge_plan import NotHostShape, host_plan, pinned
from tunelens.evaluate.sandbox import Limits, sandbox_isolation
from tunelens.evaluate.suite import load_suite

LIMITS = Limits(wall_s=6)
needs_sandbox = pytest.mark.skipif(sandbox_isolation() == "none", reason="no sandbox on this host")
# The expected values are nowhere in the tests: only the reference knows them.
REFERENCE = "def collatz_steps(n):\n    steps = 0\n    while n != 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n" \
            "        steps += 1\n    return steps\n"
OPTED_IN = Case(tests="collatz_steps(27)\ncollatz_steps(97)\n", entry_point="collatz_steps", reference=REFERENCE,
                differential=True)


@needs_sandbox
def test_a_case_whose_expected_values_only_the_reference_knows_is_judged_right_and_wrong():
    assert judge(OPTED_IN, REFERENCE.replace("steps = 0", "steps = 0  # mine"), LIMITS).passed
    wrong = judge(OPTED_IN, REFERENCE.replace("return steps", "return steps + 1"), LIMITS)
    assert not wrong.passed and wrong.reason == "differs-from-reference" and "line 1" in wrong.detail
    as_float = judge(OPTED_IN, REFERENCE.replace("return steps", "return float(steps)"), LIMITS)
    assert as_float.reason == "differs-from-reference"  # exact types
    assert judged_by(OPTED_IN) == "differential" and judge(OPTED_IN, REFERENCE, LIMITS).passed


@needs_sandbox
def test_a_wrong_answer_returning_a_forged_object_still_fails():
    forged = judge(OPTED_IN, OMNI + "def collatz_steps(n):\n    return Omni()\n", LIMITS)
    assert not forged.passed and forged.reason.startswith("not-plain")
    pinned_case = Case(tests="assert collatz_steps(27) == 111\n", entry_point="collatz_steps", reference=REFERENCE)
    assert judged_by(pinned_case) == "pinned"
    assert not judge(pinned_case, OMNI + "def collatz_steps(n):\n    return Omni()\n", LIMITS).passed


@needs_sandbox
def test_a_pinned_case_is_judged_by_its_asserts_as_the_official_harness_would():
    # 111.0 == 111 holds, so HumanEval's own harness passes this answer; a pinned case (not opted in) keeps
    # that verdict: the reference only checks the suite's literals, it adds no exact-type rule of its own.
    pinned_case = Case(tests="assert collatz_steps(27) == 111\n", entry_point="collatz_steps", reference=REFERENCE)
    assert judge(pinned_case, REFERENCE.replace("return steps", "return float(steps)"), LIMITS).passed
    assert not judge(pinned_case, REFERENCE.replace("return steps", "return steps + 1"), LIMITS).passed


@needs_sandbox
def test_in_place_outputs_are_compared_too():
    reference = "def bump(xs):\n    xs.append(len(xs))\n"
    case = Case(tests="xs = [5, 6]\nbump(xs)\nbump(xs)\n", entry_point="bump", reference=reference, differential=True)
    assert judge(case, reference + "\n", LIMITS).passed
    assert judge(case, "def bump(xs):\n    xs.append(0)\n", LIMITS).reason == "differs-from-reference"


@needs_sandbox
def test_a_reference_that_fails_its_own_case_is_a_suite_error_not_the_answers_failure():
    for reference, why in (("def collatz_steps(n):\n    raise ValueError(n)\n", "exception: ValueError"),
                           (OMNI + "def collatz_steps(n):\n    return Omni()\n", "not-plain"),
                           ("import time\ndef collatz_steps(n):\n    time.sleep(60)\n", "timeout")):
        verdict = judge(Case(tests=OPTED_IN.tests, entry_point="collatz_steps", reference=reference,
                             differential=True), REFERENCE, Limits(wall_s=2))
        assert verdict.reason.startswith("suite-error: the reference fails: ") and why in verdict.reason
    missing = judge(Case(tests=OPTED_IN.tests, entry_point="collatz_steps", differential=True), REFERENCE, LIMITS)
    assert missing.reason == "suite-error: the case has no reference"
    # A pinned case whose reference disagrees with its literals keeps its literal asserts only: a right
    # answer (by the literals) passes whatever the reference returns.
    floats = Case(tests="assert half(4) == 2\n", entry_point="half", reference="def half(n):\n    return n / 2\n")
    assert judged_by(floats) == "literal" and judge(floats, "def half(n):\n    return n // 2\n", LIMITS).passed


@needs_sandbox
def test_float_tolerance_both_ways():
    reference = "def third(x):\n    return x / 3\n"
    case = Case(tests="third(1.0)\nthird(1e6)\n", entry_point="third", reference=reference, differential=True)
    assert judge(case, "def third(x):\n    return x * (1 / 3)\n", LIMITS).passed  # last bits differ
    assert judge(case, "def third(x):\n    return x / 3 * (1 + 1e-11)\n", LIMITS).passed
    assert judge(case, "def third(x):\n    return x / 3 * (1 + 1e-7)\n", LIMITS).reason == "differs-from-reference"
    assert judge(case, "def third(x):\n    return round(x / 3, 4)\n", LIMITS).reason == "differs-from-reference"


def test_agreement_is_exact_on_types_and_tolerant_on_floats():
    assert agrees(0.1 + 0.2, 0.3) and agrees(1e-12, 0.0) and agrees(math.nan, math.nan) and agrees(math.inf, math.inf)
    assert not agrees(1.0 + 10 * FLOAT_TOLERANCE, 1.0) and not agrees(-math.inf, math.inf) and not agrees(1e-6, 0.0)
    assert not agrees(2, 2.0) and not agrees(True, 1) and not agrees((1, 2), [1, 2]) and not agrees("a", b"a")
    assert agrees({1: [0.1 + 0.2]}, {1: [0.3]}) and not agrees({1.0: "a"}, {1: "a"}) and not agrees({1: "a"}, {2: "a"})
    assert agrees({(1, "x"), 2}, {2, (1, "x")}) and not agrees({1, 2}, {1.0, 2}) and not agrees(frozenset(), set())


def test_which_cases_are_differential():
    assert host_plan("f(1)\nf(2)\n", "f").probes  # calls without asserts are host-judged
    assert isinstance(host_plan("x = 1", "f"), NotHostShape)
    assert pinned(host_plan("assert f(1) == [1]\nassert f(2) is None\nassert True\n", "f")) == {0: [1], 1: None}
    for loose in ("assert sorted(f(1)) == [1]", "assert abs(f(1) - 2) < 1e-9", "r = f(1)\nassert r == 1",
                  "assert f(1) == 1 and f(2) == 2", "want = 1\nassert f(1) == want", "f(1)\nassert f(2) == 2"):
        assert pinned(host_plan(loose, "f")) is None, loose
    with pytest.raises(ValueError, match="host can judge"):
        judge(Case(tests="for x in (1, 2):\n    f(x)\n", entry_point="f", reference="def f(x):\n    return x\n",
                   differential=True), "def f(x):\n    return x\n")


@pytest.mark.parametrize("suite, pinned_cases", [("code", 71), ("humaneval", 151)])
def test_bundled_cases_whose_every_assert_pins_a_result(suite, pinned_cases):
    # docs/eval-suites.md gives the counts judged each way (pinned: these, less the references that do
    # not agree with their literals' types: code 3 of 71, HumanEval none)
    plans = [host_plan(case.tests, case.entry_point) for case in load_suite(suite) if case.expect == "code"]
    assert sum(not isinstance(p, NotHostShape) and pinned(p) is not None for p in plans) == pinned_cases
