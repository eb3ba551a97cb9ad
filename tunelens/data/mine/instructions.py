"""Instructions for mined pairs, written from a function's docstring summary and signature.

The phrasing is picked by a stable hash of the function's qualified name (and the seed), so a rerun
writes the same file, while neighbouring functions still get different phrasings: a model trained on one
template learns the template, not the task.
"""

from __future__ import annotations

import ast
import hashlib
import re

MAX_SUMMARY_WORDS = 70
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_VERBS = frozenset("""
accept add adjust analyze append apply assert build calculate call cancel change check clean clear close collect
combine compare compile compute construct convert copy count create decide decode decorate delete determine
display dump emit encode ensure escape evaluate execute expand extract fetch fill filter find fix flatten format
generate get guess handle hash identify indent initialize insert install iterate join list load locate look make
map mark match merge move normalize open pack pad parse perform pick prepare print process produce put quote raise
read rebuild receive record reduce register remove rename render replace report reset resolve restore retrieve
return reverse rewrite round run save scan search select send serialize set show shuffle skip sort split start
stop store strip substitute swap take tell test tokenize transform translate truncate try turn unpack unquote
unregister unwrap update validate verify walk wrap write yield acquire ask bind cap clamp configure connect
disconnect flush invoke limit listen lock log notify override query release request seek sleep unlock wait warn
attach detach dispatch drop enter exit fold grab guard indicate inspect lookup mangle measure modify mount peek
pop post push queue refresh reload repeat reply schedule shift shorten simplify slice spawn squeeze sum tag trace
trim unbind unset upgrade use visit watch zip
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
    stems = [word] + [word[:-len(end)] + base for end, base in (("ies", "y"), ("es", ""), ("s", "")) if word.endswith(end)]
    base = next((stem for stem in stems if stem in _VERBS), None)
    if base is None:
        return None
    return f"{base} {rest}".strip(), f"{_third_person(base)} {rest}".strip()


def _argument_names(node) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
    return names + [prefix + a.arg for prefix, a in (("*", args.vararg), ("**", args.kwarg)) if a]


def _english_list(items: list[str]) -> str:
    quoted = [f"`{item}`" for item in items]
    if len(quoted) < 2:
        return quoted[0] if quoted else "no arguments"
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
