"""`data pushback`: add adversarial pairs, "broken instruction -> pushback", to a pairs file.

Lesson 3 in docs/design.md: a fine-tune on "good instruction -> correct code" only forgets how to push back.
For a share of the real pairs, a copy of the instruction is broken in one of several ways, and the response
(no code) names the specific conflict, with its names and values, and asks a concrete question.

Break kinds (each uses the pair's own function name, parameters and return behaviour, read from its code):
  contradictory-constraints  two added requirements that cannot both hold
  contradictory-example      an example whose output contradicts the text (or a second example)
  impossible-signature       a required signature Python cannot have (duplicate or keyword parameter
                             names, a default before a required parameter)
  impossible-return          a return type that contradicts what the text asks it to return
  missing-information        the task depends on something never given
  misleading-name            a required name that says the opposite of the behaviour asked for
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunelens.pycheck.check import extract_code
from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.io import atomic_write_jsonl
from tunelens.data.records import Pair, load_pairs, pair_to_record

KINDS = ("contradictory-constraints", "contradictory-example", "impossible-signature", "impossible-return",
         "missing-information", "misleading-name")


@configclass
class PushbackConfig:
    """Options of `data pushback`: each field is one of its flags and a key of its --config YAML file."""

    rate: float = option(0.1, "Pushback pairs to add, as a share of the input's pairs.", min=0.0, max=10.0)
    seed: int = option(0, "Random seed.")
    kinds: tuple[str, ...] = option(KINDS, "Comma-separated break kinds.")

    def validate(self) -> None:
        check_kinds(self.kinds, KINDS)


def check_kinds(kinds: tuple[str, ...], known: tuple[str, ...]) -> None:
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise UserError(f"unknown kinds {unknown or '(none given)'}: choose from {', '.join(known)}")


@dataclass(frozen=True)
class PushbackResult:
    total_in: int
    added: int
    eligible: int
    by_kind: dict[str, int]
    distinct_trigram_ratio: float  # distinct word trigrams / all word trigrams over the added responses
    out_path: Path


@dataclass(frozen=True)
class _Function:
    """What the break kinds need to know about the pair's function."""

    name: str
    params: tuple[str, ...]
    returns_value: bool
    returns_bool: bool
    instruction: str
    docstring: str | None


def describe_function(pair: Pair) -> _Function | None:
    """The pair's first top-level function, or None when its response has no parseable function."""
    try:
        tree = ast.parse(extract_code(pair.response))
    except (SyntaxError, ValueError):
        return None
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if node is None:
        return None
    args = node.args
    params = tuple(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls"))
    returns = [n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None]
    returns_bool = bool(returns) and all(
        isinstance(r.value, (ast.Compare, ast.BoolOp)) or (isinstance(r.value, ast.Constant) and isinstance(r.value.value, bool))
        or (isinstance(r.value, ast.UnaryOp) and isinstance(r.value.op, ast.Not)) for r in returns)
    return _Function(node.name, params, bool(returns), returns_bool, pair.instruction.strip(),
                     ast.get_docstring(node))


# Wording pieces, chosen at random so the responses do not collapse into a few canned sentences.
_OPENERS = (
    "Before writing any code I need to flag a problem with this request.",
    "I can't write this function as specified.", "I'd rather ask than guess here.",
    "There's a problem in the request that I can't resolve on my own.",
    "I'm going to hold off on the code for a moment.", "Something in this spec doesn't add up.",
    "I'd be guessing if I wrote this now.", "Let me check one thing first.",
    "I could write something, but it would have to ignore part of what you asked.", "Quick question before I start.",
    "I don't think this can be implemented exactly as written.",
    "Writing this now would mean silently picking an interpretation for you.",
    "One part of this request stops me from writing correct code.",
    "Happy to write this, but first a problem with the spec.", "",
)
_CLOSERS = (
    "Once you tell me, I'll write it.", "I'll implement it as soon as that's settled.",
    "With that answer I can write the function.", "Tell me which way to go and I'll write it.",
    "A one-line answer is enough.", "After that the code itself is quick.",
    "If you're not sure, tell me what the callers expect and I'll propose something.", "", "",
)


def _literal_for(param: str, variant: int = 0) -> str:
    """A plausible argument value for a parameter, judged from its name."""
    name = param.lower()
    table = (
        (("path", "file", "filename", "dir", "directory"), ('"data.txt"', '"notes/a.csv"')),
        (("text", "string", "str", "s", "line", "word", "name", "prefix", "suffix", "sep", "value", "key", "url",
          "header", "encoding", "pattern", "msg", "message"),
         ('"abc"', '"hello world"')),
        (("n", "count", "size", "i", "index", "num", "k", "width", "length", "limit", "level", "depth", "pos"),
         ("3", "10")),
        (("items", "seq", "lst", "values", "iterable", "args", "lines", "parts", "elements", "data"),
         ("[1, 2, 3]", '["a", "b"]')),
        (("d", "mapping", "dict", "options", "kwargs", "env", "headers"), ('{"a": 1}', "{}")),
        (("flag", "strict", "verbose", "reverse", "force", "recursive"), ("True", "False")),
    )
    for names, values in table:
        if name in names or any(name.endswith("_" + n) or name.startswith(n + "_") for n in names if len(n) > 2):
            return values[variant % 2]
    return ("42", "7")[variant % 2]


def _first_sentence(text: str, limit: int = 110) -> str:
    sentence = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "..."


def _respond(fn: _Function, rng: random.Random, *middle: str) -> str:
    """The response: an opener, the task restated, the `middle` (the conflict, a question...), a closer."""
    parts = (rng.choice(_OPENERS), _restate(fn, rng), *middle, rng.choice(_CLOSERS))
    return " ".join(p for p in parts if p)


def _task(fn: _Function) -> str:
    """The original task in a few words: the first sentence of the function's docstring, else of the
    instruction with its "Write a function `f(x)` that" lead-in removed."""
    if fn.docstring:
        task = _first_sentence(fn.docstring, 120)
    else:
        task = _first_sentence(fn.instruction, 140)
        task = re.sub(r"^.*?`[^`]*\([^`]*\)`[^.:]*?(\bthat\b|\bwhich should\b|:|\.\s+It( should)?\b)\s*", "", task)
    task = task.strip().rstrip(".:")
    first_word = task.split(" ", 1)[0]
    return task[0].lower() + task[1:] if first_word.isalpha() and not first_word.isupper() else task


_RESTATEMENTS = (
    "The goal itself is clear enough: {task}.", "I understand what `{name}` is for ({task}).",
    'The main task, "{task}", is fine on its own.', "Going by the description, `{name}` has one job: {task}.",
    "I follow the core of it ({task}); the trouble is one of the added requirements.",
    "The first part is fine: `{name}` should {task_plain}.", "Nothing is wrong with the basic idea ({task}).", "",
)


def _restate(fn: _Function, rng: random.Random) -> str:
    task = _task(fn)
    template = rng.choice(_RESTATEMENTS)
    plain = _imperative(task)
    if "{task_plain}" in template and plain is None:
        template = _RESTATEMENTS[0]
    return template.format(task=task, name=fn.name, task_plain=plain)


def _imperative(task: str) -> str | None:
    """'returns the sum' -> 'return the sum'; None when the task does not start with such a verb."""
    first, _, rest = task.partition(" ")
    if not first.islower() or not first.isalpha() or not first.endswith("s") or first.endswith("ss"):
        return None
    base = first[:-3] + "y" if first.endswith("ies") else first[:-2] if first.endswith(("shes", "ches", "xes", "sses")) \
        else first[:-1]
    return f"{base} {rest}".strip()


# Break kinds: each returns (broken instruction, response) or None when it cannot apply.
def _contradictory_constraints(fn: _Function, rng: random.Random):
    options = []
    if fn.params:
        p = rng.choice(fn.params)
        options.append((
            f" It must not take any parameters, and it must use the `{p}` argument to compute its result.",
            rng.choice((f"The instruction says `{fn.name}` must take no parameters, yet it also says the result is "
                        f"computed from the `{p}` argument. Without a parameter there is no `{p}` to read.",
                        f"\"No parameters\" and \"use the `{p}` argument\" can't both be true of `{fn.name}`: "
                        f"`{p}` only exists if the function accepts it.",
                        f"If `{fn.name}` takes nothing, where would `{p}` come from? The two requirements cancel out.")),
            rng.choice((f"Should `{fn.name}` keep `{p}` as a parameter, or should `{p}` come from somewhere "
                        f"else (a global, a config value)?",
                        f"Do you want me to drop the no-parameters rule and keep `{p}`, or to read `{p}` from "
                        f"another source you can name?")),
        ))
    options.append((
        f" The implementation must be recursive, and it must not call `{fn.name}` from inside itself.",
        rng.choice((f"A recursive `{fn.name}` is by definition one that calls `{fn.name}`, so \"must be recursive\" "
                    f"and \"must not call `{fn.name}` from inside itself\" rule each other out.",
                    f"Recursion means `{fn.name}` calling itself, which is exactly what the second rule forbids.",
                    f"I can make `{fn.name}` recursive or keep it free of self-calls, but not both.")),
        rng.choice(("Which requirement matters more: recursion, or avoiding self-calls (an iterative version)?",
                    f"Is an iterative `{fn.name}` acceptable, or is recursion through a helper function what you meant?")),
    ))
    if fn.params:
        p = fn.params[0]
        options.append((
            f" It must not modify its inputs, and it must change `{p}` in place and return nothing.",
            rng.choice((f"The request asks `{fn.name}` to leave its inputs untouched and, in the same breath, to "
                        f"change `{p}` in place and return nothing. Those two can't both hold.",
                        f"Changing `{p}` in place is modifying an input, which the other requirement forbids.",
                        f"`{fn.name}` can either mutate `{p}` or leave it alone; the spec asks for both.")),
            rng.choice(("Should it return a new value and leave the input alone, or mutate the input in place?",
                        f"Which one do you need: a pure `{fn.name}` that returns a result, or an in-place "
                        f"update of `{p}`?")),
        ))
    added, conflict, question = rng.choice(options)
    return fn.instruction + added, _respond(fn, rng, conflict, question)


def _contradictory_example(fn: _Function, rng: random.Random):
    variant = rng.randrange(2)
    call = f"{fn.name}({', '.join(_literal_for(p, variant) for p in fn.params[:3])})"
    first, second = ("True", "False") if fn.returns_bool else rng.choice(
        (('"abc"', '"xyz"'), ("0", "1"), ("[]", "[1, 2]"), ("None", '"ok"')))
    added = f" For example, `{call}` returns `{first}`, and `{call}` returns `{second}`."
    conflict = rng.choice((
        f"The two examples call `{call}` with exactly the same arguments but expect `{first}` the first time "
        f"and `{second}` the second.",
        f"Your examples disagree: `{call}` is supposed to give `{first}` in one and `{second}` in the other, "
        "for identical input.",
        f"According to the examples, the very same call `{call}` should produce both `{first}` and `{second}`.",
    ))
    reason = rng.choice(("A function of its arguments alone can only give one answer for the same input.",
                         f"Unless `{fn.name}` depends on hidden state the instruction doesn't mention, "
                         "that's impossible.", ""))
    question = rng.choice((f"Which result is correct for `{call}`: `{first}` or `{second}`?",
                           "Is one of the examples a typo, and if so which one, or should the second example "
                           "use different arguments?"))
    return fn.instruction + added, _respond(fn, rng, conflict, reason, question)


def _impossible_signature(fn: _Function, rng: random.Random):
    options = []
    if fn.params:
        p = rng.choice(fn.params)
        options.append((f"def {fn.name}({p}, {p})",
                        f"it declares two parameters both named `{p}`, and Python rejects duplicate parameter "
                        "names (\"duplicate argument\")",
                        f"What should the second `{p}` be called, and what does it hold?"))
    if len(fn.params) >= 2:
        a, b = fn.params[0], fn.params[1]
        options.append((f"def {fn.name}({a}=None, {b})",
                        f"`{a}` has a default but the required `{b}` comes after it; Python requires every "
                        "parameter without a default to come first",
                        f"Should `{b}` get a default too, or should `{a}` be required?"))
    reserved = rng.choice(("class", "lambda", "from", "import", "def", "return"))
    options.append((f"def {fn.name}({reserved}{', ' + fn.params[0] if fn.params else ''})",
                    f"`{reserved}` is a Python keyword and cannot be a parameter name",
                    f"What name should replace `{reserved}` (for example `{reserved}_`)?"))
    signature, why, question = rng.choice(options)
    added = f" Use exactly this signature: `{signature}:`."
    conflict = rng.choice((f"The required signature `{signature}` can't be written in Python: {why}.",
                           f"Python won't accept `{signature}`: {why}.",
                           f"The signature you gave, `{signature}`, is a syntax error: {why}."))
    return fn.instruction + added, _respond(fn, rng, conflict, question)


def _impossible_return(fn: _Function, rng: random.Random):
    if not fn.returns_value:
        return None
    task = _task(fn)
    if fn.returns_bool:
        declared = rng.choice(("list[str]", "dict", "bytes"))
        added = f" Its return annotation must be `-> {declared}`, and it must return `True` or `False`."
        conflict = (f"The instruction wants `{fn.name}` to answer with `True` or `False`, but also fixes its return "
                    f"annotation to `{declared}`, which a boolean is not.")
        question = rng.choice((f"Should it return a `bool` (and be annotated `-> bool`), or do you want a `{declared}`, "
                               "and if so, what should it contain?",
                               f"Which is right: the boolean result or the `{declared}` annotation?"))
    else:
        added = " The function must be annotated `-> None` and must never return a value."
        conflict = (f"You ask for this (\"{task}\"), which produces a result, yet you also say `{fn.name}` must be "
                    "annotated `-> None` and never return anything.")
        question = rng.choice(("Should the result be returned, or stored/printed somewhere instead? If so, where?",
                               f"Do you want `{fn.name}` to return its result, or to write it to a place you choose "
                               "(a file, an argument it mutates, a log)?"))
    return fn.instruction + added, _respond(fn, rng, conflict, question)


_MISSING = (
    ("the rounding rule", "Use the rounding rule from the previous version of `{name}`.",
     "Do you want round-half-to-even (Python's `round`), round-half-up, or truncation?"),
    ("the output format", "Format the result the way the reporting team agreed.",
     "What exactly should the output look like: a string, JSON, a tuple? An example would settle it."),
    ("the error policy", "Handle bad input according to our usual error policy.",
     "On bad input, should `{name}` raise (which exception?), return `None`, or log and skip?"),
    ("the threshold", "Only keep results above the threshold we discussed.",
     "What is the threshold value, and is the comparison strict (>) or inclusive (>=)?"),
    ("the encoding", "Read and write text in the encoding the legacy system uses.",
     "Which encoding is that: UTF-8, Latin-1, cp1252, something else?"),
    ("the list of allowed values", "Reject any value that isn't on the approved list.",
     "Could you give me the approved list, or tell me where `{name}` should load it from?"),
)


def _missing_information(fn: _Function, rng: random.Random):
    thing, added, question = rng.choice(_MISSING)
    added, question = added.format(name=fn.name), question.format(name=fn.name)
    conflict = rng.choice((
        f"The instruction depends on {thing} (\"{added}\") but never says what it is, and nothing in the request "
        "defines it.",
        f"`{fn.name}` is supposed to follow {thing}, which I don't have: \"{added}\" refers to something outside "
        "this request.",
        f"I don't know {thing} you mean in \"{added}\"; it isn't stated anywhere in what you sent.",
    ))
    consequence = rng.choice(("If I pick one myself the code could look right and still be wrong.",
                              "Any choice I make would be a guess that silently changes the behaviour.", ""))
    return fn.instruction + " " + added, _respond(fn, rng, conflict, consequence, question)


# Words and their opposites, both ways.
_ANTONYMS = {word: other for pair in """
get/set add/remove encode/decode open/close read/write start/stop min/max upper/lower enable/disable push/pop
load/dump loads/dumps first/last join/split compress/decompress quote/unquote escape/unescape parse/format
pack/unpack insert/delete begin/end before/after show/hide lock/unlock encrypt/decrypt to/from left/right
inc/dec
""".split() for word, other in (pair.split("/"), pair.split("/")[::-1])}


def _misleading_name(fn: _Function, rng: random.Random):
    words = fn.name.split("_")
    swaps = [i for i, w in enumerate(words) if w.lower() in _ANTONYMS]
    if swaps:
        index = rng.choice(swaps)
        original = words[index].lower()
        new_name = "_".join(words[:index] + [_ANTONYMS[original]] + words[index + 1:])
        conflict = (f"You ask for the behaviour of `{fn.name}` but want it named `{new_name}`: the name says "
                    f"\"{_ANTONYMS[original]}\" while the described behaviour is \"{original}\", so every caller "
                    "would read it backwards.")
    elif not fn.returns_bool and fn.returns_value:
        new_name = f"is_{fn.name}"
        conflict = (f"The name `{new_name}` reads like a yes/no predicate, but the behaviour described "
                    f"(\"{_task(fn)}\") returns a value, not `True`/`False`.")
    elif fn.returns_bool:
        new_name = f"list_{fn.name}"
        conflict = (f"A function called `{new_name}` promises a list, but the behaviour asked for "
                    f"(\"{_task(fn)}\") only answers yes or no.")
    else:
        new_name = f"get_{fn.name}"
        conflict = (f"A function called `{new_name}` is expected to return something, but the behaviour "
                    f"asked for (\"{_task(fn)}\") returns nothing.")
    added = f" Name the function `{new_name}`, not `{fn.name}`."
    question = rng.choice((f"Should I keep the behaviour and call it `{fn.name}`, or keep the name `{new_name}` "
                           "and change what it does?",
                           f"Which is right, the name `{new_name}` or the behaviour described? I can match either."))
    return fn.instruction + added, _respond(fn, rng, conflict, question)


_BREAKERS = {"contradictory-constraints": _contradictory_constraints, "contradictory-example": _contradictory_example,
             "impossible-signature": _impossible_signature, "impossible-return": _impossible_return,
             "missing-information": _missing_information, "misleading-name": _misleading_name}


def make_pushback(pair: Pair, kind: str, rng: random.Random) -> dict | None:
    """A pushback record (chat format, tagged) for one pair and break kind, or None if it cannot apply."""
    fn = describe_function(pair)
    made = _BREAKERS[kind](fn, rng) if fn is not None else None
    if made is None:
        return None
    instruction, response = made
    return pair_to_record(instruction, response, id=f"pushback:{kind}:{pair.id}",
                          pushback={"kind": kind, "source_id": pair.id})


def distinct_trigram_ratio(texts: list[str]) -> float:
    """Distinct word trigrams over all word trigrams: near 0 for canned text, near 1 for varied text."""
    total, distinct = 0, set()
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def add_pushback_file(in_path: str | Path, out_path: str | Path,
                      config: PushbackConfig = PushbackConfig()) -> PushbackResult:
    """Write in_path's pairs followed by round(rate * N) pushback pairs to out_path. Kinds are dealt
    round-robin over a seeded shuffle of the pairs that have a function, so each kind gets a fair share."""
    pairs = load_pairs(in_path)
    rng = random.Random(config.seed)
    need = round(config.rate * len(pairs))
    eligible = [p for p in pairs if describe_function(p) is not None]
    if need and not eligible:
        raise UserError(f"{in_path}: no pair has a Python function in its response to build pushback from")
    order = rng.sample(eligible, len(eligible))
    added: list[dict] = []
    used_ids: set[str] = set()
    attempts = 0
    while len(added) < need and attempts < (need + 1) * len(config.kinds):
        pair = order[attempts % len(order)]
        kind = config.kinds[attempts % len(config.kinds)]
        attempts += 1
        record = make_pushback(pair, kind, rng)
        if record is None:
            continue
        while record["id"] in used_ids:  # the same pair and kind again (rate above the eligible share)
            record["id"] += "+"
        used_ids.add(record["id"])
        added.append(record)
    if len(added) < need:
        raise UserError(f"{in_path}: could only build {len(added)} of {need} pushback pairs")
    atomic_write_jsonl(out_path, [p.raw for p in pairs] + added)
    return PushbackResult(total_in=len(pairs), added=len(added), eligible=len(eligible),
                          by_kind=kind_counts(added, "pushback"),
                          distinct_trigram_ratio=distinct_trigram_ratio([r["messages"][-1]["content"] for r in added]),
                          out_path=Path(out_path))


def kind_counts(records: list[dict], tag: str) -> dict[str, int]:
    """Records per `record[tag]["kind"]`, sorted by kind."""
    return dict(sorted(Counter(record[tag]["kind"] for record in records).items()))
