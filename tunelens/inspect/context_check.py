"""`context check`: score examples about to be injected into a prompt before the model sees them.

The copying study (tunelens.studies.fewshot) shows how an example in the context moves an answer; this check
asks, before generation, whether to trust one. Each example gets a risk in [0, 1], the largest of four:
- **lint**: its response's code does not parse or has Python 2 idioms (`tunelens.data.lint.check_response`);
- **off query**: cosine similarity of its instruction to the query (the gate's embedder), 0 at or above
  `high_similarity`, 1 at or below `low_similarity`, linear between;
- **mismatch**: its response does not implement what its instruction names: with backticked signatures
  (`name(args)`), 1 when a function name is missing from the response's words, else the share of argument
  names missing; without, the share of backticked identifiers missing (0 when none are named; a class named
  beside a method's signature is not counted);
- **unfamiliar** (with a gate only): similarity to the nearest training instruction in the gate's index, on
  the off-query ramp: an example like nothing the model was trained on comes from outside the curated data.
The context's risk is its riskiest example's, flagged at `threshold`. `check_context` is the one call (the
CLI, the study and a server's per-request option all use it).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import Example
from tunelens.retrieval.embedders import load_embedder, MINILM
from tunelens.io import read_jsonl_numbered
from tunelens.data.lint import check_response

_BACKTICKED = re.compile(r"`([^`\n]+)`")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_SIGNATURE = re.compile(r"\s*(?:async\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@configclass
class ContextCheckConfig:
    """Options of `context check`: each field is one of its flags and a key of its --config file."""

    threshold: float = option(0.5, "Risk at or above which the context is flagged as untrusted.", min=0.0, max=1.0)
    low_similarity: float = option(0.1, "Cosine similarity (example instruction to query, or to the gate's "
                                        "nearest training instruction) at or below which that risk is 1.",
                                   min=-1.0, max=1.0)
    high_similarity: float = option(0.3, "Cosine similarity at or above which that risk is 0 (linear between).",
                                    min=-1.0, max=1.0)
    embedder: str = option(MINILM, "Embedder of the similarities when no gate is given (a gate uses its own).")

    def validate(self) -> None:
        if self.high_similarity <= self.low_similarity:
            raise UserError("context check: high_similarity must be above low_similarity")


@dataclass(frozen=True)
class ExampleVerdict:
    """One example's signals, its risk per reason, and its risk (the largest of them)."""

    id: str
    lint_findings: tuple[str, ...]  # the checker's codes, e.g. py2-print, syntax-error
    similarity: float  # its instruction to the query
    named_missing: tuple[str, ...]  # identifiers the instruction names that the response never mentions
    named_total: int
    training_similarity: float | None  # to the gate's nearest training instruction; None without a gate
    risks: dict[str, float]
    risk: float

    @property
    def main_reason(self) -> str:
        return max(self.risks, key=lambda name: self.risks[name])


@dataclass(frozen=True)
class ContextVerdict:
    """The whole context: its risk (its riskiest example's), the threshold and whether it is flagged."""

    query: str
    examples: tuple[ExampleVerdict, ...]
    risk: float
    threshold: float
    flagged: bool
    query_signals: dict = field(default_factory=dict)  # the gate's retrieval signals of the query itself

    def to_dict(self) -> dict:
        data = asdict(self)
        for item, verdict in zip(data["examples"], self.examples):
            item["main_reason"] = verdict.main_reason
        return data


def ramp_risk(similarity: float, low: float, high: float) -> float:
    """1 at or below `low`, 0 at or above `high`, linear between."""
    return min(1.0, max(0.0, (high - similarity) / (high - low)))


def lint_findings(response: str) -> tuple[str, ...]:
    """The codes of the data checker's findings on the response's code (prose has none)."""
    return tuple(sorted({finding.code for finding in check_response(response)}))


def named_identifiers(instruction: str) -> tuple[list[str], list[str]]:
    """(functions, other names) the instruction names in backticks: `parse(text)` names the function parse and
    the argument text. With no signature, every backticked identifier is an other name."""
    functions: list[str] = []
    others: list[str] = []
    quoted = _BACKTICKED.findall(instruction)
    signatures = [q for q in quoted if _SIGNATURE.match(q)]
    for text in signatures or quoted:
        match = _SIGNATURE.match(text)
        if match and match.group(1) not in functions:
            functions.append(match.group(1))
        rest = _STRING.sub(" ", text[match.end(1):] if match else text)  # a default's text names nothing
        others += [name for name in _IDENTIFIER.findall(rest) if name not in others and name not in functions]
    return functions, others


def mismatch_risk(instruction: str, response: str) -> tuple[float, list[str], int]:
    """(risk, named identifiers absent from the response's words, how many were named)."""
    functions, others = named_identifiers(instruction)
    words = set(_IDENTIFIER.findall(response))
    missing = [name for name in functions + others if name not in words]
    named = len(functions) + len(others)
    if any(name in missing for name in functions):
        return 1.0, missing, named
    return (sum(1 for name in others if name in missing) / len(others) if others else 0.0), missing, named


def check_context(query: str, examples: Sequence[Example], config: ContextCheckConfig = ContextCheckConfig(),
                  gate=None, embedder=None) -> ContextVerdict:
    """Score `examples` as context for `query` before generation. `gate` (a tunelens.gate.Gate) adds its
    retrieval signals and lends its embedder; `embedder` overrides both (tests pass a cheap one)."""
    import numpy as np

    if not examples:
        return ContextVerdict(query, (), 0.0, config.threshold, False)
    if embedder is None:
        embedder = gate.embedder if gate is not None else load_embedder(config.embedder)
    vectors = embedder.encode([query] + [example.instruction for example in examples])
    similarities = (vectors[1:] @ vectors[0]).astype(float)
    training, query_signals = _gate_signals(gate, query, examples)
    verdicts = tuple(_verdict(example, float(sim), known, config)
                     for example, sim, known in zip(examples, np.atleast_1d(similarities), training))
    risk = max(verdict.risk for verdict in verdicts)
    return ContextVerdict(query, verdicts, risk, config.threshold, risk >= config.threshold, query_signals)


def _gate_signals(gate, query: str, examples: Sequence[Example]) -> tuple[list[float | None], dict]:
    """Each example instruction's similarity to the nearest training instruction, and the query's signals."""
    if gate is None:
        return [None] * len(examples), {}
    found = gate.retrieval_signals([query] + [example.instruction for example in examples])
    return [item.max_similarity for item in found[1:]], found[0].scores()


def _verdict(example: Example, similarity: float, training: float | None,
             config: ContextCheckConfig) -> ExampleVerdict:
    findings = lint_findings(example.response)
    mismatch, missing, named = mismatch_risk(example.instruction, example.response)
    risks = {"lint": 1.0 if findings else 0.0,
             "off_query": ramp_risk(similarity, config.low_similarity, config.high_similarity),
             "mismatch": mismatch}
    if training is not None:
        risks["unfamiliar"] = ramp_risk(training, config.low_similarity, config.high_similarity)
    return ExampleVerdict(example.id, findings, round(similarity, 6), tuple(missing), named,
                          None if training is None else round(training, 6), risks, max(risks.values()))


def read_examples(path: str | Path) -> list[Example]:
    """Examples from a JSONL file of {"instruction", "response"} (optionally id, similarity) or chat records
    ({"messages": [user, ..., assistant]}); errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"examples file not found: {path}")
    examples = [_example_of(record, f"{path}:{number}", number) for number, record in read_jsonl_numbered(path)]
    if not examples:
        raise UserError(f"{path}: no examples in it")
    return examples


def _example_of(record, where: str, number: int) -> Example:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise UserError(f"{where}: field 'messages' must be a list of objects")
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        answers = [m.get("content") for m in messages if m.get("role") == "assistant"]
        if not users or not answers:
            raise UserError(f"{where}: field 'messages' needs a user and an assistant message")
        record = {"instruction": users[0], "response": answers[-1], "id": record.get("id", "")}
    for name in ("instruction", "response"):
        if not isinstance(record.get(name), str) or not record[name].strip():
            raise UserError(f"{where}: field {name!r} is missing or not a non-empty string")
    similarity = record.get("similarity")
    if similarity is not None and not isinstance(similarity, (int, float)):
        raise UserError(f"{where}: field 'similarity' must be a number")
    return Example(record["instruction"], record["response"], str(record.get("id") or f"line-{number}"), similarity)
