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
