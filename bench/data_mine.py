"""Benchmark of `data mine`: pairs, wall and CPU seconds, in-process against a worker pool, and against
the least any AST-based miner must do (read and `ast.parse` every planned file, in this process).

    python bench/data_mine.py [--source stdlib,site-packages] [--workers 2] [--repeat 5] [--json PATH]

Figures are medians of --repeat runs (min and max beside them), printed as ratios against that baseline,
measured in the same run on the same files. On a
shared machine wall seconds depend on the load; CPU seconds (this process and its workers, user + system)
show the cost itself.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402
from tunelens.data.mine import MineConfig, mine_pairs  # noqa: E402
from tunelens.data.mine.extract import _gc_paused  # noqa: E402
from tunelens.data.mine.sources import plan_files  # noqa: E402


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def parse_baseline(specs: list[str]) -> tuple[float, float, int, float]:
    """(wall, CPU, files, MB): read and parse every file the miner would read, nothing else."""
    tasks = plan_files(specs, ("any",)).tasks
    wall, cpu, size = time.perf_counter(), cpu_seconds(), 0
    with _gc_paused(), warnings.catch_warnings():  # the miner parses with the collector paused too
        warnings.simplefilter("ignore")
        for task in tasks:
            data = Path(task.path).read_bytes()
            size += len(data)
            try:
                ast.parse(data)
            except (SyntaxError, ValueError):
                pass
    return time.perf_counter() - wall, cpu_seconds() - cpu, len(tasks), size / 1e6


def mine(specs: list[str], workers: int) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = mine_pairs(specs, MineConfig(workers=workers))
    return time.perf_counter() - wall, cpu_seconds() - cpu, len(result.pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="stdlib,site-packages")
    parser.add_argument("--workers", type=int, default=2, help="pool size compared with in-process mining")
    parser.add_argument("--repeat", type=int, default=MIN_REPEATS, help="runs of each; medians are printed")
    add_json_argument(parser)
    args = parser.parse_args()
    specs = [s for s in args.source.split(",") if s]
    figures = Figures("data_mine", args)

    base = [parse_baseline(specs) for _ in range(args.repeat)]
    base_wall = figures.add("baseline wall", "s", [b[0] for b in base])
    base_cpu = figures.add("baseline CPU", "s", [b[1] for b in base])
    figures.fact("files", base[0][2])
    figures.fact("MB", round(base[0][3], 1))
    print(f"baseline, read + ast.parse only: {base[0][2]} files, {base[0][3]:.0f} MB, "
          f"{base_wall['median']:.1f} s wall [{base_wall['min']:.1f}, {base_wall['max']:.1f}], "
          f"{base_cpu['median']:.1f} s CPU")
    for workers in (1, args.workers):
        # Alternating with the baseline would double the run; each path's repetitions run back to back.
        runs = [mine(specs, workers) for _ in range(args.repeat)]
        name = f"mine {workers} worker(s)"
        wall = figures.add(f"{name} wall", "s", [r[0] for r in runs])
        cpu = figures.add(f"{name} CPU", "s", [r[1] for r in runs])
        figures.fact(f"{name} pairs", runs[0][2])
        wall_ratio = figures.ratio(f"{name} wall / baseline", f"{name} wall", "baseline wall")
        cpu_ratio = figures.ratio(f"{name} CPU / baseline", f"{name} CPU", "baseline CPU")
        print(f"mine, {workers} worker(s): {runs[0][2]} pairs, {wall['median']:.1f} s wall [{wall['min']:.1f}, "
              f"{wall['max']:.1f}] ({wall_ratio:.2f}x the baseline), {cpu['median']:.1f} s CPU ({cpu_ratio:.2f}x)")
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    figures.write(args.json)


if __name__ == "__main__":
    main()
