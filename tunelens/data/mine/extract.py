"""One file -> its candidate pairs: the rules for which functions are minable, and their completions.

A function is mined when it is public (no leading underscore), documented, top-level or a method of a
public top-level class, not a test, and self-contained: every name it uses is a builtin, its own local,
or a module imported unconditionally at the top of its file (that import is then put at the top of the
completion). A function that reads module globals, constants, helpers or classes of its module, declares
`global`, needs a relative or private import, calls `super()`, or is a stub (`pass`, `raise
NotImplementedError`) is skipped, with the reason counted. Methods may use `self`/`cls` beside that.

`mine_file` is a pure function of its task and the config, so files can be mined in worker processes;
duplicates across files are removed afterwards, in file order, by the caller.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import gc
import io
import re
import textwrap
import tokenize
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator

from tunelens.data.lint import check_response
from tunelens.data.mine.config import MineConfig
from tunelens.data.mine.instructions import docstring_summary, write_instruction
from tunelens.data.mine.sources import FileTask, is_private
from tunelens.data.records import pair_to_record

# dunder names like __file__ are module state even though some are also attributes of `builtins`
BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("__")) | {"__import__", "__debug__"}
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEF = re.compile(rb"\bdef\b")  # absent: the file defines no function, so parsing it cannot give a pair


@dataclass
class FileOutcome:
    """What one file gave: pairs in source order, plus counts that reconcile with functions_seen."""

    pairs: list[dict] = field(default_factory=list)
    functions_seen: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> functions
    unreadable: bool = False  # could not be read, or has a `def` but does not parse as Python 3


def mine_file(task: FileTask, config: MineConfig) -> FileOutcome:
    """Candidate pairs from one file: every minable function, before cross-file duplicates are removed."""
    outcome = FileOutcome()
    try:
        with open(task.path, "rb") as handle:
            data = handle.read()
    except OSError:
        outcome.unreadable = True
        return outcome
    if not _DEF.search(data):  # no function at all: a third of site-packages' files (constants, re-exports)
        return outcome
    with _gc_paused():
        parsed = _parse(data)
        outcome.unreadable = parsed is None
        if parsed:
            _mine_tree(*parsed, task, config, outcome)
    return outcome


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: the collections a big syntax tree triggers walk every live object,
    over half the CPU of a full site-packages run (90 s -> 41 s); trees have no cycles, so refcounts free them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _mine_tree(tree: ast.Module, lines: list[str], task: FileTask, config: MineConfig,
               outcome: FileOutcome) -> None:
    module = None  # built on the first function that needs it: many files have no candidate at all
    private_module = any(is_private(part) for part in task.module.split("."))
    for node, owner in _candidates(tree, config):
        outcome.functions_seen += 1
        if private_module:  # `_pydecimal`, `importlib._bootstrap`: not public API, however documented
            outcome.skipped["private-module"] += 1
            continue
        reason = _shape_problem(node, owner, config)
        if reason is None:
            module = module or _ModuleInfo(tree, lines)
            pair, reason = _pair_for(node, owner, module, task, config)
        if reason is not None:
            outcome.skipped[reason] += 1
        else:
            outcome.pairs.append(pair)


def _parse(data: bytes) -> tuple[ast.Module, list[str]] | None:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)  # the file's coding declaration
        source = data.decode(encoding)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code are not our problem
            tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, LookupError):
        return None
    return tree, source.splitlines()


def _candidates(tree: ast.Module, config: MineConfig):
    for node in tree.body:
        if isinstance(node, _FUNCTIONS):
            yield node, None
        elif config.include_methods and isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, _FUNCTIONS):
                    yield item, node


# One function
class _ModuleInfo:
    """What the module binds at top level: unconditional imports (name -> import line) and all other names."""

    def __init__(self, tree: ast.Module, lines: list[str]):
        self.lines = lines
        self.imports: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._add_import(node)
        self.other_bindings = set(_module_level_bindings(tree.body)) - set(self.imports)

    def _add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if isinstance(node, ast.Import):
                bound = alias.asname or alias.name.split(".")[0]
                line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                private = any(part.startswith("_") for part in alias.name.split("."))
            else:
                if node.level or alias.name == "*":
                    continue  # a relative import cannot travel with the function
                bound = alias.asname or alias.name
                line = f"from {node.module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                private = alias.name.startswith("_") or any(
                    p.startswith("_") and p != "__future__" for p in node.module.split("."))
            if bound != "annotations":
                self.imports[bound] = "" if private else line


def _module_level_bindings(statements) -> Iterator[str]:
    """Names bound by module-level code, including inside if/try/for/with blocks but not inside
    function or class bodies (their locals are not module state)."""
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield statement.name
            continue
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                yield alias.asname or alias.name.split(".")[0]
            continue
        for sub in ast.iter_child_nodes(statement):
            if isinstance(sub, ast.stmt):
                yield from _module_level_bindings([sub])
            elif isinstance(sub, ast.ExceptHandler):
                if sub.name:
                    yield sub.name
                yield from _module_level_bindings(sub.body)
            else:
                for node in ast.walk(sub):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                        yield node.id


def _pair_for(node, owner, module: _ModuleInfo, task: FileTask, config: MineConfig):
    """(record, None) for a function whose shape is minable, else (None, reason it was skipped)."""
    imports, reason = _needed_imports(node, owner, module)
    if reason:
        return None, reason
    summary = docstring_summary(ast.get_docstring(node))
    if summary is None:
        return None, "docstring-unusable"
    code = textwrap.dedent("\n".join(module.lines[_first_line(node) - 1:node.end_lineno])) + "\n"
    completion = ("\n".join(imports) + "\n\n\n" if imports else "") + code
    findings = check_response(completion)  # the lint stage's own code check, so lint keeps the pair
    if findings:
        # a syntax error here means dedenting broke a method whose multi-line string sits at column 0
        return None, "not-dedentable" if findings[0].code == "syntax-error" else "lint-findings"
    qualname = f"{owner.name}.{node.name}" if owner is not None else node.name
    instruction = write_instruction(node, summary, qualname, owner.name if owner else None,
                                    seed=f"{config.seed}:{task.module}.{qualname}")
    source = {**asdict(task.origin), "module": task.module, "qualname": qualname,
              "path": task.relpath, "line": node.lineno}
    return pair_to_record(instruction, completion, id=f"mined:{task.module}.{qualname}", source=source), None


def _shape_problem(node, owner, config: MineConfig) -> str | None:
    """Why the function cannot be a pair whatever it uses: private, a test, undocumented, a stub, its size."""
    if node.name.startswith("_"):
        return "private"
    if node.name.lower().startswith("test") or (owner is not None and owner.name.startswith("Test")):
        return "test"
    if not ast.get_docstring(node):
        return "no-docstring"
    if _is_stub(node):
        return "stub"
    length = node.end_lineno - _first_line(node) + 1
    if length > config.max_lines:
        return "too-long"
    return "too-short" if length < config.min_lines else None


def _first_line(node) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _is_stub(node) -> bool:
    """Nothing after the docstring but `pass`, constants and `raise NotImplementedError`."""
    return all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
               or (isinstance(s, ast.Raise) and "NotImplementedError" in ast.unparse(s)) for s in node.body[1:])


def _needed_imports(node, owner, module: _ModuleInfo) -> tuple[list[str], str | None]:
    """The import lines the function needs, or the reason it is not self-contained."""
    loads, bound = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Global, ast.Nonlocal)):
            return [], "module-state"
        if isinstance(sub, ast.Name):
            (loads if isinstance(sub.ctx, ast.Load) else bound).add(sub.id)
        elif isinstance(sub, ast.arg):
            bound.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            bound.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            if isinstance(sub, ast.ImportFrom) and sub.level:
                return [], "relative-import"
            bound.update(a.asname or a.name.split(".")[0] for a in sub.names)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            bound.add(sub.name)
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "super" and owner:
            return [], "module-state"  # super() needs the class hierarchy
    lines = []
    for name in sorted(loads - bound):
        if name in module.imports:
            if not module.imports[name]:
                return [], "private-import"
            lines.append(module.imports[name])
        elif name in module.other_bindings or name not in BUILTIN_NAMES:
            return [], "module-state"
    ordered = sorted(set(lines), key=lambda line: (line.startswith("from "), line))
    return ordered, None


