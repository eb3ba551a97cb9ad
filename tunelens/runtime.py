"""Process-wide runtime settings changed only for a block and then restored, progress, and run records.

torch's thread count and the random generators are global to the process: a library function that sets them
and returns leaves every later caller (a test, the demo's next stage, a notebook) with its choice. So stages
take their count through `torch_threads` and seed only inside `seeded` (or use their own `torch.Generator`),
both of which put the old state back; only the CLI boundary may seed the process for good. Progress has one
shape everywhere (`Progress`): what is running, units done, units in all (0 when not yet known).
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
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
    """Run the block with `count` torch intra-op threads, then restore the previous count. None leaves the
    setting alone and does not import torch (so callers without a model stay light)."""
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
    """Run the block with torch's (CPU and CUDA), Python's and NumPy's generators seeded with `seed`, then put
    them back: reproducible, and the caller's random stream is untouched. None leaves the generators as they are."""
    if seed is None:
        yield
        return
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        # fork_rng would otherwise warn on many-GPU machines and touch CUDA even where it is unused.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)  # numpy takes 32-bit seeds only
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class StageTimer:
    """Runs a demo's or study's stages, reporting each start and end to a progress callback and keeping each
    one's wall seconds (`timings`, summary.json's `timings_s`) and CPU seconds (`cpu`, see cpu_seconds)."""

    def __init__(self, report):
        self.report = report
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.git_at_start = git_state(CHECKOUT)  # the run's code is the code when it began

    def __call__(self, name: str, func, *args):
        self.report(name, 0, 1)
        begin, begin_cpu = time.perf_counter(), cpu_seconds()
        value = func(*args)
        self.timings[name] = round(time.perf_counter() - begin, 1)
        self.cpu[name] = round(cpu_seconds() - begin_cpu, 1)
        self.report(name, 1, 1)
        return value

    def stages(self) -> dict[str, dict]:
        """Per stage, in the order run: {"wall_s", "cpu_s"}."""
        return {name: {"wall_s": wall, "cpu_s": self.cpu.get(name)} for name, wall in self.timings.items()}


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads) and by the children it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


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
    """Every invocation of a resumable run directory, oldest first: a resumed run reuses what is on disk, so
    its own time is not the run's cost; the reports state every invocation."""
    log = out / "invocations.jsonl"
    earlier = read_jsonl(log) if log.is_file() else []
    entries = earlier + [{"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": seconds,
                          "timings_s": timings}]
    atomic_write_jsonl(log, entries)
    return entries


def claim_run_dir(out: Path, marker_name: str, settings: dict, what: str,
                  same: Callable[[dict, dict], bool] = operator.eq) -> None:
    """Claim a resumable run directory for `settings` (as JSON holds them): a rerun with the same settings
    (by `same`) resumes; other settings would mix two runs' files, so they need another directory."""
    marker = out / marker_name
    if marker.is_file() and not same(json.loads(marker.read_text()), settings):
        raise UserError(f"{out} holds {what} with other settings: use another --out, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)


# ---------------------------------------------------------------------------------------------------
# Run records: what a published figure needs to be recomputed (which code, which command, which
# packages, which machine, how long each stage took), written into every run's summary.json.

CHECKOUT = Path(__file__).resolve().parent.parent  # the tree this tunelens is imported from
RECORD_PACKAGES = ("tunelens", "torch", "transformers", "peft", "accelerate", "safetensors", "numpy", "gguf",
                   "sentence-transformers", "onnxruntime", "faiss-cpu")
# The instruction sets that change CPU speed or numerics here: fp32 matmuls (avx2/avx512), bf16 (avx512_bf16,
# amx_bf16) and int8 (avx512_vnni, amx_int8) paths.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def finish_run(out: Path, summary: dict, timer: StageTimer, started: float) -> dict:
    """Add `timings_s` (wall seconds per stage), `seconds`, `invocations` (log_invocation), `record`
    (run_record) and `machine` (the record's, where older summaries' readers look) and write summary.json."""
    summary["timings_s"] = dict(timer.timings)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["invocations"] = log_invocation(out, summary["seconds"], timer.timings)
    summary["record"] = run_record(timer.stages(), git_at_start=timer.git_at_start)
    summary["machine"] = summary["record"]["machine"]
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_record(stages: dict[str, dict], argv: list[str] | None = None,
               git_at_start: tuple[str | None, bool | None] | None = None) -> dict:
    """The commit (and whether the tree was dirty) when the run began, the command line, the versions of the
    packages that decide the numbers, the machine, and wall and CPU seconds per stage. `changed_during_run`:
    the checkout's state at the end is not the start's (a module imported late may not be the commit's)."""
    import shlex
    import sys

    now = git_state(CHECKOUT)
    commit, dirty = git_at_start or now
    return {"commit": commit, "dirty": dirty, "changed_during_run": now != (commit, dirty),
            "command": shlex.join(command_words(sys.argv if argv is None else argv)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": package_versions(), "machine": machine(), "stages": stages}


def command_words(argv: list[str]) -> list[str]:
    """The command line as one would type it again: argv[0] of `python -m tunelens` (the path of __main__.py)
    and of the console script (its absolute path) become their short form."""
    if not argv:
        return []
    first = Path(argv[0])
    if first.name == "__main__.py":
        return ["python", "-m", first.parent.name, *argv[1:]]
    return [first.name if first.is_absolute() else argv[0], *argv[1:]]


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at `root`; (None, None) where it is none (an installed wheel): the
    record says it does not know rather than name a commit it did not run."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, None  # tunelens installed inside some other repository
        # Tracked files only: an untracked run directory or scratch file does not change what ran.
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def package_versions() -> dict[str, str | None]:
    """Installed version of each package in RECORD_PACKAGES (None: not installed), and Python's."""
    import platform
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: version(name) for name in RECORD_PACKAGES}}


def machine(cpuinfo: str | None = None) -> dict:
    """Cores (all, and usable by this process), CPU model and CPU_FLAGS present, torch's threads and CUDA.
    `cpuinfo` is /proc/cpuinfo's text (read here when None; empty where there is none)."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's; the others are the same part
    flags = set(fields.get("flags", "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpus": os.cpu_count(), "usable_cpus": usable,
            "cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags], "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        import torch
    except ImportError:
        return info
    return info | {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                   "cuda": torch.cuda.is_available()}
