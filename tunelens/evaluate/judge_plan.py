"""Which tests can be judged on the host, and the plan for judging them there.

A case's tests are *host-judged* when every statement is an ``assert`` over expressions the host can
evaluate itself, except for calls into the answer (a ``probe`` each: the function's name and literal
arguments computed from the test's source). Only the probes run in the sandbox, with the test
variables they take; results come back as plain data and the host evaluates the asserts. The tests'
source and the expected values never enter the sandbox.

Accepted, per statement: ``assert EXPR[, message]`` (the message is never evaluated), ``name = literal``,
``name = call(...)``, a bare call ``f(x)``, docstrings, ``pass``, ``import math``; in the HumanEval form
(``def check(candidate): ...`` beside literal assignments such as ``METADATA``), the same inside ``check``.
``EXPR`` may use literals, comparisons, ``is`` against None/True/False, ``and or not``, arithmetic,
subscripts and slices, a few pure built-ins (``SAFE``), ``math`` functions, test variables and calls
into the answer. Anything else keeps the tests in the sandbox (judge.py; docs/eval-suites.md).
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import math
import operator
import threading

from tunelens.evaluate.sandbox_boot import _encode, _Unserializable as NotPlain

# CPython 3.11's ast.parse is not safe in concurrent threads (the judge's worker pool): it can fail with
# "SystemError: AST constructor recursion depth mismatch". Parsing is quick, so the judge parses one at a time.
_PARSE_LOCK = threading.Lock()


def parse_locked(source: str) -> ast.Module:
    with _PARSE_LOCK:
        return ast.parse(source)


# Built-ins the host may apply to plain data: pure, and bounded in time by the size of their input.
SAFE = {name: getattr(builtins, name) for name in (
    "abs", "round", "len", "sorted", "set", "frozenset", "tuple", "list", "dict", "float", "int", "str",
    "bool", "bytes", "min", "max", "sum", "all", "any", "reversed", "isinstance", "type", "repr", "range")}
SAFE_MATH = {name: getattr(math, name) for name in (
    "isclose", "fabs", "sqrt", "floor", "ceil", "log", "log2", "log10", "exp", "isnan", "isinf", "pi", "e",
    "inf", "nan", "trunc", "copysign", "hypot")}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_SINGLETONS = (None, True, False)
TYPE_NAMES = ("int", "float", "str", "bool", "bytes", "list", "tuple", "dict", "set", "frozenset")
VARIABLE = "_var_"  # host expressions name a test variable x as _var_x
# Built-ins that iterate their one argument: a result they take that is not plain data (a generator,
# an iterable object of the answer's) is turned into a list inside the sandbox, by the answer's code.
SIZED_BY_ARGUMENT = ("range", "bytes")
CONSUMERS = ("list", "tuple", "set", "frozenset", "sorted", "sum", "min", "max", "any", "all", "dict")


class NotHostShape(Exception):
    """Why a test statement cannot be judged on the host."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """One call into the answer: ``name(*args, **kwargs)``; each argument is tagged plain data or
    ``["$", variable]`` (the sandbox's copy of a test variable, so that mutations carry over)."""

    name: str
    args: list
    kwargs: list  # [[keyword, argument], ...]
    consume: bool = False  # the test iterates the result (list(f(x))): a generator is listed inside
    store: str | None = None  # the test assigns the result to this variable
    line: int = 0  # where the tests make the call (for a verdict's detail; never sent)

    def wire(self) -> list:
        return ["call", self.name, self.args, self.kwargs, self.consume, self.store]


@dataclasses.dataclass(frozen=True)
class HostAssert:
    """An assert whose calls into the answer are replaced by ``_probe<N>`` names."""

    expr: ast.expr
    line: int
    source: str


@dataclasses.dataclass(frozen=True)
class HostAssign:
    """``name = literal`` (value: the plain value) or ``name = call`` (expr: the probe's name); a bare
    call ``f(x)`` is one with ``name`` None (its result is only compared with the reference's)."""

    name: str | None
    expr: ast.expr | None
    value: object
    line: int
    source: str


@dataclasses.dataclass(frozen=True)
class HostPlan:
    probes: tuple[Probe, ...]
    statements: tuple  # HostAssert and HostAssign, in the tests' order
    # What the sandbox does, in order: ["set", name, tagged] just before the first call that takes the
    # variable as an argument, ["forget", name] when the tests reassign it, and the probes' calls.
    steps: tuple

    @property
    def asserts(self) -> tuple:
        return tuple(s for s in self.statements if isinstance(s, HostAssert))

    def wire(self) -> list:
        return [step.wire() if isinstance(step, Probe) else step for step in self.steps]


def host_plan(tests: str, entry_point: str | None) -> HostPlan | NotHostShape:
    """The plan for judging ``tests`` on the host, or ``NotHostShape`` saying why they can't be."""
    try:
        tree = parse_locked(tests)
        body, aliases = _statements(tree, entry_point)
        builder = _Builder(aliases, _bound_names(tree))
        statements = tuple(s for s in (builder.statement(node, tests) for node in body) if s is not None)
        if not builder.probes and not any(isinstance(s, HostAssert) for s in statements):
            raise NotHostShape("no asserts")
        return HostPlan(tuple(builder.probes), statements, builder.finished_steps())
    except NotHostShape as why:
        return why
    except (SyntaxError, RecursionError, ValueError) as err:
        return NotHostShape(f"does not parse: {err}")


def _statements(tree: ast.Module, entry_point: str | None) -> tuple[list, dict]:
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        return tree.body, {}
    check = checks[0]
    args = check.args
    if (len(checks) > 1 or not entry_point or len(args.args) != 1 or args.vararg or args.kwarg
            or args.kwonlyargs or args.posonlyargs or check.decorator_list):
        raise NotHostShape("check() is not def check(candidate)")
    for node in tree.body:
        if node is not check and not _literal_assignment(node) and not _ignorable(node):
            raise NotHostShape(f"line {node.lineno}: module-level {type(node).__name__} beside check()")
    return check.body, {args.args[0].arg: entry_point}


def _literal_assignment(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
        return False
    try:
        ast.literal_eval(node.value)
        return True
    except ValueError:
        return False


def _ignorable(node: ast.stmt) -> bool:
    if isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Name) and node.value.id == "print":
        return True  # a bare `print` (HumanEval/129) does nothing
    return isinstance(node, ast.Import) and all(alias.name == "math" and alias.asname is None
                                                 for alias in node.names)


def _bound_names(tree: ast.Module) -> set[str]:
    """Names the tests themselves bind (a call to one of them is not a call into the answer)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return bound


class _Builder:
    """Turns accepted asserts into host expressions, collecting the probes in evaluation order."""

    def __init__(self, aliases: dict, bound: set):
        self.aliases = aliases  # check(candidate): candidate -> the entry point
        self.bound = bound - set(aliases)
        self.probes: list[Probe] = []
        self.steps: list = []  # ["set", ...] / ["forget", ...] lists and probe indexes
        self.variables: set[str] = set()  # assigned so far
        # Literal values not yet sent: a value goes into the sandbox only when a call takes it as an
        # argument, so an expected value held in a variable (want = 15) never reaches the answer.
        self.unsent: dict[str, object] = {}
        self.sent: set[str] = set()  # variables the sandbox holds a copy of
        self.boolop = 0  # inside and/or: a probe there may not run in the original

    def finished_steps(self) -> tuple:
        return tuple(self.probes[step] if isinstance(step, int) else step for step in self.steps)

    def statement(self, node: ast.stmt, source: str):
        if _ignorable(node):
            return None
        text = ast.get_source_segment(source, node) or ""
        if isinstance(node, ast.Assert):
            return HostAssert(self.expr(node.test), node.lineno, text)
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id not in self.aliases):
            return self._assign(node, node.targets[0].id, text)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            expr = self.expr(node.value)
            if _is_probe(expr):
                return HostAssign(None, expr, None, node.lineno, text)
        raise NotHostShape(f"line {node.lineno}: {type(node).__name__} statement")

    def _assign(self, node: ast.Assign, name: str, text: str) -> HostAssign:
        expr = self.expr(node.value)
        if _is_probe(expr):  # name = f(...): the sandbox keeps the result under that name too
            index = _index(expr)
            self.probes[index] = dataclasses.replace(self.probes[index], store=name)
            self.variables.add(name)
            self.unsent.pop(name, None)
            self.sent.add(name)
            return HostAssign(name, expr, None, node.lineno, text)
        if _has_probe(expr) or _uses_variables(expr):
            raise NotHostShape(f"line {node.lineno}: assignment of a computed value")
        value = self._literal(expr, node.lineno)
        if name in self.sent:  # the sandbox's old copy must not come back as this variable's value
            self.steps.append(["forget", name])
            self.sent.discard(name)
        self.unsent[name] = value
        self.variables.add(name)
        return HostAssign(name, None, value, node.lineno, text)

    def _literal(self, expr: ast.expr, line: int):
        try:
            return _encode(evaluate(expr, {}))
        except NotPlain as why:
            raise NotHostShape(f"line {line}: value {why}") from None
        except NotHostShape:
            raise
        except Exception as err:  # a value the host cannot compute: leave the case in the sandbox
            raise NotHostShape(f"line {line}: value raises {type(err).__name__}") from None

    def expr(self, node: ast.expr) -> ast.expr:
        handler = getattr(self, "_" + type(node).__name__, None)
        if handler is None:
            raise NotHostShape(f"line {node.lineno}: {type(node).__name__} expression")
        return handler(node)

    def _Constant(self, node):
        return node

    def _Name(self, node):
        if node.id in TYPE_NAMES and node.id not in self.variables:
            return node  # a type, e.g. for isinstance()
        if node.id in self.variables:
            return ast.Name(VARIABLE + node.id, ast.Load())
        raise NotHostShape(f"line {node.lineno}: uses the name {node.id!r}")

    def _Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in SAFE_MATH:
            return node
        raise NotHostShape(f"line {node.lineno}: attribute .{node.attr}")

    def _List(self, node):  # and Tuple, Set: the same node with its items built
        return type(node)(elts=[self.expr(e) for e in self._no_star(node.elts)], ctx=ast.Load())

    _Tuple = _Set = _List

    def _Dict(self, node):
        if any(k is None for k in node.keys):
            raise NotHostShape(f"line {node.lineno}: ** in a dict")
        return ast.Dict([self.expr(k) for k in node.keys], [self.expr(v) for v in node.values])

    def _UnaryOp(self, node):
        if type(node.op) not in _UNARY:
            raise NotHostShape(f"line {node.lineno}: operator")
        return ast.UnaryOp(node.op, self.expr(node.operand))

    def _BinOp(self, node):
        if type(node.op) not in _BINOPS:
            raise NotHostShape(f"line {node.lineno}: operator {type(node.op).__name__}")
        left, right = self.expr(node.left), self.expr(node.right)
        if isinstance(node.op, ast.Pow) and (_has_probe(left) or _has_probe(right)):
            raise NotHostShape(f"line {node.lineno}: ** on an answer's result")  # unbounded on the host
        return ast.BinOp(left, node.op, right)

    def _BoolOp(self, node):
        self.boolop += 1
        try:
            return ast.BoolOp(node.op, [self.expr(v) for v in node.values])
        finally:
            self.boolop -= 1

    def _Compare(self, node):
        for op, right in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise NotHostShape(f"line {node.lineno}: comparison")
            if isinstance(op, (ast.Is, ast.IsNot)) and not _is_singleton(right):
                raise NotHostShape(f"line {node.lineno}: 'is' against something other than None/True/False")
        return ast.Compare(self.expr(node.left), node.ops, [self.expr(c) for c in node.comparators])

    def _Subscript(self, node):
        return ast.Subscript(self.expr(node.value), self.expr(node.slice), ast.Load())

    def _Slice(self, node):
        part = lambda p: None if p is None else self.expr(p)  # noqa: E731
        return ast.Slice(part(node.lower), part(node.upper), part(node.step))

    def _Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id in SAFE and func.id not in self.bound | set(self.aliases):
            args = [self.expr(a) for a in self._no_star(node.args)]
            if func.id in SIZED_BY_ARGUMENT and any(_has_probe(a) for a in args):
                # range(n) and bytes(n) cost time or memory on the host in proportion to an answer's n
                raise NotHostShape(f"line {node.lineno}: {func.id}() of an answer's result")
            if func.id in CONSUMERS and len(args) == 1 and _is_probe(args[0]):
                index = _index(args[0])
                self.probes[index] = dataclasses.replace(self.probes[index], consume=True)
            return ast.Call(func, args, self._keywords(node.keywords))
        if isinstance(func, ast.Attribute) and self._Attribute(func) is func:
            return ast.Call(func, [self.expr(a) for a in self._no_star(node.args)], self._keywords(node.keywords))
        if isinstance(func, ast.Name):
            return self._probe(node, func.id)
        raise NotHostShape(f"line {node.lineno}: call of {type(func).__name__}")

    def _probe(self, node: ast.Call, name: str) -> ast.Name:
        target = self.aliases.get(name)
        if target is None:
            if name in self.bound or hasattr(builtins, name):
                raise NotHostShape(f"line {node.lineno}: call of {name!r}, not a function of the answer")
            target = name
        args = [self._argument(a) for a in self._no_star(node.args)]
        kwargs = [[k.arg, self._argument(k.value)] for k in self._named(node.keywords)]
        if self.boolop and any(a[0] == "$" for a in args + [v for _, v in kwargs]):
            # The sandbox makes every call; one the original would have skipped must not mutate a variable.
            raise NotHostShape(f"line {node.lineno}: a call on a variable inside and/or")
        self.probes.append(Probe(target, args, kwargs, line=node.lineno))
        self.steps.append(len(self.probes) - 1)
        return ast.Name(f"_probe{len(self.probes) - 1}", ast.Load())

    def _argument(self, node: ast.expr) -> list:
        """A test variable by name (the sandbox passes its own copy, mutations and all), or a literal."""
        expr = self.expr(node)
        if isinstance(expr, ast.Name) and expr.id.startswith(VARIABLE):
            name = expr.id[len(VARIABLE):]
            if name in self.unsent:  # first use as an argument since its assignment: send it now
                self.steps.append(["set", name, self.unsent.pop(name)])
                self.sent.add(name)
            return ["$", name]
        if _has_probe(expr) or _uses_variables(expr):
            raise NotHostShape(f"line {node.lineno}: an argument computed from results or variables")
        return self._literal(expr, node.lineno)

    @staticmethod
    def _no_star(items):
        if any(isinstance(i, ast.Starred) for i in items):
            raise NotHostShape("*args")
        return items

    @staticmethod
    def _named(keywords):
        if any(k.arg is None for k in keywords):
            raise NotHostShape("**kwargs")
        return keywords

    def _keywords(self, keywords) -> list:
        return [ast.keyword(k.arg, self.expr(k.value)) for k in self._named(keywords)]


def pinned(plan: HostPlan) -> dict[int, object] | None:
    """Each call's literal, when every assert is ``call(...) == literal`` (or ``is`` None/True/False) and
    every call is pinned by one; else None (a call stored, made bare, or checked loosely)."""
    literals = {}
    for statement in plan.statements:
        if isinstance(statement, HostAssign):
            if statement.expr is not None:
                return None
            continue
        expr = statement.expr
        if not _has_probe(expr) and not _uses_variables(expr):
            continue  # `assert True`: a check of the tests' own, not of a result
        if not (isinstance(expr, ast.Compare) and len(expr.ops) == 1 and type(expr.ops[0]) in (ast.Eq, ast.Is)):
            return None
        call, literal = (expr.left, expr.comparators[0]) if _is_probe(expr.left) else (expr.comparators[0], expr.left)
        if not _is_probe(call) or _has_probe(literal) or _uses_variables(literal):
            return None
        try:
            literals[_index(call)] = evaluate(literal, None)
        except Exception:  # a literal the host cannot compute (1 / 0): not a pin
            return None
    return literals if len(literals) == len(plan.probes) else None


def _is_singleton(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and any(node.value is s for s in _SINGLETONS)


def _uses_variables(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id.startswith(VARIABLE) for n in ast.walk(node))


def _is_probe(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id.startswith("_probe")


def _index(probe: ast.Name) -> int:
    return int(probe.id[len("_probe"):])


def _has_probe(node: ast.expr) -> bool:
    return any(_is_probe(n) for n in ast.walk(node))


# ---------------------------------------------------------------------------------------------------
# Evaluating a host expression: only the node types the builder accepts, over plain data.

# An answer's result multiplied into a sequence longer than this is refused (host memory).
MAX_REPEAT = 10_000_000


def evaluate(node: ast.expr, probes) -> object:
    """The value of a host expression; ``probes[i]`` gives (or raises for) the answer's i-th result,
    fetched only when the expression needs it (``and``/``or`` short-circuit as in Python), and
    ``probes.variable(name)`` a test variable's value as of the last result fetched."""
    kind = type(node)
    if kind is ast.Constant:
        return node.value
    if kind is ast.Name:
        if node.id.startswith("_probe"):
            return probes[_index(node)]
        if node.id.startswith(VARIABLE):
            return probes.variable(node.id[len(VARIABLE):])
        return getattr(builtins, node.id)
    if kind is ast.Attribute:
        return SAFE_MATH[node.attr]
    if kind in (ast.List, ast.Tuple, ast.Set):
        items = [evaluate(e, probes) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[kind](items)
    if kind is ast.Dict:
        return {evaluate(k, probes): evaluate(v, probes) for k, v in zip(node.keys, node.values)}
    if kind is ast.UnaryOp:
        return _UNARY[type(node.op)](evaluate(node.operand, probes))
    if kind is ast.BinOp:
        return _binop(node, probes)
    if kind is ast.BoolOp:
        return _boolop(node, probes)
    if kind is ast.Compare:
        return _compare(node, probes)
    if kind is ast.Subscript:
        return evaluate(node.value, probes)[evaluate(node.slice, probes)]
    if kind is ast.Slice:
        part = lambda p: None if p is None else evaluate(p, probes)  # noqa: E731
        return slice(part(node.lower), part(node.upper), part(node.step))
    if kind is ast.Call:
        func = node.func
        function = SAFE[func.id] if isinstance(func, ast.Name) else SAFE_MATH[func.attr]
        args = [evaluate(a, probes) for a in node.args]
        return function(*args, **{k.arg: evaluate(k.value, probes) for k in node.keywords})
    raise NotHostShape(f"cannot evaluate {kind.__name__}")


def _binop(node: ast.BinOp, probes):
    left, right = evaluate(node.left, probes), evaluate(node.right, probes)
    if isinstance(node.op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                raise MemoryError("refused to build a sequence of %d items on the host" % (len(seq) * count))
    return _BINOPS[type(node.op)](left, right)


def _boolop(node: ast.BoolOp, probes):
    value = None
    for operand in node.values:
        value = evaluate(operand, probes)
        if bool(value) is isinstance(node.op, ast.Or):  # and: stop at the first falsy; or: the first truthy
            return value
    return value


def _compare(node: ast.Compare, probes) -> bool:
    left = evaluate(node.left, probes)
    for op, right_node in zip(node.ops, node.comparators):
        right = evaluate(right_node, probes)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True
