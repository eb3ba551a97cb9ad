"""Code that Python 3 cannot parse: find the Python 2 idioms among its code tokens.

Strings and comments are tokens of their own, so their text is never read as code: `print "x"` inside a
docstring is not a finding. A parser error that no idiom explains is reported as a syntax error.
"""

from __future__ import annotations

import io
import re
import tokenize

from tunelens.pycheck.rules import (PY2_BUILTINS, PY2_METHODS, PY2_MODULE_ATTRS, SYNTAX_ERROR, Finding, sorted_findings)


_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}
_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def code_tokens(code: str) -> list[tokenize.TokenInfo]:
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


def check_unparsable(code: str, err: SyntaxError) -> list[Finding]:
    tokens = code_tokens(code)
    findings = _TokenScanner(tokens).run()
    explained_lines = {f.line for f in findings}
    # A parser error on a line with a Python 2 idiom is that idiom; any other is a real syntax error.
    if not findings or (err.lineno not in explained_lines and not _error_follows_idiom(err, findings)):
        findings.append(Finding(SYNTAX_ERROR, err.msg or "invalid syntax", err.lineno))
    return sorted_findings(findings)


def _error_follows_idiom(err: SyntaxError, findings: list[Finding]) -> bool:
    """Python reports some errors at the end of the statement (an unclosed tuple parameter list)."""
    return err.lineno is not None and any(
        f.line is not None and f.code != "py2-name" and 0 < err.lineno - f.line <= 2 for f in findings)


_PRINT_STATEMENT = "print statement (Python 2); use print(...)"


class _TokenScanner:
    def __init__(self, tokens: list[tokenize.TokenInfo]):
        self.tokens = tokens
        self.defined = _defined_by_tokens(tokens)

    def run(self) -> list[Finding]:
        checks = (self._print, self._exec, self._except, self._raise, self._backtick, self._not_equal,
                  self._octal, self._long, self._ur_string, self._tuple_params, self._name)
        return [finding for index in range(len(self.tokens)) for check in checks if (finding := check(index))]

    # helpers -------------------------------------------------------------------------------------
    def _tok(self, index: int) -> tokenize.TokenInfo | None:
        return self.tokens[index] if 0 <= index < len(self.tokens) else None

    def _is(self, index: int, string: str) -> bool:
        tok = self._tok(index)
        return tok is not None and tok.string == string

    def _adjacent(self, index: int) -> bool:
        """Whether token index+1 starts exactly where token index ends (no space between)."""
        tok, nxt = self._tok(index), self._tok(index + 1)
        return tok is not None and nxt is not None and tok.end == nxt.start

    def _keyword_at_start(self, index: int, word: str) -> bool:
        tok, prev = self.tokens[index], self._tok(index - 1)
        at_start = prev is None or prev.type in _STATEMENT_START or (prev.type == tokenize.OP and prev.string in ";:")
        return tok.type == tokenize.NAME and tok.string == word and at_start

    def _statement_tokens(self, index: int):
        """Tokens after `index` up to the end of its logical line, with their bracket depth."""
        depth = 0
        for tok in self.tokens[index + 1:]:
            if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) and depth <= 0:
                return
            depth += _bracket(tok)
            yield tok, depth

    def _finding(self, code: str, message: str, index: int) -> Finding:
        return Finding(code, message, self.tokens[index].start[0])

    # idioms --------------------------------------------------------------------------------------
    def _print(self, index: int) -> Finding | None:
        nxt = self._tok(index + 1)
        if "print" in self.defined or not self._keyword_at_start(index, "print") or nxt is None:
            return None
        if nxt.type in (tokenize.STRING, tokenize.NAME, tokenize.NUMBER) or nxt.string == "`":
            return self._finding("py2-print", _PRINT_STATEMENT, index)
        if nxt.type == tokenize.OP and nxt.string == ">>":
            return self._finding("py2-print", "print statement `print >>file, ...`", index)
        if nxt.type == tokenize.OP and nxt.string in ("%", "-", "~", "[", "{"):
            return self._finding("py2-print", _PRINT_STATEMENT, index)
        if nxt.type == tokenize.OP and nxt.string == "(" and self._tuple_after_parens(index + 1):
            return self._finding("py2-print", "print statement of a tuple `print (x), y`", index)
        return None

    def _tuple_after_parens(self, open_index: int) -> bool:
        depth = 0
        for i in range(open_index, len(self.tokens)):
            tok = self.tokens[i]
            if tok.type == tokenize.NEWLINE:
                return False
            depth += _bracket(tok)
            if depth == 0:
                return self._is(i + 1, ",")
        return False

    def _exec(self, index: int) -> Finding | None:
        nxt = self._tok(index + 1)
        if "exec" not in self.defined and self._keyword_at_start(index, "exec") and nxt is not None \
                and nxt.type in (tokenize.STRING, tokenize.NAME):
            return self._finding("py2-exec", "exec statement (Python 2); use exec(...)", index)
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
                return self._finding("py2-backtick", "backtick repr `x` (Python 2); use repr(x)", index)
        return None

    def _not_equal(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        is_ne = tok.string == "<>" or (tok.string == "<" and self._is(index + 1, ">") and self._adjacent(index))
        if tok.type in (tokenize.OP, tokenize.ERRORTOKEN) and is_ne:
            return self._finding("py2-ne", "`<>` operator (Python 2); use !=", index)
        return None

    def _octal(self, index: int) -> Finding | None:
        tok, nxt = self.tokens[index], self._tok(index + 1)
        if tok.type != tokenize.NUMBER:
            return None
        # Python 3's tokenizer splits `0777` into `0` and `777`; some versions keep it whole.
        split = tok.string == "0" and self._adjacent(index) and nxt.type == tokenize.NUMBER and nxt.string[:1].isdigit()
        digits = tok.string.rstrip("lL")
        if split or (re.fullmatch(r"0[0-7]+[lL]?", tok.string) and digits != "0" * len(digits)):
            return self._finding("py2-octal", "old octal literal like 0777 (Python 2); use 0o777", index)
        return None

    def _long(self, index: int) -> Finding | None:
        tok, nxt = self.tokens[index], self._tok(index + 1)
        if tok.type != tokenize.NUMBER:
            return None
        suffix = nxt is not None and nxt.type == tokenize.NAME and nxt.string in ("L", "l") and self._adjacent(index)
        if suffix or re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)[lL]", tok.string):
            return self._finding("py2-long", "long literal like 10L (Python 2); drop the L", index)
        return None

    def _ur_string(self, index: int) -> Finding | None:
        tok, nxt = self.tokens[index], self._tok(index + 1)
        if tok.type == tokenize.NAME and tok.string.lower() in ("ur", "bur") and nxt is not None \
                and nxt.type == tokenize.STRING and self._adjacent(index):
            return self._finding("py2-ur-string", "ur'' string prefix (Python 2); use r''", index)
        return None

    def _tuple_params(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type == tokenize.NAME and tok.string == "lambda":
            if self._is(index + 1, "("):
                return self._finding("py2-tuple-params", "tuple parameter in lambda (Python 2)", index)
            return self._tuple_in_params(index + 1, end=":")
        if tok.type == tokenize.NAME and tok.string == "def" and self._is(index + 2, "("):
            return self._tuple_in_params(index + 3, end=")")
        return None

    def _tuple_in_params(self, start: int, end: str) -> Finding | None:
        """A '(' right after the parameter list opens or after a comma is a tuple parameter."""
        depth, prev = 0, "("
        for tok in self.tokens[start:]:
            if tok.type == tokenize.NEWLINE:
                return None
            if tok.type == tokenize.OP and tok.string == "(" and depth == 0 and prev in ("(", ","):
                return Finding("py2-tuple-params", "tuple parameter `def f((a, b))` (Python 2)", tok.start[0])
            if depth == 0 and (_bracket(tok) < 0 or tok.string == end):
                return None
            depth += _bracket(tok)
            prev = tok.string
        return None

    def _name(self, index: int) -> Finding | None:
        tok = self.tokens[index]
        if tok.type != tokenize.NAME:
            return None
        name, prev_dot = tok.string, self._is(index - 1, ".")
        if name in PY2_BUILTINS and not prev_dot and name not in self.defined and not self._is(index + 1, "="):
            return self._finding("py2-name", f"Python 2-only builtin `{name}`", index)
        if name in PY2_METHODS and prev_dot and name not in self.defined:
            return self._finding("py2-name", f"Python 2-only dict method `.{name}()`", index)
        attr = self._tok(index + 2)
        if name in PY2_MODULE_ATTRS and not prev_dot and self._is(index + 1, ".") and attr is not None \
                and attr.string in PY2_MODULE_ATTRS[name] and self.defined.get(name, "import") == "import":
            return self._finding("py2-name", f"Python 2-only `{name}.{attr.string}`", index)
        return None


def _bracket(tok: tokenize.TokenInfo) -> int:
    """+1 for an opening bracket, -1 for a closing one, else 0."""
    if tok.type != tokenize.OP:
        return 0
    return 1 if tok.string in ("(", "[", "{") else -1 if tok.string in (")", "]", "}") else 0


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
