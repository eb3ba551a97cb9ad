"""Leak detection: a training pair whose prompt or code overlaps an eval case would make the eval measure
memory instead of skill, so lint quarantines it.

Overlap is measured on word n-grams (default 8, lower-cased, punctuation as tokens): for each text of
the pair (instruction, code) and each text of a case (prompt, reference solution), the share of the
shorter text's n-grams found in the other, so a pair that contains a whole case prompt, or a case that
contains a whole pair, both count. An inverted index over the cases' n-grams makes this one dictionary
lookup per n-gram of the pair.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tunelens.data.dedupe import words
from tunelens.errors import UserError


def ngrams(text: str, n: int) -> set[int]:
    """Hashed word n-grams; a text shorter than n words is one gram (so only an equal text matches it)."""
    tokens = words(text)
    if not tokens:
        return set()
    if len(tokens) < n:
        return {hash(" ".join(tokens))}
    return {hash(" ".join(tokens[i:i + n])) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class EvalText:
    """One text of an eval case to protect: the case id, which field, and the text."""

    case_id: str
    field: str
    text: str


@dataclass(frozen=True)
class Leak:
    case_id: str
    case_field: str
    pair_field: str
    overlap: float

    def message(self, n: int) -> str:
        return (f"{self.pair_field} overlaps eval case {self.case_id} ({self.case_field}): "
                f"{self.overlap:.0%} of {n}-grams shared")


class LeakIndex:
    """The eval texts' n-grams; n and threshold are checked where the user gives them (LintConfig)."""

    def __init__(self, texts: list[EvalText], n: int = 8, threshold: float = 0.5):
        self.n, self.threshold, self.texts = n, threshold, texts
        self.sizes: list[int] = []
        self.index: dict[int, list[int]] = defaultdict(list)
        for position, item in enumerate(texts):
            grams = ngrams(item.text, n)
            self.sizes.append(len(grams))
            for gram in grams:
                self.index[gram].append(position)

    def find(self, pair_texts: dict[str, str]) -> Leak | None:
        """The strongest overlap at or above the threshold between any pair text and any case text."""
        best: Leak | None = None
        for pair_field, text in pair_texts.items():
            grams = ngrams(text, self.n)
            hits = Counter(pos for gram in grams for pos in self.index.get(gram, ()))
            for position, shared in hits.items():
                overlap = shared / min(len(grams), self.sizes[position])
                if overlap >= self.threshold and (best is None or overlap > best.overlap):
                    case = self.texts[position]
                    best = Leak(case.case_id, case.field, pair_field, overlap)
        return best


def load_eval_texts(specs) -> list[EvalText]:
    """Prompts and reference solutions of the eval cases named by `specs`: bundled suite names or suite
    files (through tunelens.evaluate.suite.load_suite), or JSONL files of objects with `prompt` and optional
    `id`/`task_id` and `reference`/`canonical_solution`."""
    return [text for spec in specs for text in _load_one(str(spec))]


def _load_one(spec: str) -> list[EvalText]:
    from tunelens.evaluate.suite import load_suite  # the judge and sandbox: only when --against names a suite

    try:
        return [EvalText(str(getattr(case, "id", "")), field, value) for case in load_suite(spec)
                for field in ("prompt", "reference")
                if isinstance(value := getattr(case, field, None), str) and value.strip()]
    except Exception as err:  # any failure of the suite loader: try the plain JSONL form below
        if not Path(spec).is_file():
            raise UserError(f"--against {spec}: {err}") from None
    return _plain_jsonl(Path(spec))


def _plain_jsonl(path: Path) -> list[EvalText]:
    texts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read eval cases ({err})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(case, dict) or not isinstance(case.get("prompt"), str):
            raise UserError(f"{path}:{number}: an eval case needs a string field 'prompt'")
        case_id = str(case.get("id", case.get("task_id", f"{path.name}:{number}")))
        texts.append(EvalText(case_id, "prompt", case["prompt"]))
        reference = case.get("reference", case.get("canonical_solution"))
        if isinstance(reference, str) and reference.strip():
            texts.append(EvalText(case_id, "reference", reference))
    return texts
