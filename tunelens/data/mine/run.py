"""Mining end to end: plan the files, mine them (in worker processes when that pays), merge in file order.

Pairs are merged in the planned file order and duplicates removed only here, so the output does not
depend on the number of workers; `workers=1` (every file in this process, in order) is the plain
equivalent, and tests check both give the same file.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tunelens.data.dedupe import Deduplicator
from tunelens.data.mine.config import MineConfig
from tunelens.data.mine.extract import FileOutcome, mine_file
from tunelens.data.mine.sources import STDLIB, FileTask, plan_files
from tunelens.io import atomic_write_json, atomic_write_jsonl
from tunelens.runtime import Progress

CHUNK_FILES = 8  # files per task sent to a worker: enough to amortise the round trip, few enough to keep all busy
MIN_FILES_FOR_POOL = 64  # below this many files a pool costs more to start than it saves


@dataclass
class MineResult:
    """Counts reconcile: functions_seen == len(pairs) + sum(skipped.values())."""

    pairs: list[dict]
    files_scanned: int = 0  # files read (parsed, or found unreadable)
    files_unreadable: int = 0  # not Python 3 or not decodable
    files_skipped: Counter = field(default_factory=Counter)  # reason -> files (dir-*: directories) never read
    skipped_licenses: Counter = field(default_factory=Counter)  # licence -> files left out by the allowlist
    functions_seen: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> functions skipped for it
    workers: int = 1
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process and its workers, user + system
    out_path: Path | None = None
    summary_path: Path | None = None

    def by_distribution(self) -> Counter:
        return Counter(pair["source"]["distribution"] or "(none)" for pair in self.pairs)

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "files_scanned": self.files_scanned,
                "files_unreadable": self.files_unreadable, "files_skipped": dict(self.files_skipped),
                "skipped_licenses": dict(self.skipped_licenses), "functions_seen": self.functions_seen,
                "skipped": dict(self.skipped.most_common()),
                "by_distribution": dict(self.by_distribution().most_common()),
                "by_license": dict(Counter(pair["source"]["license"] for pair in self.pairs).most_common()),
                "workers": self.workers, "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3)}


def mine_pairs(sources: Iterable | None = None, config: MineConfig = MineConfig(),
               progress: Progress | None = None) -> MineResult:
    """Mine pairs (chat `messages` records with `id` and `source`) from source specs: "stdlib",
    "site-packages", or paths to source trees or .py files (default: the standard library).
    `progress("mining files", files done, files in all)` is called after each file."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    plan = plan_files(list(sources) if sources else [STDLIB], config.licenses)
    workers = _worker_count(config, len(plan.tasks))
    result = MineResult(pairs=[], files_skipped=plan.skipped, skipped_licenses=plan.skipped_licenses,
                        workers=workers)
    merger = _Merger(config, result)
    with contextlib.closing(_outcomes(plan.tasks, config, workers)) as outcomes:  # closing ends the pool
        for done, outcome in enumerate(outcomes, start=1):
            merger.add(outcome)
            if progress is not None:
                progress("mining files", done, len(plan.tasks))
            if merger.full:
                break
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = _cpu_seconds() - cpu_started  # after the pool is joined, so workers are counted
    return result


def mine_to_file(sources, out_path: str | Path, config: MineConfig = MineConfig(),
                 progress: Progress | None = None) -> MineResult:
    """Mine and write the pairs (JSONL) and, beside them, `<name>.summary.json` with the counts (atomically)."""
    result = mine_pairs(sources, config, progress)
    out_path = Path(out_path)
    atomic_write_jsonl(out_path, result.pairs)
    result.out_path = out_path
    result.summary_path = out_path.with_name(out_path.stem + ".summary.json")
    atomic_write_json(result.summary_path, {"out": str(out_path), **result.summary()})
    return result


# Workers
def _worker_count(config: MineConfig, files: int) -> int:
    if config.workers is not None:
        return config.workers
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(available, 8) if files >= MIN_FILES_FOR_POOL else 1


def _outcomes(tasks: list[FileTask], config: MineConfig, workers: int) -> Iterator[FileOutcome]:
    """Each file's outcome, in task order."""
    if workers == 1:
        yield from (mine_file(task, config) for task in tasks)
        return
    # fork where there is one: workers start with the mining modules imported, and a caller's script needs
    # no `__main__` guard. Workers only parse and return data, so no lock held at the fork is ever taken.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with context.Pool(workers) as pool:  # leaving the block (or a limit reached) ends the workers
        yield from pool.imap(functools.partial(mine_file, config=config), tasks, chunksize=CHUNK_FILES)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# Merging
class _Merger:
    """Adds each file's pairs in order, dropping what an earlier file already gave (as `data lint` would)."""

    def __init__(self, config: MineConfig, result: MineResult):
        self.config, self.result = config, result
        self.dedupe = Deduplicator(config.near_duplicate_threshold)
        self.seen_code: set[str] = set()
        self.ids: set[str] = set()

    @property
    def full(self) -> bool:
        return self.config.limit is not None and len(self.result.pairs) >= self.config.limit

    def add(self, outcome: FileOutcome) -> None:
        result = self.result
        result.files_scanned += 1
        result.files_unreadable += outcome.unreadable
        result.functions_seen += outcome.functions_seen
        result.skipped.update(outcome.skipped)
        for pair in outcome.pairs:
            reason = "over-limit" if self.full else self._duplicate(pair)
            if reason:
                result.skipped[reason] += 1
            else:
                pair["id"] = self._unique_id(pair["id"])
                result.pairs.append(pair)

    def _unique_id(self, pair_id: str) -> str:
        """A property's getter and setter share a qualified name: the later gets `#2` (lint rejects repeated ids)."""
        unique, number = pair_id, 1
        while unique in self.ids:
            number += 1
            unique = f"{pair_id}#{number}"
        self.ids.add(unique)
        return unique

    def _duplicate(self, pair: dict) -> str | None:
        """"duplicate"/"near-duplicate" when an earlier pair makes this one redundant, else register it."""
        instruction, completion = (m["content"] for m in pair["messages"])
        if completion in self.seen_code:  # the same function in two modules, whatever its phrasing
            return "duplicate"
        match, state = self.dedupe.check(instruction, completion)
        if match:
            return match.kind
        self.dedupe.add(len(self.result.pairs), state)
        self.seen_code.add(completion)
        return None
