"""The tests process of a run apart: proxies for the answer's objects, and the tests run against them
(sandbox_remote.py has the design). Not a module: sent to the launcher appended to sandbox_remote.py,
whose names (``_Channel``, ``_pack``, ``_raised``...) and the launcher's globals it uses.
"""


class _NotPlain(BaseException):
    """A result the tests may not hold: raised past the tests' own ``except Exception``, and framed
    (``unplain``) even if a bare ``except`` swallows it."""


def _site() -> str:
    """Where in the tests (or the prompt's helpers) the current request comes from: file, line and
    instruction offset, the same in every run of the same tests."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename not in ("<tests>", "<prompt>"):
        frame = frame.f_back
    return "?" if frame is None else "%s:%d:%d" % (frame.f_code.co_filename, frame.f_lineno, frame.f_lasti)


def _handles(value, depth: int = 0) -> list:
    """The proxies in a decoded value (containers searched as deep as the wire allows)."""
    if type(value) is Proxy or (type(value) is type and value.__module__ == "__answer__"):
        return [value]  # an object of the answer's, or the stand-in for one of its exception classes
    if depth < MAX_DEPTH and type(value) in (list, tuple, set, frozenset):
        return [h for item in value for h in _handles(item, depth + 1)]
    if depth < MAX_DEPTH and type(value) is dict:
        return [h for pair in value.items() for item in pair for h in _handles(item, depth + 1)]
    return []


class _Client:
    def __init__(self, channel: _Channel, handle_sites):
        self.channel = channel
        self.proxies: dict = {}  # handle -> Proxy, so `is` works on the answer's objects
        self.callbacks: dict = {}
        self.exception_classes: dict = {}  # handle -> a local stand-in class, so `except` can name it
        # Where the answer may hand the tests an object rather than plain data: the sites where the
        # reference did (None: this run is the reference's own, which records them).
        self.allowed = None if handle_sites is None else set(handle_sites)
        self.recorded: set = set()
        self.refused: str | None = None

    def refuse(self, why: str):
        if self.refused is None:
            self.refused = why[:200]
        raise _NotPlain(why)

    def admit(self, value, message: list, site: str, plain_arguments: bool = False):
        """``value`` if the tests may hold it: plain data always; an object of the answer's only at a
        site where the reference's run got one too. In the reference's own run, an instance that a
        function returns for plain arguments is refused (a reference that forges a str or a number)."""
        found = _handles(value)
        if not found or message[0] == "get":
            return value
        if self.allowed is not None:
            if site not in self.allowed:
                self.refuse("not plain data: %s where the reference gave plain data (or there is none)" % _kinds(found))
            return value
        target = self.proxies.get(message[1][1]) if message[0] == "call" and message[1][:1] == ["h"] else None
        if plain_arguments and target is not None and _held_kind(target) == "function" \
                and "instance" in map(_held_kind, found):
            self.refuse("not plain data: an object returned for plain arguments")
        self.recorded.add(site)
        return value

    def _exception(self, reply: list) -> BaseException:
        """The answer's exception, to raise here: a built-in one as itself; one of its own classes as
        an instance of that class's stand-in, whose attributes are read from the real error."""
        names, args = reply[1], reply[2]
        if len(reply) != 5 or hasattr(builtins, str(names[0])):
            return _builtin_exception(names, args)
        stand_in = self._stand_in(reply[4], names)
        error = stand_in.__new__(stand_in)
        BaseException.__init__(error, *[_unpack(arg, _no_special) for arg in args])
        error.__dict__["_remote"] = self._unspecial(["h", reply[3]])
        return error

    def _stand_in(self, handle: int, names: list) -> type:
        if handle not in self.exception_classes:
            base = _builtin_exception_class(names) or Exception
            self.exception_classes[handle] = type(str(names[0]).lstrip("~") or "AnswerError", (base,), {
                "__module__": "__answer__", "__getattr__": _remote_attribute})
        return self.exception_classes[handle]

    def request(self, message: list, watched=(), plain_arguments: bool = False):
        site = _site()
        self.channel.send(message)
        while True:
            reply = self.channel.receive()
            if reply[0] == "ok":
                self._apply_changes(watched, reply[2])
                return self.admit(self.decode(reply[1]), message, site, plain_arguments)
            if reply[0] == "raise":
                error = self._exception(reply)
                if isinstance(error, (StopIteration, StopAsyncIteration)) and message[:2] != ["op", "next"]:
                    # only the end of the answer's own iterator: from a call it would end the tests'
                    # iteration early (all(map(check, cases)) is True)
                    error = RuntimeError("the answer raised %s" % type(error).__name__)
                raise error
            if reply[0] != "cb":
                raise RuntimeError("malformed reply from the answer process")
            self._callback(reply)

    def _callback(self, message: list) -> None:
        try:
            target = self.callbacks[message[1]]
            code = getattr(target, "__code__", None)
            site = "cb:%s:%s" % ((code.co_filename, code.co_firstlineno) if code else (type(target).__name__, 0))
            args = [self.admit(self.decode(a), ["cb"], site) for a in message[3]]
            kwargs = {k: self.admit(self.decode(v), ["cb"], site) for k, v in message[4]}
            value = _BACK[message[2]](target, *args, **kwargs)
            self.channel.send(["cbret", self.encode(value)])
        except _AnswerGone:
            raise
        except BaseException as error:
            self.channel.send(_raised(error))

    def _apply_changes(self, watched, changes) -> None:
        for where, tagged in changes:
            target = watched.get(where) if isinstance(watched, dict) else None
            if target is None or tagged is None:
                continue
            value = _unpack(tagged, _no_special)
            if type(target) is list and type(value) is list:
                target[:] = value
            elif type(target) in (dict, set) and type(value) is type(target):
                target.clear()
                target.update(value)

    def encode(self, value):
        """What the tests send: plain data, the answer's own objects (handles), or their own by reference."""
        return _pack(value, self._special)

    def _special(self, value):
        if type(value) is Proxy:
            return ["h", object.__getattribute__(value, "_h")]
        if type(value) is type and getattr(builtins, value.__name__, None) is value:
            return ["T", value.__name__]  # int, ValueError...: the same class on both sides
        if isinstance(value, type):  # a class of the tests': the answer cannot hold it
            raise TypeError("the tests passed their class %s to the answer" % value.__name__)
        self.callbacks[id(value)] = value  # functions, ranges, iterators...: used by reference
        return ["c", id(value), getattr(value, "__name__", type(value).__name__)]

    def decode(self, tagged):
        return _unpack(tagged, self._unspecial)

    def _unspecial(self, tagged):
        if tagged[0] == "T":
            return _builtin_type(tagged[1])
        if tagged[0] == "E" and type(tagged[1]) is int and type(tagged[2]) is list:
            return self._stand_in(tagged[1], tagged[2])
        if tagged[0] == "c":
            return self.callbacks[tagged[1]]  # one of the tests' own objects, handed back
        if tagged[0] == "h" and type(tagged[1]) is int:
            proxy = self.proxies.get(tagged[1])
            if proxy is None:
                kind = tagged[2] if len(tagged) == 3 and type(tagged[2]) is str else "instance"
                proxy = self.proxies[tagged[1]] = Proxy(tagged[1], kind)
            return proxy
        raise RuntimeError("malformed value from the answer process")

    def call(self, target, args, kwargs):
        watched = {i: a for i, a in enumerate(args) if type(a) in (list, dict, set)}
        watched.update({k: v for k, v in kwargs.items() if type(v) in (list, dict, set)})
        return self.request(["call", self.encode(target), [self.encode(a) for a in args],
                             [[k, self.encode(v)] for k, v in kwargs.items()], list(watched)], watched,
                            not _handles([*args, *kwargs.values()]))

    def operate(self, name: str, *operands):
        return self.request(["op", name, [self.encode(o) for o in operands]])

    def combine(self, name: str, *operands):
        """Arithmetic between an object of the answer's and a value of the tests' (``obj * 3``): only
        where the reference got an object back from it, and never a plain result (``abs(f(x) - want)``
        cannot be answered with 0.0)."""
        if self.allowed is not None and _site() not in self.allowed:
            self.refuse("not plain data: %s of an object of the answer's with a value of the tests'" % name)
        result = self.operate(name, *operands)
        if type(result) is not Proxy:
            self.refuse("not plain data: %s of an object of the answer's with a value of the tests'" % name)
        return result


def _kinds(found: list) -> str:
    return "/".join(sorted(set(map(_held_kind, found))))


def _held_kind(found) -> str:
    return object.__getattribute__(found, "_k") if type(found) is Proxy else "class"


_CLIENT = None
# Attributes whose values are plain strings or None whoever made the object; every other dunder is
# refused on the answer's objects (numpy's __array__ hooks, __class__, __dict__...).
_PLAIN_DUNDERS = ("__name__", "__qualname__", "__doc__", "__module__")


def _remote_attribute(error, name):
    # Only called for attributes the stand-in instance lacks: the answer's error has them.
    remote = error.__dict__.get("_remote")
    if remote is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(remote, name)


class Proxy:
    """An object of the answer's, seen from the tests: every use is a request to the answer process."""

    __slots__ = ("_h", "_k", "__weakref__")

    def __init__(self, handle: int, kind: str = "instance"):
        object.__setattr__(self, "_h", handle)
        object.__setattr__(self, "_k", kind)

    def __getattr__(self, name):
        if name.startswith("__") and name not in _PLAIN_DUNDERS:
            raise AttributeError(name)
        return _CLIENT.operate("attr", self, name)

    def __call__(self, *args, **kwargs):
        return _CLIENT.call(self, args, kwargs)

    def __bool__(self):
        return _CLIENT.operate("bool", self) is True

    def __exit__(self, kind, error, trace):
        return _CLIENT.operate("exit", self, error is not None) is True

    def __instancecheck__(self, obj):
        # isinstance(x, AnswerClass): the answer's classes decide for its own objects; plain data of
        # the tests' (exact built-in types) is an instance of none of its classes, and is not sent.
        if type(obj) is not Proxy:
            return False
        return _CLIENT.operate("isinstance", obj, self) is True

    def __subclasscheck__(self, kind):
        return _CLIENT.operate("issubclass", kind, self) is True


def _comparison(name):
    # Only two of the answer's objects are compared by the answer; against anything else it has no say.
    def compare(self, other):
        if type(other) is not Proxy:
            return NotImplemented
        return _CLIENT.operate(name, self, other)
    return compare


def _forward(name, reflected=False):
    def operation(self, *operands):
        ordered = (operands[0], self) if reflected else (self,) + operands
        if name in _COMBINING and any(type(o) is not Proxy for o in operands):
            return _CLIENT.combine(name, *ordered)
        return _CLIENT.operate(name, *ordered)
    return operation


# Arithmetic whose other operand is a value the tests compute with (``obj - want``). Membership,
# ``x in obj``, is the object's own method, as ``obj.contains(x)`` is.
_COMBINING = set(_BINARY)


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Proxy, "__%s__" % _name, _comparison(_name))
for _name in ("str", "repr", "int", "float", "index", "neg", "pos", "abs", "invert", "reversed", "round",
              "format", "contains", "getitem", "setitem", "delitem", "setattr", "delattr", "iter", "next", "len",
              "hash", "enter"):
    setattr(Proxy, "__%s__" % _name, _forward(_name))
for _name in _BINARY:
    setattr(Proxy, "__%s__" % _name, _forward(_name))
    setattr(Proxy, "__r%s__" % _name, _forward(_name, reflected=True))


class _TestGlobals(dict):
    """The tests' globals: a name they do not define and that is not a built-in is the answer's."""

    def __missing__(self, name):
        if hasattr(builtins, name):
            return getattr(builtins, name)
        value = _CLIENT.request(["get", name])
        self[name] = value
        return value


def run_tests(job: dict, tests: str, channel: _Channel) -> None:
    """Run the tests against the answer process; frame how they ended (the verdict's source)."""
    global _CLIENT
    remote = job["remote"]
    _CLIENT = _Client(channel, remote.get("handle_sites"))
    namespace = _TestGlobals(__name__="__tests__", __builtins__=builtins)
    try:
        exec(compile(remote["prelude"], "<prompt>", "exec"), namespace)  # a HumanEval prompt's helpers
        if remote["entry_point"]:
            namespace[remote["entry_point"]] = _CLIENT.request(["get", remote["entry_point"]])
        exec(compile(tests, "<tests>", "exec"), namespace)
        if remote["check"]:
            namespace["check"](namespace[remote["entry_point"]])
    except BaseException as error:
        _frame_refusal()
        if isinstance(error, SystemExit):
            _frame("exit", None, _plain_code(error.code))
        elif isinstance(error, _AnswerGone):
            _frame("exit", None, "the answer's process ended")
        else:
            _report_uncaught(error)
        return
    sys.stdout.flush()
    if _frame_refusal():  # the tests caught the refusal themselves (a bare except): still a failure
        return
    if _CLIENT.allowed is None:
        _frame("sites", sorted(_CLIENT.recorded))
    _frame("end")


def _frame_refusal() -> bool:
    if _CLIENT.refused is None:
        return False
    _frame("unplain", None, _CLIENT.refused)
    return True
