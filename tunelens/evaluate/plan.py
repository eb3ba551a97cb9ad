"""What an eval run must produce, in a fixed order, and what a resumed run can skip.

Work is cut into batches in a fixed order before anything is skipped, and each sampled batch's seed
depends only on its position, so a run that is stopped and started again writes exactly the lines an
uninterrupted run would have written, without generating any answer twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tunelens.errors import UserError
from tunelens.evaluate.results import GREEDY, RESULTS_SCHEMA, SAMPLED
from tunelens.engine.generate import SamplingConfig
from tunelens.io import atomic_write_json
from tunelens.evaluate.suite import load_suites

RUN_INFO = "run.json"
# Settings added to the run identity after run.json files were first written: what their absence meant.
IDENTITY_DEFAULTS = {"few_shot": 0, "few_shot_index": None}


@dataclass(frozen=True)
class WorkItem:
    """One answer to produce: a case, the role that answers it, and how it is decoded."""

    case: object  # tunelens.evaluate.suite.Case
    model: str
    decoding: str
    sample: int

    @property
    def key(self) -> tuple:
        """The key of the result row this item becomes (ResultRow.key)."""
        return (self.case.suite, self.case.id, self.model, self.decoding, self.sample)


Batch = tuple[SamplingConfig, list[WorkItem]]


def load_cases(suites: Iterable[str]) -> list:
    return list(load_suites(",".join(suites)))


def limit_cases(cases: list, limit: int | None) -> list:
    """The first `limit` cases of each suite, in file order."""
    if limit is None:
        return list(cases)
    kept, seen = [], {}
    for case in cases:
        seen[case.suite] = seen.get(case.suite, 0) + 1
        if seen[case.suite] <= limit:
            kept.append(case)
    return kept


def plan_batches(cases: list, roles: tuple[str, ...], config) -> list[Batch]:
    """Every answer to produce, in a fixed order and cut into batches of one role and decoding.

    Sampled batch i gets seed config.seed + i for base and tuned alike (common random numbers make
    the paired comparison less noisy). `config` is an EvalConfig."""
    greedy = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=0.0)
    plan = []
    for role in roles:
        items = [WorkItem(case, role, GREEDY, 0) for case in cases]
        plan += [(greedy, chunk) for chunk in _chunks(items, config.batch_size)]
        sampled = [WorkItem(case, role, SAMPLED, s) for case in cases for s in range(config.samples)]
        for index, chunk in enumerate(_chunks(sampled, config.batch_size)):
            seed = (config.seed + index) % (2 ** 31)
            plan.append((SamplingConfig(config.max_new_tokens, config.temperature, config.top_p, seed), chunk))
    return plan


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class Resume:
    """The planned batches set against the answers results.jsonl already holds."""

    batches: list[Batch]
    done: frozenset[tuple]  # keys of the rows already written

    @property
    def wanted(self) -> set[tuple]:
        """The keys this run covers (its summary is over exactly these)."""
        return {item.key for _, batch in self.batches for item in batch}

    @property
    def total(self) -> int:
        return sum(len(batch) for _, batch in self.batches)

    @property
    def reused(self) -> int:
        return len(self.wanted & self.done)

    def pending(self) -> Iterator[tuple[SamplingConfig, list[WorkItem], list[WorkItem]]]:
        """(sampling, whole batch, its items still missing) for every batch with something missing.
        The whole batch is regenerated, so a half-written batch gets the answers it would have had."""
        for sampling, batch in self.batches:
            missing = [item for item in batch if item.key not in self.done]
            if missing:
                yield sampling, batch, missing


def check_run_identity(out_dir: Path, identity: dict) -> None:
    """Record the run's settings in run.json, or refuse when the directory holds another run's results
    (other settings, or another results schema: lines of two schemas never share a file)."""
    path = out_dir / RUN_INFO
    if not path.is_file():
        atomic_write_json(path, {**identity, "results_schema": RESULTS_SCHEMA})
        return
    recorded = json.loads(path.read_text())
    schema = recorded.get("results_schema", 1)  # run.json files written before the field existed
    if schema != RESULTS_SCHEMA:
        raise UserError(f"{out_dir} holds results of schema {schema}; this tunelens writes schema {RESULTS_SCHEMA}: "
                        "use another --out directory")
    recorded = {**IDENTITY_DEFAULTS, **recorded}
    differs = {k: (recorded.get(k), v) for k, v in identity.items() if recorded.get(k) != v}
    if differs:
        detail = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in differs.items())
        raise UserError(f"{out_dir} holds results made with other settings ({detail}); "
                        "use another --out directory, or delete it to start over")
