"""The copying study's measures, computed from plain strings and rows so they can be checked by hand.

Per answer, against the injected example (and the answer given with no example, against the same one):
Python 2 (the eval's check); copied name (the example's function, when the prompt asks for another name);
copied body (at least half of the example's distinctive lines verbatim: stripped, at least 8 characters, no
def, decorator, comment or docstring line, and not in the prompt's own reference answer, which the model
could reach without the example; None under 2 such lines); missed function (no function of the asked name);
bad (the eval's `bad_output`).
"""

from __future__ import annotations

import re

from tunelens.stats import mcnemar, rate

_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.M)
MIN_LINE_CHARS = 8
MIN_DISTINCTIVE_LINES = 2
BODY_SHARE = 0.5

# The study's conditions: how near the injected example is, and what is wrong with it.
LEVELS = ("nearest", "middling", "unrelated")
QUALITIES = ("clean", "python2", "wrong_function")
QUALITY_LABELS = {"clean": "clean", "python2": "Python 2", "wrong_function": "wrong function"}
BASELINE = "baseline"
SENTENCE_LEVER = "sentence after the request (lesson 2)"


MEASURES = ("python2", "name_copied", "body_copied", "missed_function", "bad")


def condition_name(level: str, quality: str) -> str:
    return f"{level}/{quality}"


def conditions() -> list[tuple[str, str]]:
    return [(level, quality) for level in LEVELS for quality in QUALITIES]


def defined_names(code: str) -> list[str]:
    """Names of the functions the text defines, in order (a regex, so unparsable code counts too)."""
    return _DEF.findall(code)


def function_name(code: str) -> str | None:
    names = defined_names(code)
    return names[0] if names else None


def _outside_docstrings(code: str) -> list[str]:
    """The code's lines that are not inside a triple-quoted string (a line-level scan: robust to code
    that does not parse, such as a Python 2 example)."""
    kept, inside = [], None
    for line in code.splitlines():
        stripped = line.strip()
        if inside is None:
            quote = next((q for q in ('"""', "'''") if q in stripped), None)
            if quote is None:
                kept.append(stripped)
            elif stripped.count(quote) == 1:
                inside = quote  # opens a multi-line string; a one-line docstring is skipped whole
        elif inside in stripped:
            inside = None
    return kept


def distinctive_lines(example_code: str, reference_code: str = "") -> list[str]:
    """The example's body lines that say something of their own (see the module docstring)."""
    reference = {line.strip() for line in reference_code.splitlines()}
    return list(dict.fromkeys(line for line in _outside_docstrings(example_code) if len(line) >= MIN_LINE_CHARS
                              and not line.startswith(("def ", "async def ", "@", "#")) and line not in reference))


def body_copied(answer: str, example_code: str, reference_code: str = "") -> bool | None:
    """Whether at least half of the example's distinctive lines appear in the answer (None: too few to tell)."""
    lines = distinctive_lines(example_code, reference_code)
    if len(lines) < MIN_DISTINCTIVE_LINES:
        return None
    answer_lines = {line.strip() for line in answer.splitlines()}
    return sum(1 for line in lines if line in answer_lines) >= BODY_SHARE * len(lines)


def name_copied(answer: str, example_code: str, asked: str | None) -> bool | None:
    """Whether the answer defines the example's function (None: it defines none, or the asked one)."""
    name = function_name(example_code)
    if name is None or name == asked:
        return None
    return name in defined_names(answer)


def missed_function(answer: str, asked: str | None) -> bool | None:
    return None if asked is None else asked not in defined_names(answer)


def copy_measures(answer: str, example_code: str, reference_code: str, python2: bool, bad: bool | None) -> dict:
    """Every measure of one answer against one example (None where undefined)."""
    asked = function_name(reference_code)
    return {"python2": python2, "name_copied": name_copied(answer, example_code, asked),
            "body_copied": body_copied(answer, example_code, reference_code),
            "missed_function": missed_function(answer, asked), "bad": bad}


def rate_of(values: list) -> dict:
    """A Wilson rate over the defined (non-None) values."""
    known = [bool(v) for v in values if v is not None]
    return rate(sum(known), len(known)).to_dict()


def paired_test(rows: list[dict], measure: str) -> dict:
    """Exact McNemar of with the example against without, where both are defined; good = no defect, so
    `base_only` counts prompts the example made worse."""
    pairs = [(not row["without"][measure], not row["with"][measure]) for row in rows
             if row["with"][measure] is not None and row["without"][measure] is not None]
    return mcnemar(pairs).to_dict()


def condition_summary(rows: list[dict]) -> dict:
    """Rates with and without the example, McNemar on bad outputs and Python 2, and the examples' similarity."""
    similarities = [row["similarity"] for row in rows]
    return {
        "n": len(rows),
        "similarity": {"mean": sum(similarities) / len(similarities) if similarities else None,
                       "min": min(similarities, default=None), "max": max(similarities, default=None)},
        "with": {m: rate_of([row["with"][m] for row in rows]) for m in MEASURES},
        "without": {m: rate_of([row["without"][m] for row in rows]) for m in MEASURES},
        "mcnemar": {m: paired_test(rows, m) for m in ("bad", "python2")},
    }
