"""Process-wide runtime settings, changed only for the length of a block and then restored.

torch's intra-op thread count is global to the process: a library function that sets it and returns
leaves every later caller (a test, the demo's next stage, a notebook) running with its choice. Stages
that want their own count take it through `torch_threads`, which puts the previous value back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


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
