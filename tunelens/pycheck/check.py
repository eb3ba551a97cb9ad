"""Classify a code snippet as clean Python 3, Python 2 (by idiom) or broken, with Python 3's own parser.

A regex cannot tell `print "x"` in code from the same words in a docstring, which is how hundreds of Python 2
pairs once reached a training set (lesson 1 in docs/design.md). So `ast.parse` decides whether the snippet is
valid Python 3: if it is, the syntax tree is searched for the Python 2 habits that still parse (`print >>f,
x`, a bare `print`, Python 2-only names such as `xrange` or `sys.maxint` that the snippet neither defines nor
imports); if not, the idioms are matched on its code tokens (`tokens`), and a parser error no idiom explains
is a `syntax-error` with the parser's message and line. The rules and the finding type live in `rules`.
"""

from __future__ import annotations

import ast
import functools
import re
import tokenize
import warnings

from tunelens.pycheck.rules import (COMPAT_MODULES, PY2_BUILTINS, PY2_METHODS, PY2_MODULE_ATTRS, SYNTAX_ERROR, Finding, sorted_findings)
from tunelens.pycheck.tokens import check_unparsable, code_tokens

_sorted = sorted_findings  # the name tests and older callers use

_TRIGGERS = re.compile(r"\b(print|" + "|".join(sorted(PY2_BUILTINS | PY2_METHODS)) + "|"
                       + "|".join(sorted(set().union(*PY2_MODULE_ATTRS.values()))) + r")\b")

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "python2", "py2"})


def extract_code(text: str) -> str:
    """The code in a completion: its python/py or untagged ``` blocks (joined by a blank line), else the text."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    return "\n".join(block.rstrip("\n") + "\n" for block in blocks) if blocks else text


def code_or_nothing(text: str) -> str:
    """The code of a completion (extract_code), or "" for prose, whose "print" is never read as code."""
    return extract_code(text) if has_fenced_code(text) or looks_like_code(text) else ""


def has_fenced_code(text: str) -> bool:
    return any(tag.lower() in _PYTHON_TAGS for tag, _ in _FENCE.findall(text))


_CODE_LINE = re.compile(
    r"""^(\s+\S                                   # indented: a block body
        |(def|class|import|from|return|if|elif|else|for|while|try|except|finally|with|raise|print|exec
          |assert|pass|break|continue|yield|lambda|global|del|async|await)\b
        |@\w|\#
        |[\w.\[\]'"]+\s*([-+*/%&|^]|//|<<|>>|\*\*)?=[^=]  # assignment
        |\w[\w.]*\(.*\)\s*$                       # a call on its own
        |.*:\s*$)""", re.X)


# a sentence: no brackets or `=`, and either five or more words ending like a sentence, or four or more
# words starting with a capital letter (code lines start with lower-case keywords and names)
_PROSE_LINE = re.compile(r"^\s*([^\s=()\[\]{}]+(\s+[^\s=()\[\]{}]+){4,}\s*[.?!]\s*"
                         r"|[A-Z][a-z']*(\s+[^\s=()\[\]{}]+){3,}\s*)$")
_CODE_START = re.compile(r"^(def |class |async def |import \w|from [\w.]+ import |@\w|#!)")


def looks_like_code(text: str) -> bool:
    """Whether an unfenced completion is code (to be parsed) rather than prose: valid Python is, otherwise at
    least half of its non-blank lines must look like code."""
    if not text.strip():
        return False
    lines = text.splitlines()
    if not isinstance(_parse(text), Exception) or _CODE_START.match(next(line for line in lines if line.strip())):
        return True
    # lines inside a multi-line string are code too (a long docstring or a text template)
    in_strings: set[int] = set()
    for tok in code_tokens(text) if ('"""' in text or "'''" in text or "\\\n" in text) else ():
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_strings.update(range(tok.start[0], tok.end[0] + 1))
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    code_lines = sum(1 for i, line in numbered
                     if i in in_strings or (_CODE_LINE.match(line) and not _PROSE_LINE.match(line)))
    return code_lines * 2 >= len(numbered)


def is_python2(findings) -> bool:
    """True when any finding is a Python 2 idiom (a `py2-*` code)."""
    return any(f.code.startswith("py2-") for f in findings)


@functools.lru_cache(maxsize=16)
def _parse(code: str):
    """The tree, or the exception ast.parse raised (cached: lint asks looks_like_code, then check_python)."""
    try:
        with warnings.catch_warnings():
            # invalid escape sequences in old code warn at compile time; they are not our concern
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:  # NUL bytes, absurd nesting
        return err


def check_python(code: str) -> list[Finding]:
    """Findings for one snippet, sorted by line: [] for clean Python 3."""
    tree = _parse(code)
    if isinstance(tree, SyntaxError):
        return check_unparsable(code, tree)
    if isinstance(tree, Exception):
        return [Finding(SYNTAX_ERROR, f"cannot parse: {tree}", None)]
    # Fast path: the tree checks only look for these words, so code without any of them is clean.
    # Plain equivalent: always run _TreeChecker (tests compare the two on the fixture).
    if not _TRIGGERS.search(code):
        return []
    return sorted_findings(_TreeChecker(tree).run())


def check_text(text: str) -> list[Finding]:
    """check_python on the code extracted from a completion."""
    return check_python(extract_code(text))


# ---------------------------------------------------------------------------------------------------
# Valid Python 3: Python 2 habits that still parse.


class _TreeChecker:
    def __init__(self, tree: ast.AST):
        self.tree = tree
        self.defined: dict[str, str] = {}

    def run(self) -> list[Finding]:
        """Findings ignoring definitions first (most code has none), then again with them if needed."""
        nodes = list(ast.walk(self.tree))
        if not any(self._print_statement(n) or self._py2_name(n) for n in nodes):
            return []
        self.defined = _defined_names(self.tree)
        return [finding for node in nodes if (finding := self._print_statement(node) or self._py2_name(node))]

    def _print_statement(self, node: ast.AST) -> Finding | None:
        if "print" in self.defined:
            return None
        # `print >>f, x` parses as the tuple (print >> f, x)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift) and _is_name(node.left, "print"):
            return Finding("py2-print", "print statement `print >>file, ...`", node.lineno)
        if isinstance(node, ast.Expr):
            value = node.value
            # a bare `print` is a no-op in Python 3 and an empty line in Python 2
            if _is_name(value, "print"):
                return Finding("py2-print", "bare `print` statement", node.lineno)
            # `print ("a"), b` is a Python 2 print statement of a tuple
            if isinstance(value, ast.Tuple) and value.elts and isinstance(value.elts[0], ast.Call) \
                    and _is_name(value.elts[0].func, "print"):
                return Finding("py2-print", "print statement of a tuple `print (x), y`", node.lineno)
            # `print [1, 2]` and `print -1` parse as print[1, 2] and print - 1: meaningless in Python 3
            if isinstance(value, (ast.Subscript, ast.BinOp, ast.Compare)) and _is_name(_leftmost(value), "print"):
                return Finding("py2-print", "print statement (Python 2); use print(...)", node.lineno)
        return None

    def _py2_name(self, node: ast.AST) -> Finding | None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                and node.id in PY2_BUILTINS and node.id not in self.defined:
            return Finding("py2-name", f"Python 2-only builtin `{node.id}`", node.lineno)
        if not isinstance(node, ast.Attribute):
            return None
        if node.attr in PY2_METHODS and node.attr not in self.defined:
            return Finding("py2-name", f"Python 2-only dict method `.{node.attr}()`", node.lineno)
        module = node.value.id if isinstance(node.value, ast.Name) else None
        if module in PY2_MODULE_ATTRS and node.attr in PY2_MODULE_ATTRS[module] \
                and self.defined.get(module, "import") == "import":
            return Finding("py2-name", f"Python 2-only `{module}.{node.attr}`", node.lineno)
        return None


def _leftmost(node: ast.AST) -> ast.AST:
    while True:
        if isinstance(node, (ast.BinOp, ast.Compare)):
            node = node.left
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return node


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _defined_names(tree: ast.AST) -> dict[str, str]:
    """Every name the snippet binds, mapped to how: 'import' or 'local' (assignment, def, argument...)."""
    defined: dict[str, str] = {}

    def bind(name: str, how: str = "local") -> None:
        # a name bound both ways counts as local: `string = "abc"` shadows `import string`
        if defined.get(name) != "local":
            defined[name] = how

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bind(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name)
        elif isinstance(node, ast.arg):
            bind(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bind(alias.asname or alias.name.split(".")[0], "import" if not alias.asname else "local")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" and node.module in COMPAT_MODULES:
                    for name in PY2_BUILTINS:
                        bind(name)
                elif alias.name != "*":
                    bind(alias.asname or alias.name)
        elif hasattr(ast, "MatchAs") and isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bind(node.name)
    return defined


