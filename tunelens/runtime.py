"""Process-wide runtime settings, changed only for the length of a block and then restored.

torch's intra-op thread count is global to the process: a library function that sets it and returns
leaves every later caller (a test, the demo's next stage, a notebook) running with its choice. Stages
that want their own count take it through `torch_threads`, which puts the previous value back. The same
holds for the random number generators: library code seeds them only inside `seeded`, which restores
them, or uses its own `torch.Generator`; only the CLI boundary may seed the process for good.

Progress is reported in one shape everywhere (`Progress`): what is running, how many of its units are
done, and how many there are in all (0 when not yet known).
"""

from __future__ import annotations

import contextlib
import json
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tunelens.errors import UserError
from tunelens.io import atomic_write_json, atomic_write_jsonl, read_jsonl

Progress = Callable[[str, int, int], None]  # (what is running, done, total; total 0 while unknown)


def no_progress(what: str, done: int, total: int) -> None:
    """The progress callback of a caller that shows none."""


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the previous count.

    None leaves the setting alone and does not import torch (so callers without a model stay light)."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's (CPU and CUDA), Python's and NumPy's global generators seeded with
    `seed`, then put all of them back as they were: a seeded call is reproducible and leaves its caller's
    random stream untouched. None runs the block on the generators as they are."""
    if seed is None:
        yield
        return
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)  # numpy takes 32-bit seeds only
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _cuda_devices() -> list[int]:
    # fork_rng would otherwise warn on many-GPU machines and touch CUDA even where it is unused.
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


class StageTimer:
    """Runs the stages of a demo or a study, reporting each one's start and end to a progress callback
    (what, done, total) and keeping its wall time in seconds, for summary.json's `timings_s`."""

    def __init__(self, report):
        self.report = report
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, func, *args):
        import time

        self.report(name, 0, 1)
        begin = time.perf_counter()
        value = func(*args)
        self.timings[name] = round(time.perf_counter() - begin, 1)
        self.report(name, 1, 1)
        return value


@dataclass
class RunResult:
    """What a demo or a study returns: its run directory, the summary it wrote there, and its time."""

    out_dir: Path
    summary: dict
    seconds: float

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


def log_invocation(out: Path, seconds: float, timings: dict) -> list[dict]:
    """Every invocation of a resumable run directory (demo, study), oldest first: a resumed run reuses what
    is on disk, so its own time is not the run's cost; the reports state every invocation."""
    log = out / "invocations.jsonl"
    earlier = read_jsonl(log) if log.is_file() else []
    entries = earlier + [{"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": seconds,
                          "timings_s": timings}]
    atomic_write_jsonl(log, entries)
    return entries


def claim_run_dir(out: Path, marker_name: str, settings: dict, what: str,
                  same: Callable[[dict, dict], bool] = operator.eq) -> None:
    """Claim a resumable run directory (demo, study) for `settings` (as JSON holds them: tuples as lists).
    A rerun with the same settings resumes and reuses what is on disk; other settings would mix two runs'
    files, so they need another directory. `same` compares the saved settings with these."""
    marker = out / marker_name
    if marker.is_file() and not same(json.loads(marker.read_text()), settings):
        raise UserError(f"{out} holds {what} with other settings: use another --out, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)
