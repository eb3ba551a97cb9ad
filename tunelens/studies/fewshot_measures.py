"""The copying study's measures, computed from plain strings and rows so they can be checked by hand.

Per answer, against the example that was injected (and, for comparison, on the answer the model gave
with no example, against the same example):
- **Python 2**: the answer's code has a Python 2 idiom (the eval's check, `ResultRow.python2`);
- **copied name**: the answer defines a function with the example's function name, when that name
  differs from the one the prompt asks for (when they are equal, copying cannot be told apart);
- **copied body**: of the example's *distinctive* body lines (stripped, at least 8 characters, not a
  `def`/decorator line, not inside a docstring, and not a line of the prompt's own reference answer,
  which the model could reach without the example), at least half appear verbatim (stripped) among
  the answer's lines. Undefined (None) when the example has fewer than 2 distinctive lines;
- **missed function**: the answer defines no function with the name the prompt asks for;
- **bad**: the eval's one definition of a bad output (`tunelens.evaluate.scoring.bad_output`).
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


def condition_name(level: str, quality: str) -> str:
    return f"{level}/{quality}"
MEASURES = ("python2", "name_copied", "body_copied", "missed_function", "bad")


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
    lines = []
    for line in _outside_docstrings(example_code):
        if len(line) < MIN_LINE_CHARS or line.startswith(("def ", "async def ", "@", "#")) or line in reference:
            continue
        if line not in lines:
            lines.append(line)
    return lines


def body_copied(answer: str, example_code: str, reference_code: str = "") -> bool | None:
    """Whether at least half of the example's distinctive lines appear in the answer; None when the
    example has too few distinctive lines to tell."""
    lines = distinctive_lines(example_code, reference_code)
    if len(lines) < MIN_DISTINCTIVE_LINES:
        return None
    answer_lines = {line.strip() for line in answer.splitlines()}
    return sum(1 for line in lines if line in answer_lines) >= BODY_SHARE * len(lines)


def name_copied(answer: str, example_code: str, asked: str | None) -> bool | None:
    """Whether the answer defines the example's function, which is not the one asked for; None when
    the example defines none or has the asked name."""
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


# ---------------------------------------------------------------------------------------------------
# summaries over rows: one row per (prompt, condition) with `with` and `without` measure dicts


def rate_of(values: list) -> dict:
    """A Wilson rate over the defined (non-None) values."""
    known = [bool(v) for v in values if v is not None]
    return rate(sum(known), len(known)).to_dict()


def paired_test(rows: list[dict], measure: str) -> dict:
    """Exact McNemar of "with the example" against "without", on prompts where both are defined.
    Good = the measure is False (no defect); `base_only` counts prompts the example made worse."""
    pairs = [(not row["without"][measure], not row["with"][measure]) for row in rows
             if row["with"][measure] is not None and row["without"][measure] is not None]
    return mcnemar(pairs).to_dict()


def condition_summary(rows: list[dict]) -> dict:
    """Rates with and without the example for every measure, McNemar on bad outputs and Python 2, and
    the mean similarity of the examples."""
    similarities = [row["similarity"] for row in rows]
    return {
        "n": len(rows),
        "similarity": {"mean": sum(similarities) / len(similarities) if similarities else None,
                       "min": min(similarities, default=None), "max": max(similarities, default=None)},
        "with": {m: rate_of([row["with"][m] for row in rows]) for m in MEASURES},
        "without": {m: rate_of([row["without"][m] for row in rows]) for m in MEASURES},
        "mcnemar": {m: paired_test(rows, m) for m in ("bad", "python2")},
    }
