"""In-sandbox tests without the answer in their process: two processes, one sandbox.

For tests the host cannot evaluate itself (loops, classes, files, expected exceptions...), the
launcher forks after containment. The **answer process** defines the answer's code and serves requests;
the **tests process** runs the tests (and a HumanEval prompt's own helpers), where every name the tests
take from the answer is a ``Proxy``: calling it, reading an attribute, iterating, using an operator
sends a request and gets back plain data (exact built-in types) or a handle to an object that stays in
the answer process. Only the tests process holds the status pipe and writes the verdict's ``end``
frame. The two run as the same unprivileged uid; the tests process is made non-dumpable before the
fork, so the answer cannot ptrace it, read its memory or open its fds through /proc, and as the PID
namespace's init it ignores the answer's kill(). They share only the working directory, so tests that
create or read files still work. The tests' source reaches the tests process through a private pipe
after the fork: it is never in the answer's process.

What this keeps from the answer: equality between an answer's object and anything else is never asked
of the answer (``Proxy == 5`` is False; two of its objects compare by its own ``__eq__``, which is its
class being tested), and a result is plain data or a handle, never an object with behaviour inside the
tests' process. A test variable passed to a call (a list, dict or set) is updated in place with the
answer's changes to it. Built-in classes (``int``, ``ValueError``) cross by name. Other objects of the
tests passed to the answer (a ``key=lambda``, a ``range``, an iterator) stay in the tests process and
are used by reference: the answer's calls, iteration and indexing of them are requests back.

This file is sent to the launcher as source in the job (it must work inside bwrap, where nothing of the
host is readable) and run with the launcher's globals (``_frame``, ``_encode``, ``_decode``...).
"""

import builtins
import datetime
import json
import operator
import os
import sys


class _AnswerGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Messages: one JSON list per line on a pipe.


class _Channel:
    def __init__(self, read_fd: int, write_fd: int):
        self.reader = os.fdopen(read_fd, "rb", buffering=65536)
        self.write_fd = write_fd

    def send(self, message: list) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[os.write(self.write_fd, data):]

    def receive(self) -> list:
        line = self.reader.readline()
        if not line:
            raise _AnswerGone()
        return json.loads(line)


# Between the two processes, values are the plain tagged data of the host's wire, plus dates and times
# (stdlib classes the two sides rebuild alike), plus what ``special`` makes of everything else: a handle
# to one of the answer's objects, a built-in class by name, or one of the tests' objects by reference.
_CONTAINERS = {list: "l", tuple: "t", set: "S", frozenset: "F"}
_CONTAINER_KINDS = {tag: kind for kind, tag in _CONTAINERS.items()}
_TIMES = (datetime.date, datetime.datetime, datetime.time)


def _pack(value, special, depth: int = 0):
    if depth > MAX_DEPTH:
        raise _Unserializable("nested deeper than %d" % MAX_DEPTH)
    kind = type(value)
    if kind in _TIMES:
        return ["dt", kind.__name__, value.isoformat()]
    if kind is datetime.timedelta:
        return ["td", value.days, value.seconds, value.microseconds]
    if kind in _CONTAINERS:
        return [_CONTAINERS[kind], [_pack(item, special, depth + 1) for item in value]]
    if kind is dict:
        return ["d", [[_pack(k, special, depth + 1), _pack(v, special, depth + 1)] for k, v in value.items()]]
    try:
        return _encode(_plain_scalar(value), depth)
    except _Unserializable:
        return special(value)


def _unpack(tagged, special):
    tag = tagged[0]
    if tag in _CONTAINER_KINDS:
        return _CONTAINER_KINDS[tag](_unpack(item, special) for item in tagged[1])
    if tag == "d":
        return {_unpack(k, special): _unpack(v, special) for k, v in tagged[1]}
    if tag == "dt" and tagged[1] in ("date", "datetime", "time"):
        return getattr(datetime, tagged[1]).fromisoformat(tagged[2])
    if tag == "td":
        return datetime.timedelta(int(tagged[1]), int(tagged[2]), int(tagged[3]))
    if tag in ("n", "B", "i", "f", "s", "b"):
        return _decode(tagged)
    return special(tagged)


def _refuse(value):
    raise _Unserializable("not plain data: %s" % type(value).__name__)


def _no_special(tagged):
    raise TypeError("unexpected value tag %r" % (tagged[0],))


def _raised(error: BaseException, objects: dict | None = None) -> list:
    """An exception as a message: its classes' names and its arguments (plain data, else their str);
    from the answer's process also handles to the error and its class (``objects`` keeps them)."""
    args = []
    for arg in error.args[:8]:
        try:
            args.append(_pack(arg, _refuse))
        except (_Unserializable, RecursionError):
            args.append(["s", str(arg)[:2000]])
    message = ["raise", _class_names(type(error)), args]
    if objects is not None:
        objects[id(error)], objects[id(type(error))] = error, type(error)
        message += [id(error), id(type(error))]
    return message


def _class_names(kind: type) -> list:
    """The names of a class and its bases; one that is not the built-in of that name gets a "~"
    first, so an answer's class called ValueError is never taken for the built-in one."""
    return [k.__name__ if getattr(builtins, k.__name__, None) is k else "~" + k.__name__ for k in kind.__mro__]


def _builtin_exception(names: list, args: list) -> BaseException:
    """The first built-in exception class among an error's class names (its own class may be one the
    answer defined, which does not exist here), with its arguments."""
    values = [_unpack(arg, _no_special) for arg in args]
    for name in names:
        kind = getattr(builtins, str(name), None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            try:
                return kind(*values)
            except TypeError:
                return kind()
    return RuntimeError(*values)


# ---------------------------------------------------------------------------------------------------
# The answer process: defines the code, then serves requests until the tests process closes the pipe.


class _TestsObject:
    """An object of the tests' (a function, a range, an iterator...) in the answer's hands: calling or
    iterating it goes back to the tests' process, where it stays."""

    def __init__(self, server, ident: int, name: str):
        self._server, self._ident = server, ident
        self.__name__ = self.__qualname__ = name  # what functools.wraps copies
        self.__doc__, self.__module__ = None, "__tests__"

    def __call__(self, *args, **kwargs):
        return self._back("call", args, kwargs)

    def __iter__(self):
        return self._back("iter", (), {})

    def __next__(self):
        return self._back("next", (), {})

    def __len__(self):
        return self._back("len", (), {})

    def __bool__(self):
        return self._back("bool", (), {}) is True

    def __getitem__(self, key):
        return self._back("getitem", (key,), {})

    def _back(self, operation: str, args, kwargs):
        server = self._server
        channel = server.channel
        channel.send(["cb", self._ident, operation, [server.encode(a) for a in args],
                      [[k, server.encode(v)] for k, v in kwargs.items()]])
        while True:
            message = channel.receive()
            if message[0] == "cbret":
                return server.decode(message[1])
            if message[0] == "raise":
                raise _builtin_exception(message[1], message[2])
            server.handle(message)  # a request made by the tests' code while it runs


class _Server:
    def __init__(self, namespace: dict, channel: _Channel):
        self.namespace, self.channel = namespace, channel
        self.objects: dict = {}

    def encode(self, value):
        try:
            return _pack(value, self._special)
        except (_Unserializable, RecursionError):
            return self._special(value)  # too deep: the whole value stays here

    def _special(self, value):
        if isinstance(value, _TestsObject):
            return ["c", value._ident, value.__name__]
        if type(value) is type and getattr(builtins, value.__name__, None) is value:
            return ["T", value.__name__]
        self.objects[id(value)] = value  # kept alive: the tests may use it again
        if isinstance(value, type) and issubclass(value, BaseException):
            return ["E", id(value), _class_names(value)]  # for `except` in the tests
        return ["h", id(value)]

    def decode(self, tagged):
        return _unpack(tagged, self._unspecial)

    def _unspecial(self, tagged):
        if tagged[0] == "h":
            return self.objects[tagged[1]]
        if tagged[0] == "c":
            return _TestsObject(self, tagged[1], str(tagged[2]))
        if tagged[0] == "T":
            return _builtin_type(tagged[1])
        raise TypeError("unexpected value tag %r" % (tagged[0],))

    def serve(self) -> None:
        while True:
            try:
                message = self.channel.receive()
            except _AnswerGone:  # the tests are done
                return
            self.handle(message)

    def handle(self, message: list) -> None:
        try:
            value, changed = self.perform(message)
            reply = ["ok", self.encode(value), changed]
        except BaseException as error:  # the answer's exception is its outcome for this request
            reply = _raised(error, self.objects)
        _flush()  # what it printed reaches the host before the tests may end (and the sandbox with them)
        self.channel.send(reply)

    def perform(self, message: list):
        kind = message[0]
        if kind == "get":
            if message[1] not in self.namespace:
                raise NameError("name %r is not defined" % message[1])
            return self.namespace[message[1]], []
        if kind == "call":
            function = self.decode(message[1])
            args = [self.decode(a) for a in message[2]]
            kwargs = {k: self.decode(v) for k, v in message[3]}
            value = function(*args, **kwargs)
            return value, self._changed(args, kwargs, message[4])
        operands = [self.decode(o) for o in message[2]]
        return _OPERATIONS[message[1]](*operands), []

    def _changed(self, args, kwargs, watched):
        """The new contents of the arguments the tests want back (their own lists, dicts, sets)."""
        changed = []
        for where in watched:
            value = args[where] if type(where) is int else kwargs[where]
            try:
                changed.append([where, _pack(value, _refuse)])
            except (_Unserializable, RecursionError):
                changed.append([where, None])
        return changed


def _builtin_type(name) -> type:
    kind = getattr(builtins, str(name), None)
    if not isinstance(kind, type):
        raise TypeError("no built-in type %r" % (name,))
    return kind


# What the answer may do with an object of the tests' (the client runs it on the real object).
_BACK = {"call": lambda f, *a, **k: f(*a, **k), "iter": lambda o: iter(o), "next": lambda o: next(o),
         "len": lambda o: len(o), "bool": lambda o: bool(o), "getitem": lambda o, key: o[key]}


def _exit_context(manager, has_error):
    # The tests' exception is not sent over; the manager learns only whether there was one.
    error = RuntimeError("raised in the with block") if has_error else None
    return type(manager).__exit__(manager, type(error) if error else None, error, None)


_OPERATIONS = {
    "attr": getattr, "setattr": setattr, "delattr": delattr, "len": len, "iter": iter, "next": next,
    "str": str, "repr": repr, "hash": hash, "bool": bool, "format": format, "int": int, "float": float,
    "index": lambda o: o.__index__(), "round": round, "contains": lambda o, x: x in o,
    "getitem": lambda o, k: o[k], "setitem": lambda o, k, v: o.__setitem__(k, v),
    "delitem": lambda o, k: o.__delitem__(k), "enter": lambda m: type(m).__enter__(m), "exit": _exit_context,
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "neg": lambda a: -a, "pos": lambda a: +a,
    "abs": abs, "invert": lambda a: ~a, "reversed": reversed, "isinstance": isinstance, "issubclass": issubclass,
}
_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and", "or", "xor",
           "matmul")
for _name in _BINARY:
    _OPERATIONS[_name] = getattr(operator, _name + "_" if _name in ("and", "or") else _name)


def serve_answer(code: str, channel: _Channel) -> None:
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(compile(code, "<program>", "exec"), namespace)
    except BaseException as error:
        # Every request now gets the definition's error: the tests fail with its type.
        _report_traceback(error)
        _flush()
        while True:
            try:
                channel.receive()
            except _AnswerGone:
                return
            channel.send(_raised(error))
    _Server(namespace, channel).serve()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _report_traceback(error: BaseException) -> None:
    try:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stderr.flush()
    except BaseException:
        pass


# ---------------------------------------------------------------------------------------------------
# The tests process: proxies for the answer's objects, and the tests run against them.


class _Client:
    def __init__(self, channel: _Channel):
        self.channel = channel
        self.proxies: dict = {}  # handle -> Proxy, so `is` works on the answer's objects
        self.callbacks: dict = {}
        self.exception_classes: dict = {}  # handle -> a local stand-in class, so `except` can name it

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
            base = next((getattr(builtins, str(n)) for n in names if isinstance(getattr(builtins, str(n), None), type)
                         and issubclass(getattr(builtins, str(n)), BaseException)), Exception)
            self.exception_classes[handle] = type(str(names[0]).lstrip("~") or "AnswerError", (base,), {
                "__module__": "__answer__", "__getattr__": _remote_attribute})
        return self.exception_classes[handle]

    def request(self, message: list, watched=()):
        self.channel.send(message)
        while True:
            reply = self.channel.receive()
            if reply[0] == "ok":
                self._apply_changes(watched, reply[2])
                return self.decode(reply[1])
            if reply[0] == "raise":
                raise self._exception(reply)
            if reply[0] != "cb":
                raise RuntimeError("malformed reply from the answer process")
            self._callback(reply)

    def _callback(self, message: list) -> None:
        try:
            target = self.callbacks[message[1]]
            args = [self.decode(a) for a in message[3]]
            kwargs = {k: self.decode(v) for k, v in message[4]}
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
                proxy = self.proxies[tagged[1]] = Proxy(tagged[1])
            return proxy
        raise RuntimeError("malformed value from the answer process")

    def call(self, target, args, kwargs):
        watched = {i: a for i, a in enumerate(args) if type(a) in (list, dict, set)}
        watched.update({k: v for k, v in kwargs.items() if type(v) in (list, dict, set)})
        return self.request(["call", self.encode(target), [self.encode(a) for a in args],
                             [[k, self.encode(v)] for k, v in kwargs.items()], list(watched)], watched)

    def operate(self, name: str, *operands):
        return self.request(["op", name, [self.encode(o) for o in operands]])


_CLIENT = None


def _remote_attribute(error, name):
    # Only called for attributes the stand-in instance lacks: the answer's error has them.
    remote = error.__dict__.get("_remote")
    if remote is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(remote, name)


class Proxy:
    """An object of the answer's, seen from the tests: every use is a request to the answer process."""

    __slots__ = ("_h", "__weakref__")

    def __init__(self, handle: int):
        object.__setattr__(self, "_h", handle)

    def __getattr__(self, name):
        return _CLIENT.operate("attr", self, name)

    def __setattr__(self, name, value):
        _CLIENT.operate("setattr", self, name, value)

    def __delattr__(self, name):
        _CLIENT.operate("delattr", self, name)

    def __call__(self, *args, **kwargs):
        return _CLIENT.call(self, args, kwargs)

    def __bool__(self):
        return _CLIENT.operate("bool", self) is True

    def __iter__(self):
        return _CLIENT.operate("iter", self)

    def __next__(self):
        return _CLIENT.operate("next", self)

    def __len__(self):
        return _CLIENT.operate("len", self)

    def __hash__(self):
        return _CLIENT.operate("hash", self)

    def __enter__(self):
        return _CLIENT.operate("enter", self)

    def __exit__(self, kind, error, trace):
        return _CLIENT.operate("exit", self, error is not None) is True

    def __instancecheck__(self, obj):  # isinstance(x, AnswerClass): the answer's own classes decide
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
        if reflected:
            return _CLIENT.operate(name, operands[0], self)
        return _CLIENT.operate(name, self, *operands)
    return operation


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Proxy, "__%s__" % _name, _comparison(_name))
for _name in ("str", "repr", "int", "float", "index", "neg", "pos", "abs", "invert", "reversed", "round",
              "format", "contains", "getitem", "setitem", "delitem"):
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
    _CLIENT = _Client(channel)
    remote = job["remote"]
    namespace = _TestGlobals(__name__="__tests__", __builtins__=builtins)
    try:
        exec(compile(remote["prelude"], "<prompt>", "exec"), namespace)  # a HumanEval prompt's helpers
        if remote["entry_point"]:
            namespace[remote["entry_point"]] = _CLIENT.request(["get", remote["entry_point"]])
        exec(compile(tests, "<tests>", "exec"), namespace)
        if remote["check"]:
            namespace["check"](namespace[remote["entry_point"]])
    except _AnswerGone:
        _frame("exit", None, "the answer's process ended")
        return
    except SystemExit as stop:
        _frame("exit", None, _plain_code(stop.code))
        return
    except BaseException as error:
        _report_uncaught(error)
        return
    sys.stdout.flush()
    _frame("end")
