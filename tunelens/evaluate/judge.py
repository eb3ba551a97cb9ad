"""The verdict on an answer: does its code pass the case's tests?

The answer is only ever given the arguments of the calls it is asked to make, and only plain data
comes back (sandbox_boot's codec, checked on arrival); the tests' operators run outside on it. Two
ways, chosen per case from the shape of its tests (judge_plan):

* ``host``: only the answer's code and the calls the tests make run in the sandbox (with the test
  variables that are their arguments); the host evaluates the asserts on the results.
* ``sandbox-apart``: tests of any other shape run in a process of their own (sandbox_remote.py); the
  answer may hand them an object instead of plain data only where the case's reference did.

On the host, where a case opts in, the reference's outputs on the same calls are the expected values
("Differential" below).

The reason for a failure comes from the sandbox's status frames and the host's own observations (see
sandbox.ending_reason); the answer's stdout and stderr are kept. docs/eval-suites.md has the design.
"""

from __future__ import annotations

import ast
import functools
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from tunelens.evaluate.judge_plan import (HostAssign, HostPlan, NotHostShape, evaluate, host_plan, parse_locked,
                                          pinned)
from tunelens.evaluate.sandbox_boot import Malformed, _decode as decode
from tunelens.evaluate.sandbox import (Limits, SandboxResult, ending_reason, exception_reason, run_apart,
                                       run_calls)

HOST, APART = "host", "sandbox-apart"


@dataclass
class Verdict:
    passed: bool
    reason: str | None  # None when passed; see SandboxResult for the vocabulary, plus not-plain: <type>
    judged: str  # HOST or APART
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    detail: str | None = None  # the failing assert's line and source, for host-judged cases


@dataclass(frozen=True)
class Case:
    """What the judge needs of a suite case (suite.Case has these fields)."""

    tests: str
    entry_point: str | None
    prelude: str = ""  # code that precedes the answer (a HumanEval prompt)
    reference: str | None = None  # a known-good answer: where objects may cross apart; differential
    differential: bool = False  # the reference's outputs are the expected values (a suite's opt-in)


def judge(case: Case, code: str, limits: Limits | None = None, unsafe: bool = False) -> Verdict:
    """Judge ``code`` against ``case``'s tests: on the host when their shape allows, else in the sandbox."""
    plan = plan_for(case.tests, case.entry_point)
    if isinstance(plan, NotHostShape):
        if case.differential:
            raise ValueError(f"differential needs tests the host can judge: {plan}")
        return _in_sandbox(case, code, limits, unsafe)
    if case.differential:
        return _against_reference(case, plan, code, limits, unsafe)
    return _on_host(plan, run_calls(case.prelude + code, plan.wire(), limits, unsafe))


def judge_many(jobs: list[tuple[Case, str]], limits: Limits | None = None, workers: int = 2,
               unsafe: bool = False) -> list[Verdict]:
    """``[judge(case, code, limits) for case, code in jobs]``, ``workers`` at a time, in order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: judge(job[0], job[1], limits, unsafe), jobs))


@functools.lru_cache(maxsize=4096)
def plan_for(tests: str, entry_point: str | None) -> HostPlan | NotHostShape:
    return host_plan(tests, entry_point)


def program_for(case: Case, code: str) -> str:
    """The one-program form the parse check reads (never run by the judge): the code, then the tests
    (then ``check(entry_point)`` for the HumanEval form)."""
    program = case.prelude + code + "\n\n" + case.tests + "\n"
    if case.entry_point and _defines_check(case.tests):
        program += f"\ncheck({case.entry_point})\n"
    return program


def _defines_check(tests: str) -> bool:
    try:
        tree = parse_locked(tests)
    except SyntaxError:
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body)


def _in_sandbox(case: Case, code: str, limits, unsafe: bool) -> Verdict:
    """Tests apart from the answer, which may hand them an object of its own (not plain data) only
    where the reference's run did: the reference decides, never the answer. Without one, plain data."""
    if not case.reference:
        return _apart(case, code, limits, unsafe, [])[0]
    # The reference's verdict apart and its places, once per case and process; a reference that fails
    # records none: answers to its case are then held to plain data.
    reference, sites = _once("apart", case, _apart, case, case.reference, limits, unsafe, None).result()
    return reference if code == case.reference else _apart(case, code, limits, unsafe, sites)[0]


def _apart(case: Case, code: str, limits, unsafe: bool, sites) -> tuple[Verdict, list]:
    """The verdict, and (for the reference's own run, ``sites`` None) where it handed the tests objects."""
    result = run_apart(code, case.tests, limits, unsafe, prelude=case.prelude, entry_point=case.entry_point,
                       check=bool(case.entry_point) and _defines_check(case.tests), handle_sites=sites)
    # Only the tests' process writes frames apart: a refusal there is its own, and so is the record.
    refused = next((f for f in result.frames if f[0] == "unplain"), None)
    reason = "not-plain: " + str(refused[2])[:100] if refused is not None else result.reason
    recorded = next((f[1] for f in result.frames if f[0] == "sites"), None)
    valid = reason is None and type(recorded) is list and all(type(x) is str for x in recorded)
    return _verdict(result, reason, APART), recorded if valid else []


_REFERENCE_RUNS: dict = {}
_REFERENCE_LOCK = threading.Lock()
_REFERENCE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tunelens-reference")


def _once(kind: str, case: Case, run, *args) -> Future:
    """``run(*args)`` for ``case``'s reference, started once per case and process, in the background."""
    key = (kind, case.tests, case.entry_point, case.prelude, case.reference)
    with _REFERENCE_LOCK:
        if key not in _REFERENCE_RUNS:
            _REFERENCE_RUNS[key] = _REFERENCE_POOL.submit(run, *args)
        return _REFERENCE_RUNS[key]


def _on_host(plan: HostPlan, result: SandboxResult) -> Verdict:
    try:
        probes = _Probes(result, len(plan.probes))
    except Malformed:  # a kill for flooding the pipe says more than the flood's content
        return _verdict(result, result.killed_for or "malformed-status", HOST)
    if result.reason == "malformed-status":
        return _verdict(result, result.reason, HOST)
    for statement in plan.statements:
        failed = _failed(statement, probes)
        if failed:
            return _verdict(result, failed, HOST, f"line {statement.line}: {statement.source}")
    # Every assert held; the job must also have ended cleanly (a hang after the calls is a timeout).
    return _verdict(result, ending_reason(result), HOST)


def _verdict(result: SandboxResult, reason: str | None, judged: str, detail: str | None = None) -> Verdict:
    return Verdict(reason is None, reason, judged, result.stdout, result.stderr, result.duration_s,
                   result.isolation, detail if reason else None)


def _outcomes(frames: list, count: int) -> dict[int, list]:
    """Each call's frame by index; a frame for a call that does not exist, or two for one call, is
    malformed (the answer wrote to the status pipe)."""
    outcomes: dict[int, list] = {}
    for frame in frames:
        if frame[0] in ("ok", "raise", "unplain") or (frame[0] == "exit" and frame[1] is not None):
            index = frame[1]
            if type(index) is not int or not 0 <= index < count or index in outcomes:
                raise Malformed("call index %r" % (index,))
            outcomes[index] = frame
    return outcomes


class _ProbeFailed(Exception):
    """A call's outcome that is not a value (``args[0]``: the reason)."""


class _Probes:
    """The answer's results by call index, decoded when an assert first needs them, and the test
    variables' values as of the last result fetched (the sandbox reports them after every call)."""

    def __init__(self, result: SandboxResult, count: int):
        self.outcomes, self.result = _outcomes(result.frames, count), result
        self.variables: dict = {}

    def variable(self, name: str):
        value = self.variables.get(name)
        if isinstance(value, _ProbeFailed):  # it holds something that is not plain data
            raise value
        return value

    def __getitem__(self, index: int):
        frame = self.outcomes.get(index)
        if frame is None:  # the job stopped (or never got to it)
            raise _ProbeFailed(ending_reason(self.result) or "exited-early")
        kind = frame[0]
        if kind == "ok":
            value = decode(frame[2])
            self._update(frame[3])
            return value
        if kind == "raise":
            raise _ProbeFailed(exception_reason(frame[2], frame[3]))
        if kind == "exit":
            raise _ProbeFailed("exited-early")
        raise _ProbeFailed("not-plain: " + str(frame[2])[:100])

    def _update(self, state) -> None:
        if type(state) is not list:
            raise Malformed("variables")
        for pair in state:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise Malformed("variable")
            name, tagged = pair
            if type(tagged) is list and tagged[:1] == ["?"]:
                self.variables[name] = _ProbeFailed("not-plain: " + str(tagged[1:2])[:100])
            else:
                self.variables[name] = decode(tagged)


def _failed(statement, probes: _Probes) -> str | None:
    """None when the statement runs (an assert: holds), else the reason it does not."""
    try:
        if isinstance(statement, HostAssign):
            value = evaluate(statement.expr, probes) if statement.expr is not None else decode(statement.value)
            if statement.name is not None:
                probes.variables[statement.name] = value
            return None
        return None if evaluate(statement.expr, probes) else "test-failed"
    except _ProbeFailed as failure:
        return failure.args[0]
    except Malformed:
        return "malformed-status"
    except Exception as error:  # the comparison itself raised, on plain data: as it would have inside
        return exception_reason(type(error).__name__, None)


# ---------------------------------------------------------------------------------------------------
# Differential: the reference's outputs on the same calls, from a sandbox run of its own, are the expected
# values, compared here: exact types, floats within FLOAT_TOLERANCE. Only where the case opts in
# (``differential``): elsewhere a correct answer may differ from the reference (several valid answers, 2.0
# for 2), and the test's own asserts decide, as the official harnesses do. Where every assert pins a call's
# result to a literal, the reference's results are checked against those literals instead: the suite's
# consistency, reported by judged_by.

FLOAT_TOLERANCE = 1e-9  # relative and absolute: floats agree when math.isclose with both says so


def judged_by(case: Case, limits: Limits | None = None, unsafe: bool = False) -> str:
    """``apart``, ``differential`` (opted in: the reference's outputs are the expected values), ``pinned``
    (the literal asserts judge, and the reference's results agree with the literals they pin) or
    ``literal`` (the asserts judge; loose tests, no reference, or a reference that disagrees)."""
    plan = plan_for(case.tests, case.entry_point)
    if isinstance(plan, NotHostShape):
        return "apart"
    if case.differential:
        return "differential"
    if case.reference and pinned(plan) is not None and not isinstance(_expected(case, plan, limits, unsafe), str):
        return "pinned"
    return "literal"


def agrees(got, want) -> bool:
    """``got`` is ``want``: the same exact types all the way down, equal values, floats within
    FLOAT_TOLERANCE (nan agrees with nan); set items and dict keys are matched by equality first."""
    if type(got) is not type(want):
        return False
    if type(want) is float:
        return (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=FLOAT_TOLERANCE,
                                                                      abs_tol=FLOAT_TOLERANCE)
    if type(want) in (list, tuple):
        return len(got) == len(want) and all(map(agrees, got, want))
    if type(want) in (set, frozenset, dict):
        mine = {key: key for key in got}  # got's own key for each key of want's that it holds
        return len(got) == len(want) and all(
            key in mine and agrees(mine[key], key) and (type(want) is not dict or agrees(got[key], want[key]))
            for key in want)
    if type(want).__name__ == "ndarray":  # the codec builds only plain arrays of booleans and numbers
        return got.shape == want.shape and got.dtype.kind == want.dtype.kind and agrees(got.tolist(), want.tolist())
    return got == want


def _reference_calls(case: Case, plan: HostPlan, limits, unsafe: bool) -> Future | None:
    """The reference's run of the plan's calls (None without a reference)."""
    if not case.reference:
        return None
    return _once("calls", case, run_calls, case.prelude + case.reference, plan.wire(), limits, unsafe)


def _outputs(plan: HostPlan, result: SandboxResult, given: bool) -> list:
    """Each call's outputs in ``result``: its value and, with ``given``, the test variables it was given
    as they were after it (an in-place answer's output). Raises _ProbeFailed or Malformed."""
    probes = _Probes(result, len(plan.probes))
    outputs = [[probes[index]] for index in range(len(plan.probes))]
    for output, probe in zip(outputs, plan.probes if given else ()):
        output += [probes.variable(a[1]) for a in probe.args + [v for _, v in probe.kwargs] if a[0] == "$"]
    if ending_reason(result):
        raise _ProbeFailed(ending_reason(result))
    return outputs


def _expected(case: Case, plan: HostPlan, limits, unsafe: bool) -> list | str:
    """The reference's outputs, or why there are none (or, pinned, why they are not the literals)."""
    reference = _reference_calls(case, plan, limits, unsafe)
    if reference is None:
        return "the case has no reference"
    try:
        outputs = _outputs(plan, reference.result(), case.differential)
    except (_ProbeFailed, Malformed) as failure:
        return "the reference fails: " + (failure.args[0] if type(failure) is _ProbeFailed else "malformed-status")
    literals = {} if case.differential else pinned(plan)
    if not all(agrees(outputs[i][0], want) for i, want in literals.items()):
        return "the reference's results are not the literals the asserts pin"
    return outputs


def _against_reference(case: Case, plan: HostPlan, code: str, limits, unsafe: bool) -> Verdict:
    """An opted-in case: the asserts' verdict on the answer's run (if it has any); if they hold, its outputs
    must agree with the reference's. Where the reference has none, the case cannot be judged (a suite error,
    not the answer's)."""
    reference = _reference_calls(case, plan, limits, unsafe)  # alongside the answer's run
    own = reference is not None and code == case.reference
    result = reference.result() if own else run_calls(case.prelude + code, plan.wire(), limits, unsafe)
    verdict = _on_host(plan, result)
    expected = _expected(case, plan, limits, unsafe)
    if not verdict.passed:
        return verdict
    if isinstance(expected, str):
        return replace(verdict, passed=False, reason="suite-error: " + expected)
    try:
        outputs = _outputs(plan, result, case.differential)
    except _ProbeFailed as failure:
        return replace(verdict, passed=False, reason=failure.args[0])
    for probe, got, want in zip(plan.probes, outputs, expected):
        if not agrees(got, want):
            return replace(verdict, passed=False, reason="differs-from-reference",
                           detail=f"line {probe.line}: {probe.name}(...) differs from the reference's output")
    return verdict
