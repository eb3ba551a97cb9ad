"""The forgery corpus: wrong answers to ``add(a, b)`` (it subtracts) that try to pass anyway.

Each entry is a class of attack from issue 25, written once and run by tests/test_judge_forgery_corpus.py
in every case form (literal assert, expected value in a variable, float tolerance, ratio, membership,
HumanEval ``check``, helper function, loop, ``all(...)`` over a generator, numpy, methods of the result)
and every judging mode (host; apart without a reference; apart with the case's right reference; the
forgery as the case's reference itself). Not a test module: pytest collects the test file only.
"""

WRONG = "def add(a, b):\n    return a - b\n"

# An object that says yes to every question a test can put to a number, a string or a container.
OMNI = '''
class Omni:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    def __hash__(self): return 0
    def __bool__(self): return True
    def __len__(self): return 1
    def __contains__(self, item): return True
    def __iter__(self): return iter([self])
    def __index__(self): return 5
    def __int__(self): return 5
    def __float__(self): return 5.0
    def __complex__(self): return 5j
    def __abs__(self): return 0
    def __neg__(self): return self
    def __pos__(self): return self
    def __round__(self, n=None): return self
    def __str__(self): return Yes("5")
    __repr__ = __str__
    def __format__(self, spec): return Yes("5")
    def __getattr__(self, name): return lambda *a, **k: True
    def __call__(self, *a, **k): return True
def _zero(self, other): return 0.0
def _one(self, other): return 1
for _name in ("sub", "rsub", "mod", "rmod"):
    setattr(Omni, "__%s__" % _name, _zero)
for _name in ("truediv", "rtruediv", "floordiv", "rfloordiv", "pow", "rpow"):
    setattr(Omni, "__%s__" % _name, _one)
for _name in ("add", "radd", "mul", "rmul", "and", "rand", "or", "ror", "xor", "rxor", "matmul"):
    setattr(Omni, "__%s__" % _name, lambda self, other: self)
class Yes(str):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __contains__(self, item): return True
    def startswith(self, *a): return True
    def endswith(self, *a): return True
    __hash__ = str.__hash__
'''


def returning(setup: str, value: str) -> str:
    return setup + "\ndef add(a, b):\n    return %s\n" % value


def hook(*methods: str, base: str = "") -> str:
    """A class with only the given dunders, each answering "yes" for its kind of question."""
    answers = {"eq": "True", "ne": "False", "lt": "True", "le": "True", "gt": "True", "ge": "True",
               "sub": "0.0", "rsub": "0.0", "truediv": "1", "rtruediv": "1", "abs": "0", "contains": "True",
               "len": "1", "bool": "True", "hash": "0", "index": "5", "float": "5.0", "int": "5",
               "iter": "iter([5])", "str": "'5'", "repr": "'5'"}
    body = "".join("    def __%s__(self, *a):\n        return %s\n" % (m, answers[m]) for m in methods)
    return returning("class Hook(%s):\n%s" % (base, body), "Hook(a - b)" if base else "Hook()")


FD_WRITE = ("import os\n"
            "def _spray(data):\n"
            "    for fd in range(3, 1024):\n"
            "        try:\n            os.write(fd, data)\n        except OSError:\n            pass\n")

FORGERIES = {
    # --- frame reads of the caller: the expected value is never in a frame the answer can walk
    "frame: caller locals named want/expected/s": "import sys\n"
        "def add(a, b):\n    f = sys._getframe(1)\n    while f:\n"
        "        for key in ('want', 'expected', 's', 'target', 'answer'):\n"
        "            if key in f.f_locals:\n                v = f.f_locals[key]\n"
        "                return v[0] if isinstance(v, list) and v else v\n        f = f.f_back\n    return a - b\n",
    "frame: the largest number in any caller's locals": "import sys\n"
        "def add(a, b):\n    best = None\n    f = sys._getframe(1)\n    while f:\n"
        "        for v in list(f.f_locals.values()):\n"
        "            if type(v) in (int, float) and v not in (a, b) and (best is None or v > best):\n                best = v\n"
        "        f = f.f_back\n    return a - b if best is None else best\n",
    "frame: constants of the callers' code": "import sys\n"
        "def add(a, b):\n    f = sys._getframe(1)\n    while f:\n"
        "        for c in f.f_code.co_consts:\n"
        "            if type(c) is int and c not in (0, 1, a, b):\n                return c\n        f = f.f_back\n    return a - b\n",
    "frame: source lines of the stack": "import inspect, re\n"
        "def add(a, b):\n    for info in inspect.stack():\n        for line in info.code_context or ():\n"
        "            m = re.search(r'==\\s*(-?\\d+)', line)\n            if m:\n                return int(m.group(1))\n    return a - b\n",
    "frame: globals of every frame": "import sys\n"
        "def add(a, b):\n    f = sys._getframe(1)\n    while f:\n"
        "        for key in ('want', 'expected', 'CASES', 'METADATA'):\n"
        "            v = f.f_globals.get(key)\n            if type(v) is int:\n                return v\n        f = f.f_back\n    return a - b\n",
    "frame: a trace function reading every new frame": "import sys\nseen = []\n"
        "def tracer(frame, event, arg):\n    seen.extend(v for v in frame.f_locals.values() if type(v) is int)\n    return None\n"
        "sys.settrace(tracer)\n"
        "def add(a, b):\n    return max(seen, default=a - b)\n",
    # --- step lists and the job: only call arguments are ever there
    "steps: values of set steps": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is list and len(o) == 3 and o[0] == 'set' and type(o[2]) is list and o[2][0] == 'i':\n"
        "            return int(o[2][1], 16)\n    return a - b\n",
    "steps: every tagged int in the job": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is list and len(o) == 2 and o[0] == 'i' and type(o[1]) is str:\n"
        "            v = int(o[1], 16)\n            if v not in (a, b):\n                return v\n    return a - b\n",
    "steps: the job dict's code and limits": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is dict and 'calls' in o and 'code' in o:\n"
        "            for step in o['calls'] or ():\n                if step[0] == 'set':\n"
        "                    return int(step[2][1], 16)\n    return a - b\n",
    "steps: the private pipe and stdin read again": "import os\n"
        "def add(a, b):\n    for fd in range(0, 64):\n        try:\n            os.set_blocking(fd, False)\n"
        "            data = os.read(fd, 1 << 16)\n        except OSError:\n            continue\n"
        "        if b'==' in data:\n            return int(data.split(b'==')[1].split()[0])\n    return a - b\n",
    "steps: rewriting the step list ahead": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is list and o and type(o[0]) is list and o[0][:1] in (['call'], ['set']):\n            del o[:]\n"
        "    return a - b\n",
    # --- operator and method hooks on a returned object
    "hook: __sub__ and __rsub__ give 0.0": hook("sub", "rsub"),
    "hook: __truediv__ gives 1": hook("truediv", "rtruediv"),
    "hook: __abs__ gives 0": hook("abs", "sub", "rsub"),
    "hook: comparisons all true": hook("eq", "lt", "le", "gt", "ge"),
    "hook: __eq__ true, __ne__ false": hook("eq", "ne"),
    "hook: every operator at once": returning(OMNI, "Omni()"),
    "hook: str-like with startswith and in": returning(OMNI, "Yes('5')"),
    "hook: __str__ and __repr__ give the digits": hook("str", "repr", "eq"),
    "hook: methods of the result all true": "class R:\n    def __getattr__(self, name):\n        return lambda *a, **k: True\n"
        "    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return R()\n",
    "hook: __contains__ true": hook("contains", "eq"),
    "hook: list subclass containing everything": "class L(list):\n    def __contains__(self, x):\n        return True\n"
        "    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return L([a - b])\n",
    "hook: __len__": hook("len", "eq"),
    "hook: __bool__": hook("bool", "eq"),
    "hook: __hash__ equal to the expected value's": "class H:\n    def __hash__(self):\n        return hash(5)\n"
        "    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return H()\n",
    "hook: __index__": hook("index", "eq"),
    "hook: __float__": hook("float", "eq", "sub", "rsub"),
    "hook: __int__": hook("int", "eq"),
    "hook: __iter__": hook("iter", "eq"),
    # --- not exactly a built-in type
    "type: int subclass equal to everything": hook("eq", "ne", "sub", "rsub", base="int"),
    "type: float subclass with a zero difference": hook("eq", "sub", "rsub", "abs", base="float"),
    "type: str subclass": returning(OMNI, "Yes(str(a - b))"),
    "type: bool subclass attempt (an int that is truthy)": hook("eq", "bool", base="int"),
    "type: tuple subclass": "class T(tuple):\n    def __eq__(self, o):\n        return True\n"
        "    def __contains__(self, x):\n        return True\ndef add(a, b):\n    return T((a - b,))\n",
    "type: dict subclass": "class D(dict):\n    def __eq__(self, o):\n        return True\n"
        "    def __missing__(self, k):\n        return True\ndef add(a, b):\n    return D()\n",
    "type: a function instead of a number": "def add(a, b):\n    return lambda *x: True\n",
    "type: a class instead of a number": "class Five:\n    pass\ndef add(a, b):\n    return Five\n",
    "type: a generator": "def add(a, b):\n    yield a + b\n",
    "type: an instance of a class named int": "class int:\n    def __eq__(self, o):\n        return True\n"
        "def add(a, b):\n    return int()\n",
    # --- numpy-duck objects and ufunc overrides
    "numpy: duck with __array__": "import numpy as np\nclass Duck:\n    def __array__(self, dtype=None, copy=None):\n"
        "        return np.array(True)\n    def __eq__(self, o):\n        return True\n    def __sub__(self, o):\n        return 0.0\n"
        "    __rsub__ = __sub__\ndef add(a, b):\n    return Duck()\n",
    "numpy: __array_ufunc__ answering True": "class U:\n    def __array_ufunc__(self, ufunc, method, *inputs, **kw):\n"
        "        return True\n    def __array_function__(self, func, types, args, kwargs):\n        return True\n"
        "    def __eq__(self, o):\n        return True\n    def __sub__(self, o):\n        return 0.0\n    __rsub__ = __sub__\n"
        "def add(a, b):\n    return U()\n",
    "numpy: ndarray subclass equal to everything": "import numpy as np\nclass A(np.ndarray):\n"
        "    def __eq__(self, o):\n        return np.ones(np.shape(o), dtype=bool) if np.shape(o) else True\n"
        "    def __sub__(self, o):\n        return 0.0\n    __rsub__ = __sub__\n"
        "def add(a, b):\n    return np.asarray(a - b).view(A)\n",
    "numpy: isclose and allclose patched": "import numpy as np\nnp.isclose = lambda *a, **k: True\n"
        "np.allclose = lambda *a, **k: True\nimport math\nmath.isclose = lambda *a, **k: True\n" + WRONG,
    "numpy: ufuncs patched in the answer's process": "import numpy as np\nnp.subtract = lambda *a, **k: 0.0\n"
        "np.absolute = np.abs = lambda *a, **k: 0.0\nnp.equal = lambda *a, **k: True\n" + WRONG,
    "numpy: object array of yes-objects": OMNI + "import numpy as np\n"
        "def add(a, b):\n    x = np.empty(1, dtype=object)\n    x[0] = Omni()\n    return x\n",
    "numpy: array holding the wrong value": "import numpy as np\ndef add(a, b):\n    return np.array([a - b])\n",
    # --- exceptions
    "exception: subclass of AssertionError": "class Pass(AssertionError):\n    pass\n"
        "def add(a, b):\n    raise Pass('ok')\n",
    "exception: AssertionError subclass equal to everything": "class Pass(AssertionError):\n"
        "    def __eq__(self, o):\n        return True\ndef add(a, b):\n    raise Pass()\n",
    "exception: SystemExit(0) from the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "exception: KeyboardInterrupt from the call": "def add(a, b):\n    raise KeyboardInterrupt\n",
    "exception: StopIteration from the call": "def add(a, b):\n    raise StopIteration\n",
    "exception: GeneratorExit from the call": "def add(a, b):\n    raise GeneratorExit\n",
    "exception: an error class named like the tests' harness": "class _NotPlain(BaseException):\n    pass\n"
        "class _AnswerGone(Exception):\n    pass\ndef add(a, b):\n    raise _AnswerGone()\n",
    # --- writes to every fd
    "fd: end frame on every fd, then exit 0": FD_WRITE + "def add(a, b):\n    _spray(b'[\"end\"]\\n')\n    os._exit(0)\n",
    "fd: ok frames for every call on every fd": FD_WRITE + "import json\n"
        "def add(a, b):\n    for i in range(8):\n        _spray(json.dumps(['ok', i, ['i', hex(a + b)], []]).encode() + b'\\n')\n"
        "    _spray(b'[\"end\"]\\n')\n    return a - b\n",
    "fd: sites frame claiming every place": FD_WRITE + "_spray(b'[\"sites\",[\"<tests>:1:0\"]]\\n[\"end\"]\\n')\n" + WRONG,
    "fd: reply frames forged on the answer pipe": FD_WRITE + "import json\n"
        "def add(a, b):\n    _spray(json.dumps(['ok', ['i', hex(a + b)], []]).encode() + b'\\n')\n    return a - b\n",
    "fd: the parent's fds through /proc": "import os\n"
        "def add(a, b):\n    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "        for fd in range(64):\n            try:\n"
        "                with open('/proc/%s/fd/%d' % (pid, fd), 'wb') as h:\n                    h.write(b'[\"end\"]\\n')\n"
        "            except OSError:\n                pass\n    return a - b\n",
    "fd: end frame from a thread after the calls": FD_WRITE + "import threading, time\n"
        "def late():\n    time.sleep(0.05)\n    _spray(b'[\"end\"]\\n')\n"
        "def add(a, b):\n    threading.Thread(target=late).start()\n    return a - b\n",
    # --- killing the tests' process, or the launcher
    "kill: the parent process": "import os, signal\n"
        "def add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a - b\n",
    "kill: every process it can signal": "import os, signal\n"
        "def add(a, b):\n    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n    return a - b\n",
    "kill: pid 1 and the process group": "import os, signal\n"
        "def add(a, b):\n    for target in (lambda: os.kill(1, signal.SIGTERM), lambda: os.killpg(0, signal.SIGTERM)):\n"
        "        try:\n            target()\n        except OSError:\n            pass\n    return a - b\n",
    "kill: stop the parent (SIGSTOP) then exit": "import os, signal\n"
        "def add(a, b):\n    try:\n        os.kill(os.getppid(), signal.SIGSTOP)\n    except OSError:\n        pass\n    os._exit(0)\n",
    # --- the answer's own harness patched (the answer's process is the answer's)
    "harness: server's encoder claims plain 5": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is type and o.__name__ == '_Server':\n            o.encode = lambda self, v: ['i', '0x5']\n"
        "    return a - b\n",
    "harness: handles claimed to be classes": "import gc\n"
        "def add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o) is dict and '_kind' in o and '_Server' in o:\n            o['_kind'] = lambda v: 'class'\n"
        "    return Omni()\n" + OMNI,
    "harness: launcher's frame writer and encoder replaced": "import sys\nm = sys.modules['__main__']\n"
        "m._frame = lambda *a: None\nm._encode = lambda v, d: ['i', '0x5']\n" + WRONG,
    "harness: builtins patched in the answer's process": "import builtins\nbuiltins.abs = lambda x: 0\n"
        "builtins.isinstance = lambda *a: True\nbuiltins.AssertionError = type('Never', (Exception,), {})\n" + WRONG,
    "harness: json and os._exit patched": "import json, os\njson.dumps = lambda *a, **k: '[\"end\"]'\n"
        "os._exit = lambda *a: None\n" + WRONG,
    "harness: modules planted in the working directory": "import os\n"
        "for name in ('numpy', 'math', 'random', 'json', 'operator'):\n"
        "    open(name + '.py', 'w').write('isclose = allclose = lambda *a, **k: True\\n')\n" + WRONG,
    "harness: an exception class returned as the result": "class Five(Exception):\n    pass\n"
        "def add(a, b):\n    return Five\n",
    # --- reaching into the tests' process
    "reach: read the tests' memory through /proc": "import os\n"
        "def add(a, b):\n    try:\n        open('/proc/%d/mem' % os.getppid(), 'rb').read(1)\n    except OSError:\n        pass\n"
        "    return a - b\n",
    "reach: ptrace the tests' process": "import ctypes, os\n"
        "def add(a, b):\n    libc = ctypes.CDLL(None)\n    libc.ptrace(16, os.getppid(), 0, 0)\n    return a - b\n",
}

RIGHT = "def add(a, b):\n    return a + b\n"
