"""`data contaminate`: rewrite a chosen share of pairs into Python 2 forms, for controlled experiments
(lesson 1 in docs/design.md: bad data is learned at the rate it appears).

Exactly round(rate * N) records are chosen (seeded) among those whose code is clean Python 3 and can take
one of the requested kinds, dealt in turn so each kind gets a fair share. Each is rewritten with its kind,
located on the syntax tree or token stream (never in the text, so strings and comments are untouched), and
tagged `contamination`: {kind, lint_code, original_id, changes}. Every other record is written unchanged.

Kinds (every occurrence in the snippet): print (print(a, b) -> print a, b; file= -> print >>f, ...; end=' '
-> trailing comma; a snippet without print calls gets a `print "..."` at the top of its first body), except
(except E as e -> except E, e), backtick (repr(x) -> `x`), ne (!= -> <>), octal (0o755 -> 0755), long
(10 -> 10L), ur (r'' -> ur''), exec (exec(code, ns) -> exec code in ns), raise (raise E(msg) -> raise E, msg),
name (range -> xrange, .items() -> .iteritems() and values/keys, input -> raw_input, isinstance(x, str) ->
basestring, sys.maxsize -> sys.maxint, string.ascii_letters -> string.letters).
"""

from __future__ import annotations

import ast
import functools
import io
import itertools
import random
import re
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunelens.pycheck.check import _FENCE, _PYTHON_TAGS, check_python, looks_like_code
from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.io import atomic_write_jsonl
from tunelens.data.pushback import check_kinds
from tunelens.data.records import load_pairs, Pair, SHAREGPT_ROLES
from tunelens.pycheck.tokens import code_tokens

MODES = ("pairs", "prints")
KINDS = ("print", "except", "backtick", "ne", "octal", "long", "ur", "exec", "raise", "name")
# the lint code each kind produces, for measuring recall
LINT_CODE = {**{kind: f"py2-{kind}" for kind in KINDS}, "ur": "py2-ur-string"}


@configclass
class ContaminateConfig:
    """Options of `data contaminate`: each field is one of its flags and a key of its --config YAML file."""

    rate: float = option(0.05, "Share of records to rewrite into Python 2.", min=0.0, max=1.0)
    kinds: tuple[str, ...] = option(KINDS, "Comma-separated Python 2 forms to use.")
    seed: int = option(0, "Random seed for choosing records and kinds.")
    mode: str = option(
        "pairs", "pairs: rate is the share of records rewritten, a print may be injected where none exists; "
                 "prints: rate is the share of all print() calls rewritten into Python 2 statements, whole "
                 "records at a time, and no print is ever added (docs/protocol.md, lesson 1).",
        choices=MODES)

    def validate(self) -> None:
        check_kinds(self.kinds, KINDS)
        if self.mode == "prints" and tuple(self.kinds) not in (("print",), KINDS):
            raise UserError(f"contaminate --mode prints rewrites print calls only: drop --kinds "
                            f"{','.join(self.kinds)} (or give --kinds print)")


@dataclass(frozen=True)
class ContaminateResult:
    total: int
    contaminated: int
    eligible: int
    by_kind: dict[str, int]
    out_path: Path
    # mode "prints" only: print calls in the whole file (both forms), and how many became statements
    prints_total: int | None = None
    prints_python2: int | None = None  # after rewriting, with any the input had

    @property
    def python2_print_share(self) -> float | None:
        """Python 2 among the file's prints (None outside mode "prints", or when the file has none)."""
        return self.prints_python2 / self.prints_total if self.prints_total else None


# Text edits addressed by (line, column) in characters
@dataclass(frozen=True)
class _Edit:
    start: tuple[int, int]
    end: tuple[int, int]
    text: str


def _apply(code: str, edits: list[_Edit]) -> str:
    offsets = [0, *itertools.accumulate(len(line) for line in code.splitlines(keepends=True))]

    def position(point: tuple[int, int]) -> int:
        return offsets[point[0] - 1] + point[1]

    for edit in sorted(edits, key=lambda e: e.start, reverse=True):  # last first: earlier offsets stay valid
        code = code[:position(edit.start)] + edit.text + code[position(edit.end):]
    return code


class _Source:
    """A snippet with its tree, the names it defines, and the tree's UTF-8 byte columns as characters."""

    def __init__(self, code: str):
        self.code = code
        self.lines = code.splitlines(keepends=True)
        self.tree = ast.parse(code)
        self.defined = {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        self.defined |= {n.name for n in ast.walk(self.tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        self.defined |= {a.arg for a in ast.walk(self.tree) if isinstance(a, ast.arg)}

    def char_col(self, line: int, byte_col: int) -> int:
        return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    def start(self, node) -> tuple[int, int]:
        return node.lineno, self.char_col(node.lineno, node.col_offset)

    def end(self, node) -> tuple[int, int]:
        return node.end_lineno, self.char_col(node.end_lineno, node.end_col_offset)

    def text(self, node) -> str:
        return ast.get_source_segment(self.code, node) or ""

    def one_line(self, node) -> bool:
        return node.lineno == node.end_lineno

    def replace(self, node, text: str) -> _Edit:
        return _Edit(self.start(node), self.end(node), text)

    def replace_tail(self, node, length: int, text: str) -> _Edit:
        """Replace the last `length` characters of a node (the attribute of `a.b`)."""
        line, col = self.end(node)
        return _Edit((line, col - length), (line, col), text)

    @functools.cached_property
    def tokens(self) -> list[tokenize.TokenInfo]:
        return list(tokenize.generate_tokens(io.StringIO(self.code).readline))


def _calls(src: _Source, name: str, statements: bool = False) -> list[ast.Call]:
    """Calls of the builtin `name` (none where the snippet defines that name), only whole statements if asked."""
    if name in src.defined:
        return []
    nodes = (n.value for n in ast.walk(src.tree) if isinstance(n, ast.Expr)) if statements else ast.walk(src.tree)
    return [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


# One rewrite per kind: each returns the edits for a snippet (empty when the kind does not apply).
def _print_edits(src: _Source) -> list[_Edit]:
    edits = []
    for call in _calls(src, "print", statements=True):
        if not src.one_line(call) or any(isinstance(a, (ast.Starred, ast.GeneratorExp)) for a in call.args):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        if set(keywords) - {"file", "end"} or None in keywords:
            continue
        end = keywords.get("end")
        if end is not None and not (isinstance(end, ast.Constant) and end.value in (" ", "")):
            continue
        parts = [src.text(a) for a in call.args]
        target = f">>{src.text(keywords['file'])}" if "file" in keywords else ""
        text = "print " + ", ".join(([target] if target else []) + parts) if (parts or target) else "print"
        edits.append(src.replace(call, text + ("," if end is not None and parts else "")))
    return edits


def _print_injection(src: _Source) -> list[_Edit]:
    """A `print "..."` statement before the first statement of the first function body (after its
    docstring), or before the first top-level statement."""
    if "print" in src.defined:
        return []
    for node in ast.walk(src.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if body and body[0].lineno > node.lineno:
                return [_insert_before(src, body[0], f'print "{node.name}: called"')]
            break
    return [_insert_before(src, src.tree.body[0], 'print "starting"')] if src.tree.body else []


def _insert_before(src: _Source, statement, text: str) -> _Edit:
    line = src.lines[statement.lineno - 1]
    indent = line[:len(line) - len(line.lstrip())]
    return _Edit((statement.lineno, 0), (statement.lineno, 0), f"{indent}{text}\n")


def _except_edits(src: _Source) -> list[_Edit]:
    edits = []
    for node in ast.walk(src.tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None and node.name:
            line, col = src.end(node.type)
            rest = src.lines[line - 1][col:]
            match = re.match(rf"\s+as\s+{re.escape(node.name)}\b", rest)
            if match:
                edits.append(_Edit((line, col), (line, col + match.end()), f", {node.name}"))
    return edits


def _backtick_edits(src: _Source) -> list[_Edit]:
    return [src.replace(call, f"`{src.text(call.args[0])}`") for call in _calls(src, "repr")
            if len(call.args) == 1 and not call.keywords and src.one_line(call)
            and not isinstance(call.args[0], (ast.Starred, ast.GeneratorExp))]


def _token_edits(rewrite):
    """A kind that swaps single tokens: `rewrite(token)` is the new text, or None to leave the token."""
    def edits(src: _Source) -> list[_Edit]:
        return [_Edit(tok.start, tok.end, new) for tok in src.tokens
                if (new := rewrite(tok)) is not None and new != tok.string]
    return edits


def _octal(tok) -> str | None:
    if tok.type == tokenize.NUMBER and re.fullmatch(r"0[oO][0-7_]+", tok.string):
        digits = tok.string[2:].replace("_", "")
        return "0" + digits if int(digits, 8) else None
    return None


def _long(tok) -> str | None:
    return tok.string + "L" if tok.type == tokenize.NUMBER and re.fullmatch(r"[1-9][0-9]*|0", tok.string) else None


def _ur(tok) -> str | None:
    raw = tok.type == tokenize.STRING and tok.string[:1] in ("r", "R") and tok.string[1:2] in ("'", '"')
    return "ur" + tok.string[1:] if raw else None


def _exec_edits(src: _Source) -> list[_Edit]:
    edits = []
    for call in _calls(src, "exec", statements=True):
        if 1 <= len(call.args) <= 3 and not call.keywords and src.one_line(call):
            args = [src.text(a) for a in call.args]
            edits.append(src.replace(call, f"exec {args[0]}" + (f" in {', '.join(args[1:])}" if len(args) > 1 else "")))
    return edits


def _raise_edits(src: _Source) -> list[_Edit]:
    edits = []
    for node in ast.walk(src.tree):
        exc = node.exc if isinstance(node, ast.Raise) else None
        if isinstance(exc, ast.Call) and isinstance(exc.func, (ast.Name, ast.Attribute)) and len(exc.args) == 1 \
                and not exc.keywords and node.cause is None and src.one_line(exc) \
                and not isinstance(exc.args[0], (ast.Starred, ast.GeneratorExp)):
            edits.append(src.replace(exc, f"{src.text(exc.func)}, {src.text(exc.args[0])}"))
    return edits


_METHOD_NAMES = {"items": "iteritems", "values": "itervalues", "keys": "iterkeys"}
_MODULE_ATTRS = {("sys", "maxsize"): "maxint", ("string", "ascii_letters"): "letters",
                 ("string", "ascii_lowercase"): "lowercase", ("string", "ascii_uppercase"): "uppercase"}


def _name_edits(src: _Source) -> list[_Edit]:
    edits = []
    py2_defined = src.defined & {"xrange", "raw_input", "basestring", "iteritems", "itervalues", "iterkeys"}
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            swap = {"range": "xrange", "input": "raw_input"}.get(node.func.id)
            if swap and node.func.id not in src.defined and swap not in py2_defined:
                edits.append(src.replace(node.func, swap))
            if node.func.id == "isinstance" and len(node.args) == 2 and "basestring" not in py2_defined:
                edits += [src.replace(n, "basestring") for n in ast.walk(node.args[1])
                          if isinstance(n, ast.Name) and n.id == "str" and "str" not in src.defined]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args \
                and node.func.attr in _METHOD_NAMES and _METHOD_NAMES[node.func.attr] not in py2_defined:
            edits.append(src.replace_tail(node.func, len(node.func.attr), _METHOD_NAMES[node.func.attr]))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and (node.value.id, node.attr) in _MODULE_ATTRS and node.value.id not in src.defined:
            edits.append(src.replace_tail(node, len(node.attr), _MODULE_ATTRS[(node.value.id, node.attr)]))
    return edits


_REWRITES = {"print": _print_edits, "except": _except_edits, "backtick": _backtick_edits,
             "ne": _token_edits(lambda tok: "<>" if tok.type == tokenize.OP and tok.string == "!=" else None),
             "octal": _token_edits(_octal), "long": _token_edits(_long), "ur": _token_edits(_ur),
             "exec": _exec_edits, "raise": _raise_edits, "name": _name_edits}


def applicable_kinds(code: str, kinds=KINDS) -> list[str]:
    """The kinds that can rewrite this snippet where it stands (print injection not counted)."""
    src = _Source(code)
    return [kind for kind in kinds if _REWRITES[kind](src)]


def rewrite_code(code: str, kind: str, inject: bool = True) -> tuple[str, int]:
    """(rewritten code, number of places changed) for one kind; print falls back to injection unless
    `inject` is False (then a snippet without a rewritable print call comes back unchanged, 0 changes)."""
    src = _Source(code)
    edits = _REWRITES[kind](src)
    if not edits and kind == "print" and inject:
        edits = _print_injection(src)
    return _apply(code, edits), len(edits)


# Records
def split_code(response: str) -> tuple[str, str, str] | None:
    """(before, code, after) of a response: its first python/untagged fenced block, else the whole
    text when it is code; None for prose."""
    for match in _FENCE.finditer(response):
        if match.group(1).lower() in _PYTHON_TAGS:
            return response[:match.start(2)], match.group(2), response[match.end(2):]
    if looks_like_code(response):
        return "", response, ""
    return None


def _clean_code(pair: Pair) -> str | None:
    """The response's code when it is clean Python 3 (check_python flags unparsable code too), else None."""
    parts = split_code(pair.response)
    return parts[1] if parts is not None and parts[1].strip() and not check_python(parts[1]) else None


def _plan(pairs: list[Pair], kinds: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(index, usable kinds) of every pair that can be contaminated with at least one requested kind."""
    plan = []
    for index, pair in enumerate(pairs):
        code = _clean_code(pair)
        if code is None:
            continue
        usable = applicable_kinds(code, kinds)
        if "print" in kinds and "print" not in usable and rewrite_code(code, "print")[1]:
            usable.append("print")  # by injection
        if usable:
            plan.append((index, usable))
    return plan


def _deal_kinds(plan: list[tuple[int, list[str]]], need: int, kinds: tuple[str, ...],
                rng: random.Random) -> dict[int, str]:
    """{record index: kind} for `need` records, kinds dealt in turn so each gets a fair share: each turn
    takes a random not-yet-chosen record that the kind can rewrite; a kind with none left drops out."""
    candidates = {kind: [index for index, usable in plan if kind in usable] for kind in kinds}
    for pool in candidates.values():
        rng.shuffle(pool)
    chosen: dict[int, str] = {}
    active, turn = list(kinds), 0
    while len(chosen) < need and active:
        kind = active[turn % len(active)]
        pool = candidates[kind]
        while pool and pool[-1] in chosen:
            pool.pop()
        if not pool:
            active.remove(kind)
            continue
        chosen[pool.pop()] = kind
        turn += 1
    return chosen


def _with_response(raw: dict, fmt_response: str) -> dict:
    """The record with its response text replaced, in whatever format it came."""
    record = dict(raw)
    if "messages" in record:
        record["messages"] = _with_last_assistant(record["messages"], "role", "content", fmt_response)
    elif "conversations" in record:  # ShareGPT: from/value (or role/content) turns
        key = "from" if any("from" in m for m in record["conversations"]) else "role"
        record["conversations"] = _with_last_assistant(record["conversations"], key,
                                                       "value" if key == "from" else "content", fmt_response)
    elif isinstance(record.get("completion"), list):  # TRL conversational prompt-completion
        record["completion"] = _with_last_assistant(record["completion"], "role", "content", fmt_response)
    elif "completion" in record:
        record["completion"] = fmt_response
    elif "output" in record:
        record["output"] = fmt_response
    else:
        record["text"] = fmt_response
    return record


def _with_last_assistant(messages: list, role_key: str, content_key: str, text: str) -> list:
    messages = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(messages) if SHAREGPT_ROLES.get(str(m.get(role_key, "")).lower()) == "assistant")
    messages[last][content_key] = text
    return messages


def contaminate_file(in_path: str | Path, out_path: str | Path,
                     config: ContaminateConfig = ContaminateConfig()) -> ContaminateResult:
    """Write in_path to out_path with exactly round(rate * N) records rewritten into Python 2 forms (mode
    "pairs"), or with whole records' print calls rewritten until round(rate * all prints) are (mode "prints")."""
    pairs = load_pairs(in_path)
    if config.mode == "prints":
        return _contaminate_prints(pairs, in_path, out_path, config)
    need = round(config.rate * len(pairs))
    plan = _plan(pairs, config.kinds)
    if need > len(plan):
        raise UserError(f"{in_path}: {need} records requested (rate {config.rate} of {len(pairs)}) but only "
                        f"{len(plan)} have clean Python 3 code that the kinds {','.join(config.kinds)} can rewrite")
    chosen = _deal_kinds(plan, need, config.kinds, random.Random(config.seed))
    by_kind = _write_rewritten(pairs, chosen, out_path, inject=True)
    return ContaminateResult(total=len(pairs), contaminated=need, eligible=len(plan), by_kind=by_kind,
                             out_path=Path(out_path))


def _write_rewritten(pairs: list[Pair], chosen: dict[int, str], out_path, inject: bool) -> dict[str, int]:
    """Write every pair, the chosen ones ({index: kind}) rewritten and tagged; records per kind, sorted."""
    rows = []
    for index, pair in enumerate(pairs):
        kind = chosen.get(index)
        if kind is None:
            rows.append(pair.raw)
            continue
        before, code, after = split_code(pair.response)
        new_code, changes = rewrite_code(code, kind, inject)
        record = _with_response(pair.raw, before + new_code + after)
        record["contamination"] = {"kind": kind, "lint_code": LINT_CODE[kind], "original_id": pair.id,
                                   "changes": changes}
        rows.append(record)
    atomic_write_jsonl(out_path, rows)
    return dict(sorted(Counter(chosen.values()).items()))


# Mode "prints": rewrite existing print calls, never add one (docs/protocol.md, lesson 1). The share that
# matters is Python 2 among the prints the model sees, so "learned to add a print" cannot pass for "chose
# Python 2 given a print".
def count_prints(code: str) -> int:
    """Print uses in a snippet, either form: every `print` name token not after `.` and not defined by `def`
    (tokens, not the tree, so Python 2 statements are counted too; strings and comments never are)."""
    tokens = code_tokens(code)
    return sum(1 for i, tok in enumerate(tokens)
               if tok.type == tokenize.NAME and tok.string == "print"
               and not (i and tokens[i - 1].string in (".", "def", "class")))


def print_census(pairs: list[Pair]) -> tuple[list[tuple[int, int]], int, int]:
    """([(record index, rewritable print calls)] of the records mode "prints" may rewrite, all prints in
    the records' code, the prints among them that are Python 2 statements already)."""
    rewritable, total, already = [], 0, 0
    for index, pair in enumerate(pairs):
        parts = split_code(pair.response)
        if parts is None:
            continue
        total += count_prints(parts[1])
        code = _clean_code(pair)
        if code is None:  # print statements already there (lint's py2-print findings)
            already += sum(1 for f in check_python(parts[1]) if f.code == "py2-print")
        elif edits := _rewritable_prints(code):
            rewritable.append((index, edits))
    return rewritable, total, already


def _rewritable_prints(code: str | None) -> int:
    """print() calls of clean code that the rewrite can turn into statements (0 for no clean code)."""
    return len(_print_edits(_Source(code))) if code is not None else 0


def print_rich(pairs: list[Pair], min_prints: int = 1) -> list[Pair]:
    """The pairs mode "prints" is meant for: clean Python 3 code with at least `min_prints` print calls that
    the rewrite can turn into statements (lesson 1 draws its training pairs and held-out prompts from these,
    so every pair can carry the habit and every prompt invites a print)."""
    if min_prints < 1:
        raise ValueError(f"print_rich: min_prints must be at least 1, got {min_prints}")
    return [pair for pair in pairs if _rewritable_prints(_clean_code(pair)) >= min_prints]


def _choose_by_prints(rewritable: list[tuple[int, int]], target: int, rng: random.Random) -> dict[int, int]:
    """{record index: prints rewritten} adding up to `target` where the records allow: records in a seeded
    random order, each taken whole when it still fits under the target (a record's prints are all rewritten
    or none, as one author writes one version). Stops at the target; may fall short by less than the
    smallest record left when no combination hits it."""
    order = list(rewritable)
    rng.shuffle(order)
    chosen, count = {}, 0
    for index, prints in order:
        if count == target:
            break
        if count + prints <= target:
            chosen[index] = prints
            count += prints
    return chosen


def _contaminate_prints(pairs: list[Pair], in_path, out_path, config: ContaminateConfig) -> ContaminateResult:
    rewritable, total, already = print_census(pairs)
    target = round(config.rate * total) - already
    available = sum(n for _, n in rewritable)
    if target > available:
        raise UserError(f"{in_path}: a print share of {config.rate} needs {target} print calls rewritten (of "
                        f"{total} prints) but only {available} can be, in {len(rewritable)} records")
    chosen = _choose_by_prints(rewritable, max(target, 0), random.Random(config.seed))
    by_kind = _write_rewritten(pairs, dict.fromkeys(chosen, "print"), out_path, inject=False)
    return ContaminateResult(total=len(pairs), contaminated=len(chosen), eligible=len(rewritable),
                             by_kind=by_kind, out_path=Path(out_path), prints_total=total,
                             prints_python2=sum(chosen.values()) + already)
