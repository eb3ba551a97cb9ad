"""In-sandbox tests without the answer in their process: two processes, one sandbox.

For tests the host cannot evaluate (loops, classes, files, expected exceptions...), the launcher forks
after containment. The **answer process** defines the answer's code and serves requests; the **tests
process** runs the tests (and a HumanEval prompt's helpers), where every name taken from the answer is
a ``Proxy``: calling it sends the arguments and gets back plain data, checked on arrival, or (only
where the reference did, sandbox_remote_tests._Client.admit) a handle to an object that stays in the
answer process. Only the tests process holds the status pipe; it is made non-dumpable before the fork
(same uid: no ptrace, no /proc reads of it) and, as the PID namespace's init, ignores the answer's
kill(). They share only the working directory; the tests' source reaches the tests process through a
private pipe after the fork. A list, dict or set of the tests passed to a call is updated in place;
built-in classes cross by name; other objects of the tests (a ``key=lambda``, a ``range``) stay in
the tests process, used by reference (requests back).

This file (messages, values, the answer process) and ``sandbox_remote_tests.py`` (the tests process)
are sent to the launcher as one source, in that order (nothing of the host is readable inside bwrap),
and run with the launcher's globals (``_frame``, the codec ``_encode``/``_decode``...).
"""

import builtins
import datetime
import json
import operator
import os
import types


class _AnswerGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Messages: one JSON list per line on a pipe.


class _Channel:
    def __init__(self, read_fd: int, write_fd: int):
        self.reader = os.fdopen(read_fd, "rb", buffering=65536)
        self.write_fd = write_fd

    def send(self, message: list) -> None:
        _write_line(self.write_fd, message)

    def receive(self) -> list:
        line = self.reader.readline()
        if not line:
            raise _AnswerGone()
        return json.loads(line)


# Between the two processes, values are the launcher's plain tagged data (``_encode``/``_decode``),
# plus dates and times (stdlib classes the two sides rebuild alike), plus what ``special`` makes of
# everything else: a handle to one of the answer's objects, a built-in class by name, or one of the
# tests' objects by reference.
_TIMES = {"date": datetime.date, "datetime": datetime.datetime, "time": datetime.time}


def _pack(value, special):
    def other(item):
        if type(item) in _TIMES.values():
            return ["dt", type(item).__name__, item.isoformat()]
        if type(item) is datetime.timedelta:
            return ["td", item.days, item.seconds, item.microseconds]
        return special(item)
    return _encode(value, 0, other)


def _unpack(tagged, special):
    def other(item):
        if item[0] == "dt" and len(item) == 3 and item[1] in _TIMES and type(item[2]) is str:
            return _parse(_TIMES[item[1]].fromisoformat, item[2])
        if item[0] == "td" and len(item) == 4 and all(type(n) is int for n in item[1:]):
            return _parse(datetime.timedelta, *item[1:])
        return special(item)
    return _decode(tagged, 0, other)


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
    kind = _builtin_exception_class(names) or RuntimeError
    try:
        return kind(*values)
    except TypeError:
        return kind()


def _builtin_exception_class(names: list) -> type | None:
    kinds = (getattr(builtins, str(name), None) for name in names)
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseException)), None)


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

    def __bool__(self):
        return self._back("bool", (), {}) is True

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
        return ["h", id(value), _kind(value)]

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
        _flush_output()  # what it printed reaches the host before the tests may end (and the sandbox with them)
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


_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.MethodWrapperType)
_ITERATOR_MODULES = ("builtins", "itertools")


def _kind(value) -> str:
    """What the tests process is told a handle is (a claim of the answer's process, so the tests
    process trusts it only where a wrong claim helps no answer: see sandbox_remote_tests._admit)."""
    kind = type(value)
    if isinstance(value, type):
        return "class"
    if kind in _FUNCTION_TYPES:
        return "function"
    if kind.__name__ == "generator" or (kind.__module__ in _ITERATOR_MODULES and hasattr(kind, "__next__")):
        return "iterator"
    return "instance"


for _op in ("iter", "next", "len", "getitem"):
    setattr(_TestsObject, "__%s__" % _op, lambda self, *args, _op=_op: self._back(_op, args, {}))


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
        _print_traceback(error)
        _flush_output()
        while True:
            try:
                channel.receive()
            except _AnswerGone:
                return
            channel.send(_raised(error))
    _Server(namespace, channel).serve()
