"""The forgery corpus (tests/judge_forgeries.py) in every case form and every judging mode: 0 passes.

A form is one way tests are written (where the expected value sits, what the test does with the
answer's result); a mode is how the judge runs it: ``host`` (asserts evaluated outside from the
results), ``apart`` without a reference (plain data only), ``apart`` with the case's right reference
(objects only where the reference's run had them), and ``as reference`` (the forgery is the case's
reference, judged as ``--reference`` judges it). The right answer passes every form in every mode, so
the matrix can fail.
"""

import collections
import dataclasses

import pytest

from judge_forgeries import FORGERIES, RIGHT
from tunelens.evaluate.judge import Case, judge, judge_many
from tunelens.evaluate.sandbox import Limits, sandbox_isolation

pytestmark = pytest.mark.skipif(sandbox_isolation() == "none", reason="no sandbox on this host")

LIMITS = Limits(wall_s=6, memory_mb=768, max_output_bytes=200_000, max_result_bytes=200_000)
PROMPT = "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n"
HOST, APART = "host", "sandbox-apart"

# form -> (tests, the path the judge takes)
FORMS = {
    "literal": ("assert add(2, 3) == 5\nassert add(10, 5) == 15\nassert add(-1, 4) == 3\n", HOST),
    "variable": ("want = 5\nassert add(2, 3) == want\nexpected = [15, 3]\n"
                 "assert [add(10, 5), add(-1, 4)] == expected\n", HOST),
    "tolerance": ("assert abs(add(2, 3) - 5) < 1e-9\nassert abs(add(10, 5) - 15) < 1e-9\n"
                  "assert abs(add(-1, 4) - 3) < 1e-9\n", HOST),
    "ratio": ("assert add(10, 5) / 15 == 1\nassert add(2, 3) / 5 == 1\nassert add(-1, 4) / 3 == 1\n", HOST),
    "membership": ("assert add(2, 3) in (5,)\nassert add(10, 5) in [15]\nassert add(-1, 4) in {3}\n", HOST),
    "humaneval": ("METADATA = {}\n\n\ndef check(candidate):\n    want = 15\n    assert candidate(2, 3) == 5\n"
                  "    assert candidate(10, 5) == want\n    assert abs(candidate(-1, 4) - 3) < 1e-9\n", HOST),
    "helper": ("def close(got, want):\n    return abs(got - want) < 1e-9\n\n"
               "assert close(add(2, 3), 5)\nassert close(add(10, 5), 15)\nassert close(add(-1, 4), 3)\n", APART),
    "loop": ("for a, b, s in ((2, 3, 5), (10, 5, 15), (-1, 4, 3)):\n    assert add(a, b) == s\n", APART),
    "all-tolerance": ("CASES = [(2, 3, 5), (10, 5, 15), (-1, 4, 3)]\n"
                      "assert all(abs(add(a, b) - s) < 1e-9 for a, b, s in CASES)\n", APART),
    "map": ("CASES = [(2, 3, 5), (10, 5, 15), (-1, 4, 3)]\n"
            "assert all(map(lambda c: add(c[0], c[1]) == c[2], CASES))\n", APART),
    "numpy": ("import numpy as np\nassert np.isclose(add(2, 3), 5)\n"
              "assert np.allclose([add(10, 5), add(-1, 4)], [15, 3])\n", APART),
    "methods": ("r = add(10, 5)\nassert r.real == 15 and r.bit_length() == 4\n"
                "assert str(add(2, 3)).startswith('5') and '3' in repr(add(-1, 4))\n", APART),
    # differential: the expected values are only the reference's outputs (the case opts in)
    "differential": ("add(2, 3)\nadd(10, 5)\nadd(-1, 4)\n", HOST),
}
# Host forms run with the right reference too: "literal" pins every result (the reference is checked against
# the literals, the asserts judge), "differential" opts in (the reference's outputs judge); an opted-in case
# cannot judge its own reference, nor be judged without one.
READS_REFERENCE, OPTED_IN = ("literal", "differential"), ("differential",)
# mode -> what the case's reference is (None: no reference; "right"; "self": the judged code)
MODES = {"no reference": None, "right reference": "right", "as reference": "self"}


def case_for(form: str, reference: str | None) -> Case:
    tests, _ = FORMS[form]
    return Case(tests=tests, entry_point="add", prelude=PROMPT if form == "humaneval" else "", reference=reference,
                differential=form in OPTED_IN)


def jobs_for(codes: dict) -> list:
    """(label, case, code, the path expected) for every code x form x mode; host forms do not read the
    reference, so they run in two modes (the code as an answer, and as the reference)."""
    jobs = []
    for name, code in codes.items():
        for form, (_, path) in FORMS.items():
            for mode, reference in MODES.items():
                if (path == HOST and mode == "right reference" and form not in READS_REFERENCE
                        or form in OPTED_IN and mode != "right reference"):
                    continue
                ref = {None: None, "right": RIGHT, "self": code}[reference]
                jobs.append(((name, form, mode), case_for(form, ref), code, path))
    return jobs


def run(jobs: list) -> list:
    return judge_many([(case, code) for _, case, code, _ in jobs], LIMITS, workers=2)


def test_the_right_answer_passes_every_form_in_every_mode():
    jobs = jobs_for({"right": RIGHT, "right, with harmless noise": "import os\nprint('thinking')\n" + RIGHT})
    for (label, _, _, path), verdict in zip(jobs, run(jobs)):
        assert verdict.passed and verdict.judged == path, (label, verdict.reason, verdict.stderr[-500:])


# One form per judging path, each forgery in each: quick enough for every run of the unit tests.
PATHS = (("literal", "no reference"), ("tolerance", "as reference"), ("loop", "no reference"),
         ("helper", "right reference"), ("map", "as reference"), ("numpy", "right reference"),
         ("literal", "right reference"), ("differential", "right reference"))


def test_every_forgery_fails_on_every_judging_path():
    jobs = [job for job in jobs_for(FORGERIES) if job[0][1:] in PATHS]
    assert len(jobs) == len(FORGERIES) * len(PATHS)
    for (label, _, _, path), verdict in zip(jobs, run(jobs)):
        assert not verdict.passed and verdict.judged == path, (label, verdict.reason)


@pytest.mark.slow  # about two minutes on 2 cores: run by `make test` (CI), not by `make test-fast`
def test_no_forgery_passes_in_any_form_or_mode():
    assert len(FORGERIES) >= 60
    jobs = jobs_for(FORGERIES)
    passes, table = [], collections.Counter()
    for (label, _, _, path), verdict in zip(jobs, run(jobs)):
        table[(label[2], path)] += 1
        if verdict.passed or verdict.judged != path:
            passes.append((label, verdict.judged, verdict.reason))
    assert passes == []
    # the note's table: forgeries x forms x modes
    skipped = sum(p == HOST and f not in READS_REFERENCE for f, (_, p) in FORMS.items()) + 2 * len(OPTED_IN)
    assert sum(table.values()) == len(FORGERIES) * (len(FORMS) * len(MODES) - skipped) == len(FORGERIES) * 32


def test_a_wrong_reference_fails_planted_wrong_in_known_ways():
    planted = {"off by one": "def add(a, b):\n    return a + b + 1\n",
               "raises": "def add(a, b):\n    raise ValueError('no')\n",
               "returns None": "def add(a, b):\n    pass\n",
               "always-equal object": FORGERIES["hook: every operator at once"],
               "end frame on every fd": FORGERIES["fd: end frame on every fd, then exit 0"]}
    for form in set(FORMS) - set(OPTED_IN):  # an opted-in case's reference is its expected values
        for name, code in planted.items():
            verdict = judge(case_for(form, code), code, LIMITS)
            assert not verdict.passed, (form, name, verdict.reason)


def test_planted_wrong_references_in_bundled_cases_fail():
    # --reference on bundled cases whose reference is wrong in a known way: on the host, apart with
    # plain data, apart with the answer's objects (a method answering with a yes-object), HumanEval.
    from judge_forgeries import OMNI
    from tunelens.evaluate.suite import load_suite, score_references

    code = {case.id: case for case in load_suite("code")}
    humaneval = {case.id: case for case in load_suite("humaneval")}
    min_stack = code["stack-class"].reference
    planted = {
        "slugify": "def slugify(title):\n    return title.lower()\n",
        "chunk-list": "def chunk(items, size):\n    return [items[i:i + size] for i in range(0, len(items), max(size, 1))]\n",
        "stack-class": OMNI + min_stack.replace("class MinStack:", "class MinStack:\n    def get_min(self):\n"
                                                "        return Omni()\n", 1).replace("    def get_min(self):\n        if",
                                                                                        "    def _min(self):\n        if", 1),
        "vector-class": code["vector-class"].reference + "\nVector2.__eq__ = lambda self, other: True\n"
                        "Vector2.__ne__ = lambda self, other: False\nVector2.__add__ = lambda self, other: self\n",
        "ordinal-suffix": FORGERIES["fd: end frame on every fd, then exit 0"].replace("def add(a, b):", "def ordinal(n):"),
        "HumanEval/0": OMNI + "def has_close_elements(numbers, threshold):\n    return Omni()\n",
        "HumanEval/53": "def add(x, y):\n    return x + y + (x == 7)\n",
    }
    cases = [dataclasses.replace({**code, **humaneval}[case_id], reference=wrong) for case_id, wrong in planted.items()]
    scored = score_references(cases, workers=2)
    assert [(case.id, verdict.passed) for case, verdict in scored] == [(case_id, False) for case_id in planted]
    # the same cases with their own references pass (the plants are what fails)
    originals = [{**code, **humaneval}[case_id] for case_id in planted]
    assert all(verdict.passed for _, verdict in score_references(originals, workers=2))
