"""Classify a code snippet as clean Python 3, Python 2 (by idiom) or broken, with Python 3's own parser.

A regex over the raw text cannot tell `print "x"` in code from the same words in a docstring, which is
how hundreds of Python 2 pairs once reached a training set (lesson 1 in docs/design.md). So:

1. `ast.parse` decides whether the snippet is valid Python 3. If it is, only the few Python 2 habits
   that still parse are looked for, on the syntax tree: `print >>f, x`, a bare `print`, and Python
   2-only names (`xrange`, `.has_key(`, `sys.maxint`, ...) that the snippet neither defines nor imports.
2. If it is not, the snippet is tokenized and each Python 2 idiom is matched on real code tokens only
   (strings and comments are separate tokens, so their text is never looked at). A parser error that
   no idiom explains is reported as `syntax-error` with the parser's message and line.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
import warnings
from dataclasses import asdict, dataclass

# Builtins that exist only in Python 2. A snippet that defines or imports one of them is fine.
PY2_BUILTINS = frozenset({"xrange", "raw_input", "unicode", "basestring", "long", "unichr", "execfile"})
# dict methods that Python 3 removed; `d.has_key(k)` parses in Python 3 and fails when run.
PY2_METHODS = frozenset({"has_key", "iteritems", "itervalues", "iterkeys",
                         "viewitems", "viewkeys", "viewvalues"})
# module attributes that Python 3 removed
PY2_MODULE_ATTRS = {"string": frozenset({"letters", "lowercase", "uppercase"}),
                    "sys": frozenset({"maxint"})}
# `from <compat> import *` may bring any of the names above, so it counts as defining them.
COMPAT_MODULES = frozenset({"six.moves", "past.builtins", "builtins", "future.builtins", "__builtin__"})

_TRIGGERS = re.compile(r"\b(print|" + "|".join(sorted(PY2_BUILTINS | PY2_METHODS)) + "|"
                       + "|".join(sorted(set().union(*PY2_MODULE_ATTRS.values()))) + r")\b")

PY2_CODES = ("py2-print", "py2-except", "py2-backtick", "py2-ne", "py2-octal", "py2-ur-string",
             "py2-long", "py2-exec", "py2-raise", "py2-tuple-params", "py2-name")
SYNTAX_ERROR = "syntax-error"

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "python2", "py2"})


@dataclass(frozen=True)
class Finding:
    """One problem in a snippet: a code such as `py2-print`, a readable message, and its line (1-based)."""

    code: str
    message: str
    line: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def extract_code(text: str) -> str:
    """The code in a completion: its fenced ``` blocks tagged python/py or untagged (joined by a blank
    line when there are several), else the whole text."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    if blocks:
        return "\n".join(block.rstrip("\n") + "\n" for block in blocks)
    return text


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
    """Whether an unfenced completion is code (to be parsed) rather than prose (nothing to check).
    Valid Python is code; otherwise at least half of its non-blank lines must look like code."""
    if not text.strip():
        return False
    if not isinstance(_parse(text), Exception):
        return True
    lines = text.splitlines()
    first = next(line for line in lines if line.strip())
    if _CODE_START.match(first):
        return True
    # lines inside a multi-line string are code too (a long docstring or a text template)
    in_strings: set[int] = set()
    for tok in _code_tokens(text) if ('"""' in text or "'''" in text or "\\\n" in text) else ():
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
        return _check_unparsable(code, tree)
    if isinstance(tree, Exception):
        return [Finding(SYNTAX_ERROR, f"cannot parse: {tree}", None)]
    # Fast path: the tree checks only look for these words, so code without any of them is clean.
    # Plain equivalent: always run _TreeChecker (tests compare the two on the fixture).
    if not _TRIGGERS.search(code):
        return []
    return _sorted(_TreeChecker(tree).run())


def check_text(text: str) -> list[Finding]:
    """check_python on the code extracted from a completion."""
    return check_python(extract_code(text))


def _sorted(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, line), the first one found, sorted by line."""
    unique: dict[tuple, Finding] = {}
    for finding in findings:
        unique.setdefault((finding.code, finding.line), finding)
    return sorted(unique.values(), key=lambda f: (f.line or 0, f.code))


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
        findings: list[Finding] = []
        for node in nodes:
            finding = self._print_statement(node) or self._py2_name(node)
            if finding:
                findings.append(finding)
        return findings

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


# ---------------------------------------------------------------------------------------------------
# Not valid Python 3: find the Python 2 idioms among the code tokens.

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}
_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def _code_tokens(code: str) -> list[tokenize.TokenInfo]:
    """Tokens of the snippet without comments and blank-line markers; as many as tokenize can read."""
    tokens: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in _SKIPPED or (tok.type == tokenize.ERRORTOKEN and tok.string.isspace()):
                continue
            tokens.append(tok)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass  # an unclosed bracket at the end: the tokens read so far still count
    return tokens


def _check_unparsable(code: str, err: SyntaxError) -> list[Finding]:
    tokens = _code_tokens(code)
    findings = _TokenScanner(tokens).run()
    explained_lines = {f.line for f in findings}
    # A parser error on a line with a Python 2 idiom is that idiom; any other is a real syntax error.
    if not findings or (err.lineno not in explained_lines and not _error_follows_idiom(err, findings)):
        findings.append(Finding(SYNTAX_ERROR, err.msg or "invalid syntax", err.lineno))
    return _sorted(findings)


def _error_follows_idiom(err: SyntaxError, findings: list[Finding]) -> bool:
    """Python reports some errors at the end of the statement (an unclosed tuple parameter list)."""
    return err.lineno is not None and any(
        f.line is not None and f.code != "py2-name" and 0 < err.lineno - f.line <= 2 for f in findings)


class _TokenScanner:
    def __init__(self, tokens: list[tokenize.TokenInfo]):
        self.tokens = tokens
        self.defined = _defined_by_tokens(tokens)

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        for index in range(len(self.tokens)):
            for check in (self._print, self._exec, self._except, self._raise, self._backtick, self._not_equal,
                          self._octal, self._long, self._ur_string, self._tuple_params, self._name):
                finding = check(index)
                if finding:
                    findings.append(finding)
        return findings

    # helpers -------------------------------------------------------------------------------------
    def _tok(self, index: int) -> tokenize.TokenInfo | None:
        return self.tokens[index] if 0 <= index < len(self.tokens) else None

    def _is(self, index: int, string: str, type_: int | None = None) -> bool:
        tok = self._tok(index)
        return tok is not None and tok.string == string and (type_ is None or tok.type == type_)

    def _adjacent(self, index: int) -> bool:
        """Whether token index+1 starts exactly where token index ends (no space between)."""
        tok, nxt = self._tok(index), self._tok(index + 1)
        return tok is not None and nxt is not None and tok.end == nxt.start

    def _at_statement_start(self, index: int) -> bool:
        prev = self._tok(index - 1)
        return prev is None or prev.type in _STATEMENT_START or prev.string in (";", ":") and prev.type == tokenize.OP

    def _statement_tokens(self, index: int):
        """Tokens after `index` up to the end of its logical line, with their bracket depth."""
        depth = 0
        for tok in self.tokens[index + 1:]:
            if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) and depth <= 0:
                return
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            yield tok, depth

    def _keyword_at_start(self, index: int, word: str) -> bool:
        tok = self.tokens[index]
        return tok.type == tokenize.NAME and tok.string == word and self._at_statement_start(index)

    # idioms --------------------------------------------------------------------------------------
    def _print(self, index: int) -> Finding | None:
        if "print" in self.defined or not self._keyword_at_start(index, "print"):
            return None
        nxt = self._tok(index + 1)
        if nxt is None:
            return None
        line = self.tokens[index].start[0]
        if nxt.type in (tokenize.STRING, tokenize.NAME, tokenize.NUMBER) or nxt.string == "`":
            return Finding("py2-print", "print statement (Python 2); use print(...)", line)
        if nxt.type == tokenize.OP and nxt.string in (">>", "%", "-", "~", "[", "{"):
            if nxt.string == ">>":
                return Finding("py2-print", "print statement `print >>file, ...`", line)
            return Finding("py2-print", "print statement (Python 2); use print(...)", line)
        if nxt.type == tokenize.OP and nxt.string == "(" and self._tuple_after_parens(index + 1):
            return Finding("py2-print", "print statement of a tuple `print (x), y`", line)
        return None

    def _tuple_after_parens(self, open_index: int) -> bool:
        depth = 0
        for tok in self.tokens[open_index:]:
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
                if depth == 0:
                    after = self.tokens[self.tokens.index(tok) + 1] if tok is not self.tokens[-1] else None
                    return after is not None and after.string == ","
            elif tok.type == tokenize.NEWLINE:
                return False
        return False

    def _exec(self, index: int) -> Finding | None:
        if "exec" in self.defined or not self._keyword_at_start(index, "exec"):
            return None
        nxt = self._tok(index + 1)
        if nxt is not None and nxt.type in (tokenize.STRING, tokenize.NAME):
            return Finding("py2-exec", "exec statement (Python 2); use exec(...)", self.tokens[index].start[0])
        return None

    def _except(self, index: int) -> Finding | None:
        if not self._keyword_at_start(index, "except"):
            return None
        for tok, depth in self._statement_tokens(index):
            if depth == 0 and tok.string == ":":
                return None
            if depth == 0 and tok.string == ",":
                return Finding("py2-except", "`except E, e` (Python 2); use `except E as e`", tok.start[0])
        return None

    def _raise(self, index: int) -> Finding | None:
        if not self._keyword_at_start(index, "raise"):
            return None
        for tok, depth in self._statement_tokens(index):
            if depth == 0 and tok.string == ",":
                return Finding("py2-raise", "`raise E, value` (Python 2); use `raise E(value)`", tok.start[0])
            if depth == 0 and tok.string in ("from", ";"):
                return None
        return None

    def _backtick(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.string == "`" and tok.type in (tokenize.ERRORTOKEN, tokenize.OP):
            # report each pair once: only the opening backtick of a line counts
            before = [t for t in self.tokens[:index] if t.start[0] == tok.start[0] and t.string == "`"]
            if len(before) % 2 == 0:
                return Finding("py2-backtick", "backtick repr `x` (Python 2); use repr(x)", tok.start[0])
        return None

    def _not_equal(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        is_ne = tok.string == "<>" or (tok.string == "<" and self._is(index + 1, ">") and self._adjacent(index))
        if tok.type in (tokenize.OP, tokenize.ERRORTOKEN) and is_ne:
            return Finding("py2-ne", "`<>` operator (Python 2); use !=", tok.start[0])
        return None

    def _octal(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type != tokenize.NUMBER:
            return None
        # Python 3's tokenizer splits `0777` into `0` and `777`; some versions keep it whole.
        split = tok.string == "0" and self._adjacent(index) and self._tok(index + 1).type == tokenize.NUMBER \
            and self._tok(index + 1).string[:1].isdigit()
        whole = re.fullmatch(r"0[0-7]+[lL]?", tok.string) is not None and tok.string.rstrip("lL") != "0" * len(
            tok.string.rstrip("lL"))
        if split or whole:
            return Finding("py2-octal", "old octal literal like 0777 (Python 2); use 0o777", tok.start[0])
        return None

    def _long(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type != tokenize.NUMBER:
            return None
        nxt = self._tok(index + 1)
        suffix = nxt is not None and nxt.type == tokenize.NAME and nxt.string in ("L", "l") and self._adjacent(index)
        if suffix or re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)[lL]", tok.string):
            return Finding("py2-long", "long literal like 10L (Python 2); drop the L", tok.start[0])
        return None

    def _ur_string(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        nxt = self._tok(index + 1)
        if tok.type == tokenize.NAME and tok.string.lower() in ("ur", "bur") and nxt is not None \
                and nxt.type == tokenize.STRING and self._adjacent(index):
            return Finding("py2-ur-string", "ur'' string prefix (Python 2); use r''", tok.start[0])
        return None

    def _tuple_params(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type != tokenize.NAME:
            return None
        if tok.string == "lambda":
            if self._is(index + 1, "("):
                return Finding("py2-tuple-params", "tuple parameter in lambda (Python 2)", tok.start[0])
            return self._tuple_in_params(index + 1, end=":")
        if tok.string == "def" and self._is(index + 2, "("):
            return self._tuple_in_params(index + 3, end=")")
        return None

    def _tuple_in_params(self, start: int, end: str) -> Finding | None:
        """A '(' right after the parameter list opens or after a comma is a tuple parameter."""
        depth, prev = 0, "("
        for tok in self.tokens[start:]:
            if tok.type == tokenize.NEWLINE:
                return None
            if tok.type == tokenize.OP and tok.string == "(":
                if depth == 0 and prev in ("(", ","):
                    return Finding("py2-tuple-params", "tuple parameter `def f((a, b))` (Python 2)", tok.start[0])
                depth += 1
            elif tok.type == tokenize.OP and tok.string in "[{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                if depth == 0:
                    return None
                depth -= 1
            elif depth == 0 and tok.string == end:
                return None
            prev = tok.string
        return None

    def _name(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type != tokenize.NAME:
            return None
        prev_dot = self._is(index - 1, ".")
        line = tok.start[0]
        if tok.string in PY2_BUILTINS and not prev_dot and tok.string not in self.defined \
                and not self._is(index + 1, "="):
            return Finding("py2-name", f"Python 2-only builtin `{tok.string}`", line)
        if tok.string in PY2_METHODS and prev_dot and tok.string not in self.defined:
            return Finding("py2-name", f"Python 2-only dict method `.{tok.string}()`", line)
        if tok.string in PY2_MODULE_ATTRS and not prev_dot and self._is(index + 1, ".") \
                and (attr := self._tok(index + 2)) is not None and attr.string in PY2_MODULE_ATTRS[tok.string] \
                and self.defined.get(tok.string, "import") == "import":
            return Finding("py2-name", f"Python 2-only `{tok.string}.{attr.string}`", line)
        return None


def _defined_by_tokens(tokens: list[tokenize.TokenInfo]) -> dict[str, str]:
    """Names an unparsable snippet binds, read off its tokens (after def/class/as/for, in imports,
    before `=`, as parameters), mapped to 'import' (a plain `import x`) or 'local', as on the tree."""
    defined: dict[str, str] = {}
    import_kind = ""  # "import" or "from" while inside an import statement
    in_params = False
    depth = 0
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1].string if i else ""
        nxt = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if tok.type == tokenize.NEWLINE:
            import_kind, in_params = "", False
        if tok.type != tokenize.NAME:
            if in_params and tok.string == "(":
                depth += 1
            elif in_params and tok.string == ")":
                depth -= 1
                in_params = depth > 0
            continue
        if tok.string in ("import", "from") and (i == 0 or tokens[i - 1].type in _STATEMENT_START):
            import_kind = tok.string
        plain_import = import_kind == "import" and prev in ("import", ",") and nxt not in (".", "as")
        if plain_import:
            defined.setdefault(tok.string, "import")
        elif prev in ("def", "class", "as", "for", "global", "nonlocal") or nxt == "=" \
                or (import_kind == "from" and prev in ("import", ",", "(")) or (in_params and nxt in (",", ")", "=", ":")):
            defined[tok.string] = "local"
        if prev == "def":
            in_params, depth = True, 0
    return defined
