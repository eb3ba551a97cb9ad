"""An answer cannot turn a failing case into a pass.

Every answer below is wrong (``add`` does not add) and then tries to forge its verdict: by patching
the harness, reaching for a secret, writing the status pipe, returning objects that compare equal to
anything, exiting early, or acting after the calls. Each must be judged a failure. The same cases with
a correct ``add`` pass, so these tests can fail.
"""

import dataclasses
import resource

import pytest

from tunelens.evaluate.judge import Case, judge
from tunelens.evaluate.sandbox import Limits, sandbox_isolation

pytestmark = pytest.mark.skipif(sandbox_isolation() == "none", reason="no sandbox on this host")

QUICK = Limits(wall_s=4, memory_mb=256, max_output_bytes=200_000, max_result_bytes=200_000)
PLAIN = Case(tests="assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n", entry_point="add")
HUMANEVAL = Case(tests="METADATA = {}\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
                       "    assert candidate(-1, 1) == 0\n    assert candidate(10, 5) == 15\n",
                 entry_point="add", prelude="def add(a, b):\n    \"\"\"Sum.\"\"\"\n")
# Tests of a shape the host cannot evaluate (a loop): they run apart from the answer, in their own process.
LOOP = Case(tests="for a, b, s in ((2, 3, 5), (-1, 1, 0), (10, 5, 15)):\n    assert add(a, b) == s\n", entry_point="add")
TRUTH = Case(tests="assert is_even(3) is False\nassert not is_even(5)\nassert is_even(4)\n", entry_point="is_even")

WRONG = "def add(a, b):\n    return a - b\n"
FD = "import sys\nSTATUS = int(sys.argv[2])\n"  # the status pipe's number is on the command line
ALWAYS_EQUAL = "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"

FORGERIES = {
    # The attacks found in the issue.
    "os._exit patched to a no-op": "import os\nos._exit = lambda *a: None\n" + WRONG,
    "nonce from the caller's frame": WRONG + "import sys, os\nf = sys._getframe()\nwhile f.f_back:\n    f = f.f_back\n"
        "for k, v in list(f.f_locals.items()):\n    if isinstance(v, str) and len(v) == 32:\n"
        "        os.write(int(sys.argv[2]), v.encode())\nos._exit(0)\n",
    "always-equal object": ALWAYS_EQUAL + "def add(a, b):\n    return Any()\n",
    # The status pipe, found through argv, /proc/self and every inherited fd.
    "end frame on the status pipe, then exit 0": WRONG + FD + "import os\nos.write(STATUS, b'[\"end\"]\\n')\nos._exit(0)\n",
    "end frame on every open fd": WRONG + "import os\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
        "        os.write(fd, b'[\"end\"]\\n')\n    except OSError:\n        pass\nos._exit(0)\n",
    "results written ahead of the calls": WRONG + FD + "import os\nfor i, v in enumerate(('0x5', '0x0', '0xf')):\n"
        "    os.write(STATUS, json.dumps(['ok', i, ['i', v]]).encode() + b'\\n')\n".replace("json", "__import__('json')"),
    "results written after the calls by an atexit handler": WRONG + FD + "import atexit, os\n"
        "atexit.register(lambda: os.write(STATUS, b'[\"ok\",0,[\"i\",\"0x5\"]]\\n[\"end\"]\\n'))\n",
    "garbage on the status pipe": WRONG + FD + "import os\nos.write(STATUS, b'{not json\\n')\n",
    "frames of the wrong shape": WRONG + FD + "import os\nos.write(STATUS, b'[\"ok\", 0]\\n[\"end\", 1]\\n[7]\\n')\n",
    "a flood on the status pipe": WRONG + FD + "import os\nwhile True:\n    os.write(STATUS, b'x' * 65536)\n",
    "json.dumps patched to write end frames": "import json\njson.dumps = lambda *a, **k: '[\"end\"]'\n" + WRONG,
    "the launcher's encoder replaced": WRONG + "import sys\nsys.modules['__main__']._encode = lambda v, d: ['s', 'pass']\n",
    "the launcher's frame writer replaced": WRONG + "import sys\nsys.modules['__main__']._frame = lambda *a: None\n",
    # Patching what a harness in the same process would lean on.
    "sys.exit patched": "import sys\nsys.exit = lambda *a: None\n" + WRONG,
    "builtins patched (type, isinstance, AssertionError)": "import builtins\nbuiltins.type = lambda *a: int\n"
        "builtins.isinstance = lambda *a: True\nbuiltins.AssertionError = type('Never', (Exception,), {})\n" + WRONG,
    "traceback silenced": "import traceback\ntraceback.print_exception = lambda *a, **k: None\n" + WRONG,
    "sys.stderr and sys.stdout replaced": "import sys, io\nsys.stderr = io.StringIO()\nsys.stdout = io.StringIO()\n" + WRONG,
    "printing pass markers": WRONG + "print('PASSED')\nprint('[\"end\"]')\nprint('test_reason: None')\n",
    # Objects that are not plain data.
    "int subclass equal to everything": "class Int(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\ndef add(a, b):\n    return Int(0)\n",
    "str subclass": "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
        "def add(a, b):\n    return S('x')\n",
    "list subclass": "class L(list):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return L()\n",
    "__eq__ that raises": "class Boom:\n    def __eq__(self, other):\n        raise AssertionError\ndef add(a, b):\n    return Boom()\n",
    "__eq__ that mutates the expected value": "class Sneaky:\n    def __eq__(self, other):\n        other.clear()\n"
        "        return True\ndef add(a, b):\n    return Sneaky()\n",
    "a generator": "def add(a, b):\n    yield a + b\n",
    "nested deeper than the wire allows": "def add(a, b):\n    x = 5\n    for _ in range(1000):\n        x = [x]\n    return x\n",
    # Leaving early, or acting late.
    "sys.exit(0) before the calls": WRONG + "import sys\nsys.exit(0)\n",
    "os._exit(0) before the calls": WRONG + "import os\nos._exit(0)\n",
    "SystemExit from inside the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "KeyboardInterrupt from inside the call": "def add(a, b):\n    raise KeyboardInterrupt\n",
    "a thread that writes frames after the calls": WRONG + FD + "import threading, os, time\n"
        "def late():\n    time.sleep(0.2)\n    os.write(STATUS, b'[\"end\"]\\n')\n"
        "threading.Thread(target=late).start()\n",
    "a signal handler that exits 0": WRONG + "import signal, os\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\n",
    "a forked child that outlives the job": WRONG + FD + "import os, time\nif os.fork() == 0:\n    time.sleep(0.3)\n"
        "    os.write(STATUS, b'[\"end\"]\\n')\n    os._exit(0)\n",
    # Editing the tests: they are not in the sandbox to edit.
    "editing test source through sys.modules and inspect": WRONG + "import sys, gc, inspect\n"
        "for m in list(sys.modules.values()):\n    for name in ('check', 'tests', 'TESTS'):\n"
        "        if hasattr(m, name):\n            setattr(m, name, lambda *a: None)\n"
        "for o in gc.get_objects():\n    if inspect.isfunction(o) and o.__name__ == 'check':\n"
        "        o.__code__ = (lambda c: None).__code__\n",
    "redefining check() and the entry point's caller": WRONG + "def check(candidate):\n    pass\ncandidate = add\n",
    "rewriting the calls it was given": "def add(a, b):\n    return a - b\nimport gc\nfor o in gc.get_objects():\n"
        "    if type(o) is list and o and type(o[0]) is list and o[0][:1] == ['add']:\n        o.clear()\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forging_answer_fails(name):
    for case, judged in ((PLAIN, "host"), (HUMANEVAL, "host"), (LOOP, "sandbox-apart")):
        code = FORGERIES[name]
        verdict = judge(case, code, QUICK)
        assert not verdict.passed and verdict.judged == judged, (name, judged, verdict.reason, verdict.stderr[-300:])


def test_the_same_cases_pass_a_correct_answer():
    # Also with the harmless parts of the forgeries around it: the attacks fail because add is wrong.
    right = "def add(a, b):\n    return a + b\n"
    for case in (PLAIN, HUMANEVAL, LOOP):
        assert judge(case, right, QUICK).passed
        assert judge(case, "print('PASSED')\n" + right, QUICK).passed
    assert judge(TRUTH, "def is_even(n):\n    return n % 2 == 0\n", QUICK).passed


def test_always_true_objects_fail_truth_asserts():
    truthy = "class T:\n    def __bool__(self):\n        return True\n    def __eq__(self, o):\n        return True\n"
    for answer in (truthy + "def is_even(n):\n    return T()\n", "def is_even(n):\n    return 1 if n == 4 else 0\n"):
        verdict = judge(TRUTH, answer, QUICK)
        assert not verdict.passed, answer
    assert judge(TRUTH, truthy + "def is_even(n):\n    return T()\n", QUICK).reason == "not-plain: not plain data: T"


def test_no_secret_or_expected_value_is_reachable_inside():
    # Everything the answer can see: frames, every object gc tracks, argv, environment, /proc/self,
    # every open fd. The expected values (a distinctive number) and the tests' source are not there.
    case = Case(tests="assert add(2, 3) == 987654321\n", entry_point="add")
    spy = ("import gc, os, sys\n"
           "seen = [repr(sys.argv), repr(dict(os.environ))]\n"
           "f = sys._getframe()\n"
           "while f:\n    seen.append(repr(f.f_locals)[:100000])\n    f = f.f_back\n"
           "for o in gc.get_objects():\n    try:\n        seen.append(repr(o)[:10000])\n    except Exception:\n        pass\n"
           "for name in ('cmdline', 'environ', 'status', 'maps'):\n    try:\n        seen.append(repr(open('/proc/self/' + name, 'rb').read()))\n"
           "    except OSError:\n        pass\n"
           "for fd in map(int, os.listdir('/proc/self/fd')):\n"
           "    try:\n        os.set_blocking(fd, False)\n        seen.append(repr(os.read(fd, 65536)))\n"
           "    except OSError:\n        pass\n"
           "text = ' '.join(seen)\n"
           "marks = (''.join(['98765', '4321']), ''.join(['assert', ' add']))  # built at run time: its own code is in gc\n"
           "print('FOUND' if any(m in text for m in marks) else 'clean', len(text))\n"
           "def add(a, b):\n    return a + b\n")
    verdict = judge(case, spy, Limits(wall_s=10, memory_mb=512, max_output_bytes=100_000))
    assert not verdict.passed and verdict.reason == "test-failed"
    assert verdict.stdout.startswith("clean"), verdict.stdout[:200]
    assert int(verdict.stdout.split()[1]) > 10_000  # the spy did look at a lot


def test_flooding_the_status_pipe_keeps_host_memory_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = FD + "import os\nchunk = b'[\"ok\",0,[\"s\",\"' + b'x' * 60000 + b'\"]]\\n'\nwhile True:\n    os.write(STATUS, chunk)\n"
    verdict = judge(PLAIN, code, Limits(wall_s=5, max_result_bytes=1_000_000))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not verdict.passed and verdict.reason == "result-limit"
    assert grown_mb < 50, grown_mb


def test_reasons_say_what_happened():
    def reason(code, case=PLAIN, limits=QUICK):
        return judge(case, code, limits).reason

    assert reason(WRONG) == "test-failed"
    assert reason("def add(a, b):\n    raise ValueError('no')\n") == "exception: ValueError"
    assert reason("def add(a, b):\n    while True:\n        pass\n", limits=Limits(wall_s=1)) == "timeout"
    assert reason("def add(a, b):\n    return bytearray(2 ** 33)\n") == "memory"
    assert reason("import sys\nsys.exit(0)\n") == "exited-early"
    assert reason("def add(a, b):\n    return object()\n") == "not-plain: not plain data: object"
    assert reason("def ad(a, b):\n    return a + b\n") == "exception: NameError"
    assert reason("def add(a, b):\n    return a + b\nraise RuntimeError\n") == "exception: RuntimeError"


def test_a_failing_answer_keeps_its_output():
    verdict = judge(PLAIN, "print('thinking about', 2 + 3)\n" + WRONG, QUICK)
    assert not verdict.passed and verdict.stdout == "thinking about 5\n"
    assert verdict.detail == "line 1: assert add(2, 3) == 5"
    noisy = "print('defining')\ndef add(a, b):\n    print('adding', a, b)\n    return a - b\n"
    apart = judge(LOOP, noisy, QUICK)  # printed in the answer's process, kept though the tests end it
    assert not apart.passed and apart.judged == "sandbox-apart" and apart.stdout == "defining\nadding 2 3\n"


def test_output_is_kept_on_every_kind_of_failure():
    from tunelens.evaluate.sandbox import run_python

    program = run_python("print('before')\nraise ValueError('x')\n", QUICK)
    assert program.reason == "exception: ValueError" and program.stdout == "before\n"
    for code, reason in (("print('defining')\nraise RuntimeError\n", "exception: RuntimeError"),
                         ("import os\ndef add(a, b):\n    print('adding')\n    os._exit(0)\n", "exited-early"),
                         ("def add(a, b):\n    print('adding')\n    while True:\n        pass\n", "timeout")):
        for case in (PLAIN, LOOP):
            verdict = judge(case, code, Limits(wall_s=2))
            assert verdict.reason == reason and verdict.stdout in ("defining\n", "adding\n"), (case, code, verdict)
    tests_print = Case(tests="for n in (1,):\n    print('checking', n)\n    assert add(n, n) == 2\n", entry_point="add")
    verdict = judge(tests_print, WRONG, QUICK)
    assert verdict.reason == "test-failed" and verdict.stdout == "checking 1\n"


def test_results_round_trip_exactly():
    values = [None, True, False, 0, -2 ** 200, 1.5, float("inf"), -0.0, "é\x00", b"\xff", [1, (2, 3)],
              {"k": {1, 2}}, frozenset({"a"}), (), {}]
    source = [repr(value).replace("inf", "float('inf')") for value in values]
    case = Case(tests="\n".join(f"assert get({i}) == {text}" for i, text in enumerate(source)), entry_point="get")
    code = f"VALUES = [{', '.join(source)}]\ndef get(i):\n    return VALUES[i]\n"
    verdict = judge(case, code, QUICK)
    assert verdict.passed, (verdict.reason, verdict.detail)
    # 1 == True and 1.0 == 1 as in Python: the comparison is Python's ==, on the host, on plain data.
    assert judge(Case(tests="assert f() == 1", entry_point="f"), "def f():\n    return True\n", QUICK).passed
    assert not judge(Case(tests="assert f() is True", entry_point="f"), "def f():\n    return 1\n", QUICK).passed


def test_a_numpy_answer_passes():
    code = ("import numpy as np\n"
            "def mean_of(xs):\n    return np.mean(np.array(xs, dtype=float))\n"
            "def norm(xs):\n    return float(np.linalg.norm(xs))\n")
    case = Case(tests="assert mean_of([1, 2, 3]) == 2.0\nassert abs(norm([3, 4]) - 5.0) < 1e-9\n", entry_point="mean_of")
    verdict = judge(case, code, Limits(wall_s=20))
    assert verdict.passed and verdict.judged == "host", (verdict.reason, verdict.stderr[-500:])
    # in the sandbox too (tests of another shape)
    loop = Case(tests="for n in range(3):\n    assert mean_of([n, n]) == n\n", entry_point="mean_of")
    verdict = judge(loop, code, Limits(wall_s=20))
    assert verdict.passed and verdict.judged == "sandbox-apart", (verdict.reason, verdict.stderr[-500:])


def test_status_frames_carry_results_and_the_variables_after_each_call():
    # The wire itself: a test variable is the sandbox's own copy, so a mutation shows in the frame.
    from tunelens.evaluate.sandbox import run_calls

    steps = [["set", "xs", ["l", [["i", "0x1"]]]], ["call", "f", [["$", "xs"]], [], False, "r"]]
    result = run_calls("def f(xs):\n    xs.append(2)\n    return {len(xs)}\n", steps, QUICK)
    state = [["xs", ["l", [["i", "0x1"], ["i", "0x2"]]]], ["r", ["S", [["i", "0x2"]]]]]
    assert result.passed and result.frames == [["ok", 0, ["S", [["i", "0x2"]]], state], ["end"]]


def test_mutating_an_argument_is_seen_by_the_host():
    case = Case(tests="data = [3, 1, 2]\nassert sort_copy(data) == [1, 2, 3]\nassert data == [3, 1, 2]\n",
                entry_point="sort_copy")
    copying = judge(case, "def sort_copy(xs):\n    return sorted(xs)\n", QUICK)
    assert copying.passed and copying.judged == "host"
    mutating = judge(case, "def sort_copy(xs):\n    xs.sort()\n    return xs\n", QUICK)
    assert not mutating.passed and mutating.reason == "test-failed" and mutating.detail == "line 3: assert data == [3, 1, 2]"
    sneaky = judge(case, "class Any:\n    def __eq__(self, o):\n        return True\n"
                         "def sort_copy(xs):\n    xs.append(Any())\n    return [1, 2, 3]\n", QUICK)
    assert not sneaky.passed and sneaky.reason.startswith("not-plain")


# ---------------------------------------------------------------------------------------------------
# Tests apart from the answer: what crosses, and when the reference keeps them in one program


def assert_apart_with_reference(case, code):
    """The answer's objects are held by the tests only where the reference's are: without a reference,
    plain data only; with one, the reference and an answer equal to it both pass."""
    assert judge(case, code, QUICK).reason.startswith("not-plain")
    with_reference = dataclasses.replace(case, reference=code)
    for answer in (code, code + "\n"):  # the reference itself, then the same code judged as an answer
        verdict = judge(with_reference, answer, QUICK)
        assert verdict.passed and verdict.judged == "sandbox-apart", (verdict.reason, verdict.stderr[-800:])


def test_objects_of_the_answer_are_used_through_requests():
    case = Case(tests=("acct = Account(10)\nacct.deposit(5)\nassert acct.balance == 15\n"
                       "try:\n    acct.withdraw(100)\n    raise AssertionError('no error')\nexcept ValueError as e:\n"
                       "    assert e.args == ('short', 85)\n"
                       "assert [x * 2 for x in acct.history()] == [20, 10]\nassert sorted(acct.items(), key=lambda p: -p[1]) == [('b', 2), ('a', 1)]\n"
                       "data = [3, 1]\nacct.sort_in_place(data)\nassert data == [1, 3]\n"
                       "with acct as same:\n    assert same is acct\n"
                       "assert 5 in acct and 7 not in acct\n"), entry_point="Account")
    code = ("class Short(ValueError):\n    pass\n"
            "class Account:\n    def __init__(self, start):\n        self.balance, self.log = start, [start]\n"
            "    def deposit(self, n):\n        self.balance += n\n        self.log.append(n)\n"
            "    def withdraw(self, n):\n        if n > self.balance:\n            raise Short('short', n - self.balance)\n"
            "    def history(self):\n        yield from self.log\n"
            "    def items(self):\n        return iter([('a', 1), ('b', 2)])\n"
            "    def sort_in_place(self, xs):\n        xs.sort()\n"
            "    def __enter__(self):\n        return self\n    def __exit__(self, *a):\n        return False\n"
            "    def __contains__(self, n):\n        return n in self.log\n")
    assert_apart_with_reference(case, code)


def test_no_answer_and_no_reference_shares_the_tests_process():
    # A test that hands the answer one of its own classes cannot run apart: it fails there, the
    # reference included (there is no one-program mode to fall back to).
    tests = "class Local:\n    pass\nassert describe(Local) == 'Local'\n"
    reference = "def describe(kind):\n    return kind.__name__\n"
    case = Case(tests=tests, entry_point="describe", reference=reference)
    for code in (reference, "def describe(kind):\n    return 'Local'\n"):
        verdict = judge(case, code, QUICK)
        assert verdict.judged == "sandbox-apart" and not verdict.passed, verdict.reason


def test_the_tests_never_enter_the_answers_process():
    # Apart, the tests reach their own process through a pipe the answer's never holds; a spy that
    # reads its whole address space finds the tests' expected value no more often than a number built
    # the same way that is in no test (both are in the spy's own memory as it searches).
    case = Case(tests="for n in (1,):\n    assert add(n, n) == 987654321\n", entry_point="add")
    spy = ("marks = [''.join(['== 98765', '4321']).encode(), ''.join(['== 12345', '6789']).encode()]\n"
           "counts = [0, 0]\n"
           "mem = open('/proc/self/mem', 'rb', 0)\n"
           "for line in open('/proc/self/maps'):\n"
           "    span, perms = line.split()[:2]\n"
           "    if 'r' not in perms or '[vvar]' in line or '[vsyscall]' in line:\n        continue\n"
           "    start, end = (int(x, 16) for x in span.split('-'))\n"
           "    try:\n        mem.seek(start)\n        data = mem.read(end - start)\n    except (OSError, OverflowError, ValueError):\n        continue\n"
           "    counts = [c + data.count(m) for c, m in zip(counts, marks)]\n"
           "print(counts)\n"
           "def add(a, b):\n    return a + b\n")
    verdict = judge(case, spy, Limits(wall_s=20, memory_mb=1024))
    assert verdict.judged == "sandbox-apart" and verdict.reason == "test-failed", (verdict.reason, verdict.stderr[-500:])
    assert verdict.stdout.startswith("["), (verdict.stdout, verdict.stderr[-500:])
    expected, control = eval(verdict.stdout)
    assert control > 0 and expected == control, verdict.stdout


def test_objects_of_the_tests_are_used_by_reference():
    # A range, a decorated function and a built-in class handed to the answer stay in the tests'
    # process; the answer iterates, calls and wraps them through requests back.
    case = Case(tests=("assert chunks(range(5), 2) == [[0, 1], [2, 3], [4]]\n"
                       "@counted\ndef double(x):\n    return 2 * x\n"
                       "assert double(4) == 8 and double.calls == 1 and double.__name__ == 'double'\n"
                       "assert convert(['1', '2'], int) == [1, 2]\n"), entry_point="chunks")
    code = ("import functools\n"
            "def chunks(items, n):\n    out = []\n    for x in items:\n"
            "        if not out or len(out[-1]) == n:\n            out.append([])\n        out[-1].append(x)\n    return out\n"
            "def counted(f):\n    @functools.wraps(f)\n    def wrapper(*a):\n        wrapper.calls += 1\n        return f(*a)\n"
            "    wrapper.calls = 0\n    return wrapper\n"
            "def convert(xs, kind):\n    return [kind(x) for x in xs]\n")
    assert_apart_with_reference(case, code)


def test_the_answers_classes_work_with_isinstance_and_except():
    case = Case(tests=("assert isinstance(Square(2), Shape) and not isinstance(3, Shape)\n"
                       "try:\n    Square(-1)\n    raise AssertionError('no error')\nexcept BadSize as err:\n"
                       "    assert err.size == -1 and str(err) == 'bad: -1' and isinstance(err, ValueError)\n"),
                entry_point="Square")
    code = ("class Shape:\n    pass\n"
            "class BadSize(ValueError):\n    def __init__(self, size):\n        super().__init__(f'bad: {size}')\n"
            "        self.size = size\n"
            "class Square(Shape):\n    def __init__(self, n):\n        if n < 0:\n            raise BadSize(n)\n")
    assert_apart_with_reference(case, code)
    # An exception class of the answer's named like a built-in is not taken for it.
    fake = Case(tests="try:\n    f()\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n", entry_point="f")
    impostor = "class ValueError(Exception):\n    pass\ndef f():\n    raise ValueError('not the built-in')\n"
    verdict = judge(fake, impostor, QUICK)
    assert not verdict.passed and "not the built-in" in verdict.stderr
