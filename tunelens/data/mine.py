"""`data mine`: instruction -> code pairs from real Python source (by default the running Python's
standard library).

A function is mined when it is a public (no leading underscore), documented, top-level function outside
any test file and any private module, and self-contained: every name it uses is a builtin, its own
local, or a module imported unconditionally at the top of its file (that import is then put at the top
of the completion). A function that reads module globals, constants, helpers or classes of its module,
declares `global`, needs a relative or private import, or is a stub (`pass`, `raise
NotImplementedError`) is skipped, with the reason counted. With `include_methods`, documented public methods of public classes that touch only
`self`, their arguments, builtins and imports are mined too.

The instruction is written from the docstring's first paragraph and the signature, in one of several
phrasings chosen by a stable hash of the function's qualified name, so a rerun gives the same file.
Every pair is checked with the lint stage's own checks (Python 3 parse, duplicates, near duplicates)
before it is written, so a mined file passes `data lint` unchanged.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import os
import re
import sysconfig
import textwrap
import time
import tokenize
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tunelens.data.dedupe import Deduplicator
from tunelens.data.lint import check_response
from tunelens.errors import UserError
from tunelens.io import atomic_write_jsonl
from tunelens.records import pair_to_record

# dunder names like __file__ are module state even though some are also attributes of `builtins`
BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("__")) | {"__import__", "__debug__"}
TEST_DIRS = frozenset({"test", "tests", "testing", "idle_test", "unittests", "__pycache__", "site-packages"})
MAX_SUMMARY_WORDS = 70


@dataclass(frozen=True)
class MineConfig:
    """Options of `data mine`."""

    include_methods: bool = False  # also mine self-contained documented public methods of public classes
    max_lines: int = 60  # longer functions are skipped (too long to learn from as one pair)
    min_lines: int = 3  # shorter functions (signature + docstring + one line) are skipped
    near_duplicate_threshold: float = 0.85  # as in `data lint`, so the output passes it
    limit: int | None = None  # stop after this many pairs
    seed: int = 0  # changes which phrasing each function gets

    def __post_init__(self):
        if self.max_lines < self.min_lines or self.min_lines < 1:
            raise UserError("need 1 <= min_lines <= max_lines")
        if self.limit is not None and self.limit < 1:
            raise UserError("limit must be at least 1")


@dataclass
class MineResult:
    pairs: list[dict]
    files_scanned: int = 0
    files_unreadable: int = 0
    functions_seen: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> functions skipped for it
    seconds: float = 0.0
    out_path: Path | None = None


def default_sources() -> list[Path]:
    return [Path(sysconfig.get_paths()["stdlib"])]


def mine_pairs(sources=None, config: MineConfig = MineConfig(),
               on_progress: Callable[[int, int], None] | None = None) -> MineResult:
    """Mine pairs (chat `messages` records with `id` and `source`) from .py files and directories."""
    started = time.perf_counter()
    roots = [Path(s) for s in sources] if sources else default_sources()
    files = list(_python_files(roots))
    result = MineResult(pairs=[])
    dedupe = Deduplicator(config.near_duplicate_threshold)
    seen_code: set[str] = set()
    for done, (root, path) in enumerate(files, start=1):
        _mine_file(root, path, config, dedupe, seen_code, result)
        if on_progress is not None:
            on_progress(done, len(files))
        if config.limit is not None and len(result.pairs) >= config.limit:
            del result.pairs[config.limit:]
            break
    result.files_scanned = len(files)
    result.seconds = time.perf_counter() - started
    return result


def mine_to_file(sources, out_path: str | Path, config: MineConfig = MineConfig(),
                 on_progress: Callable[[int, int], None] | None = None) -> MineResult:
    result = mine_pairs(sources, config, on_progress)
    atomic_write_jsonl(out_path, result.pairs)
    result.out_path = Path(out_path)
    return result


# ---------------------------------------------------------------------------------------------------
# Files


def _python_files(roots: list[Path]) -> Iterator[tuple[Path, Path]]:
    for root in roots:
        if not root.exists():
            raise UserError(f"{root}: no such file or directory")
        if root.is_file():
            yield root.parent, root
            continue
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in TEST_DIRS and not d.startswith(("test_", ".")))
            for name in sorted(names):
                if name.endswith(".py") and not _is_test_file(name):
                    yield root, Path(directory) / name


def _is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py") or name in ("conftest.py", "test.py")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or path.stem


def _mine_file(root: Path, path: Path, config: MineConfig, dedupe: Deduplicator, seen_code: set[str],
               result: MineResult) -> None:
    try:
        with tokenize.open(path) as handle:  # honours the file's encoding declaration
            source = handle.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        result.files_unreadable += 1
        return
    module = _ModuleInfo(tree, source.splitlines())
    module_name = _module_name(root, path)
    private_module = any(part.startswith("_") and not part.startswith("__") for part in module_name.split("."))
    for node, owner in _candidates(tree, config):
        result.functions_seen += 1
        if private_module:  # `_pydecimal`, `importlib._bootstrap`: not public API, however documented
            result.skipped["private-module"] += 1
            continue
        pair, reason = _pair_for(node, owner, module, module_name, config)
        if pair is None:
            result.skipped[reason] += 1
            continue
        completion = pair["messages"][1]["content"]
        if completion in seen_code:  # the same function in two modules, whatever its phrasing
            result.skipped["duplicate"] += 1
            continue
        match, state = dedupe.check(pair["messages"][0]["content"], completion)
        if match is not None:
            result.skipped[match.kind] += 1
            continue
        dedupe.add(len(result.pairs), state)
        seen_code.add(completion)
        pair["source"] = f"{path.relative_to(root).as_posix()}:{node.lineno}"
        result.pairs.append(pair)


def _candidates(tree: ast.Module, config: MineConfig):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, None
        elif config.include_methods and isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield item, node


# ---------------------------------------------------------------------------------------------------
# One function


class _ModuleInfo:
    """What the module binds at top level: unconditional imports (name -> import line) and all other names."""

    def __init__(self, tree: ast.Module, lines: list[str]):
        self.lines = lines
        self.imports: dict[str, str] = {}
        self.other_bindings: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._add_import(node)
        for name in _module_level_bindings(tree.body):
            if name not in self.imports:
                self.other_bindings.add(name)

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


def _pair_for(node, owner, module: _ModuleInfo, module_name: str, config: MineConfig):
    """(record, None) for a minable function, else (None, reason it was skipped)."""
    reason = _shape_problem(node, owner, config)
    if reason:
        return None, reason
    imports, reason = _needed_imports(node, owner, module)
    if reason:
        return None, reason
    summary = docstring_summary(ast.get_docstring(node))
    if summary is None:
        return None, "docstring-unusable"
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    code = textwrap.dedent("\n".join(module.lines[start - 1:node.end_lineno])) + "\n"
    completion = ("\n".join(imports) + "\n\n\n" if imports else "") + code
    if not _parses(completion):
        return None, "not-dedentable"  # a method whose multi-line string sits at column 0
    if check_response(completion):
        return None, "lint-findings"
    qualname = f"{owner.name}.{node.name}" if owner is not None else node.name
    instruction = write_instruction(node, summary, qualname, owner.name if owner else None,
                                    seed=f"{config.seed}:{module_name}.{qualname}")
    return pair_to_record(instruction, completion, id=f"mined:{module_name}.{qualname}"), None


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
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    length = node.end_lineno - start + 1
    if length > config.max_lines:
        return "too-long"
    return "too-short" if length < config.min_lines else None


def _parses(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _is_stub(node) -> bool:
    body = node.body[1:]  # after the docstring
    for statement in body:
        if isinstance(statement, ast.Pass) or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)):
            continue
        if isinstance(statement, ast.Raise) and "NotImplementedError" in ast.unparse(statement):
            continue
        return False
    return True


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


# ---------------------------------------------------------------------------------------------------
# Instructions


_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_VERBS = frozenset("""
accept add adjust analyze append apply assert build calculate call cancel change check clean clear close
collect combine compare compile compute construct convert copy count create decide decode decorate delete
determine display dump emit encode ensure escape evaluate execute expand extract fetch fill filter find
fix flatten format generate get guess handle hash identify indent initialize insert install iterate join
list load locate look make map mark match merge move normalize open pack pad parse perform pick prepare
print process produce put quote raise read rebuild receive record reduce register remove rename render
replace report reset resolve restore retrieve return reverse rewrite round run save scan search select
send serialize set show shuffle skip sort split start stop store strip substitute swap take tell test
tokenize transform translate truncate try turn unpack unquote unregister unwrap update validate verify
walk wrap write yield
acquire ask bind cap clamp configure connect disconnect flush invoke limit listen lock log notify override
query release request seek sleep unlock wait warn append attach detach dispatch drop encode enter exit
fold grab guard indicate inspect lookup mangle measure modify mount peek pop post push queue refresh
reload repeat reply schedule shift shorten simplify slice spawn squeeze strip sum tag trace trim unbind
unset upgrade use visit watch wrap zip
""".split())


def docstring_summary(docstring: str) -> str | None:
    """The docstring's first paragraph as one sentence-cased line, skipping a leading signature line."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", docstring.strip()) if p.strip()]
    while paragraphs and _SIGNATURE_LINE.match(paragraphs[0].split(" -- ")[0]):
        paragraphs.pop(0)
    if not paragraphs:
        return None
    summary = paragraphs[0]
    words = summary.split()
    if len(words) < 3 or summary.startswith((">>>", "..", ":", "-", "*")):
        return None
    if len(words) > MAX_SUMMARY_WORDS:
        sentence_end = summary.find(". ")
        if sentence_end == -1 or len(summary[:sentence_end].split()) > MAX_SUMMARY_WORDS:
            return None
        summary = summary[:sentence_end + 1]
    summary = summary[0].upper() + summary[1:]
    return summary if summary[-1] in ".!?:" else summary + "."


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _verb_forms(summary: str) -> tuple[str, str] | None:
    """(imperative, third person) versions of a summary that starts with a verb, lower-cased; else None."""
    first, _, rest = summary.partition(" ")
    word = first.lower().rstrip(",.;:")
    if word != first.lower() or not word.isalpha():
        return None
    if word in _VERBS:
        base = word
    elif word.endswith("ies") and word[:-3] + "y" in _VERBS:
        base = word[:-3] + "y"
    elif word.endswith("es") and word[:-2] in _VERBS:
        base = word[:-2]
    elif word.endswith("s") and word[:-1] in _VERBS:
        base = word[:-1]
    else:
        return None
    return f"{base} {rest}".strip(), f"{_third_person(base)} {rest}".strip()


def _argument_names(node) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names = [n for n in names if n not in ("self", "cls")]
    if args.vararg:
        names.append("*" + args.vararg.arg)
    if args.kwarg:
        names.append("**" + args.kwarg.arg)
    return names


def _english_list(items: list[str]) -> str:
    quoted = [f"`{item}`" for item in items]
    if not quoted:
        return "no arguments"
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


_VERB_TEMPLATES = (
    "Write a Python function `{sig}` that {third}",
    "Implement `{sig}` in Python. It should {imperative}",
    "Create a function called `{name}` that takes {args} and {third}",
    "{Imperative} Write it as a Python function with the signature `{sig}`.",
    "I need a Python function `{sig}`: it {third}",
    "Define `{sig}`, a function that {third}",
)
_PLAIN_TEMPLATES = (
    "Write a Python function `{sig}`. Its documentation reads: \"{summary}\"",
    "Implement the Python function `{sig}` described as follows: {summary}",
    "Here is what `{sig}` should do: {summary} Write it in Python.",
)
_METHOD_TEMPLATES = (
    "Write the method `{sig}` of the Python class `{owner}`. It {third}",
    "In a Python class `{owner}`, implement the method `{sig}`, which should {imperative}",
)
_PLAIN_METHOD_TEMPLATE = "Write the method `{sig}` of the Python class `{owner}`: {summary}"


def write_instruction(node, summary: str, qualname: str, owner: str | None, seed: str) -> str:
    """An instruction from a docstring summary and the signature, in a phrasing picked by `seed`."""
    signature = f"{node.name}({ast.unparse(node.args)})"
    pick = int(hashlib.sha256(seed.encode("utf-8")).hexdigest()[:8], 16)
    forms = _verb_forms(summary)
    values = {"sig": signature, "name": node.name, "owner": owner, "summary": summary,
              "args": _english_list(_argument_names(node))}
    if forms:
        imperative, third = forms
        values.update(imperative=imperative, third=third, Imperative=imperative[0].upper() + imperative[1:])
        templates = _METHOD_TEMPLATES if owner else _VERB_TEMPLATES
    else:
        templates = (_PLAIN_METHOD_TEMPLATE,) if owner else _PLAIN_TEMPLATES
    text = templates[pick % len(templates)].format(**values)
    if node.returns is not None:
        text += f" It returns `{ast.unparse(node.returns)}`."
    if isinstance(node, ast.AsyncFunctionDef):
        text += " Make it a coroutine (`async def`)."
    return text
