"""Training seeds as replicates for the studies (`--seeds K`), on the model of `study lessons`.

With K = 1 a study runs in its run directory exactly as it always has. With K > 1 the run directory holds one
complete single-seed run per seed under <out>/seed-<s>/ (s = seed ... seed + K - 1: the seed redraws what the
study's seed draws, and for an adapter its data order and dropout); a seed whose summary.json is on disk is
skipped, so a rerun resumes, and <out>/summary.json is rebuilt from the seed files after every invocation.
Every number the seeds' summaries share becomes one across-seed cell: the mean of the per-seed values with its
t interval from the seeds (`tunelens.stats.across_seeds`) and the per-seed values beside it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tunelens.config import config_to_dict
from tunelens.io import atomic_write_json
from tunelens.runtime import RunResult, claim_run_dir
from tunelens.stats import across_seeds

# Per-seed bookkeeping, not figures: the run record, timings and the settings themselves.
NOT_FIGURES = frozenset({"config", "train_config", "record", "machine", "timings_s", "seconds", "invocations"})


def same_settings(on_disk: dict, now: dict) -> bool:
    """claim_run_dir's test: a run directory from before --seeds existed (no `seeds` key) was one seed."""
    return {"seeds": 1, **on_disk} == now


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def seed_list(config) -> list[int]:
    return [config.seed + index for index in range(config.seeds)]


def run_seeds(run_one: Callable[..., RunResult], config, out: Path, what: str, fresh_model=None) -> RunResult:
    """Run (or resume) every seed of `config` as a one-seed run in its own directory, then summarise.
    `fresh_model(seed)` gives each seed its model and tokenizer (None: the study loads its own)."""
    started = time.perf_counter()
    claim_run_dir(out, "study-config.json", config_to_dict(config), what)
    for seed in seed_list(config):
        where = seed_dir(out, seed)
        if (where / "summary.json").is_file():
            continue
        model, tokenizer = fresh_model(seed) if fresh_model else (None, None)
        run_one(replace(config, seeds=1, seed=seed), where, model=model, tokenizer=tokenizer)
    summary = seeds_summary(config, [json.loads((seed_dir(out, s) / "summary.json").read_text())
                                     for s in seed_list(config)])
    atomic_write_json(out / "summary.json", summary)
    return RunResult(out, summary, time.perf_counter() - started)


def seeds_summary(config, summaries: list[dict]) -> dict:
    """The across-seed summary: the settings, the seeds and their directories, and `across_seeds`, every
    figure (by its path in a seed's summary, keys joined by '/') as mean, sd, low, high, k and per_seed."""
    values: dict[str, list] = {}
    for summary in summaries:
        for path, value in numeric_leaves({k: v for k, v in summary.items() if k not in NOT_FIGURES}):
            values.setdefault(path, []).append(value)
    complete = {path: found for path, found in values.items()
                if len(found) == len(summaries) and any(v is not None for v in found)}
    return {"config": config_to_dict(config), "seeds": seed_list(config),
            "seed_dirs": [seed_dir(Path("."), s).as_posix() for s in seed_list(config)],
            "across_seeds": {path: across_seeds(found).to_dict() for path, found in sorted(complete.items())}}


def numeric_leaves(node, prefix: str = ""):
    """(path, number) for every int or float leaf of nested dicts and lists (booleans and NaN left out;
    None kept, so a seed with an undefined figure drops out of that cell's k rather than the cell)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numeric_leaves(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from numeric_leaves(value, f"{prefix}/{index}" if prefix else str(index))
    elif node is None and prefix:
        yield prefix, None
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and not math.isnan(node):
        yield prefix, float(node)


def seeds_section(summary: dict, prefixes: tuple[str, ...] = ()) -> list[str]:
    """Markdown lines for a page: each across-seed figure (those under `prefixes`, or all) as its mean with
    the seeds' 95% t interval and the per-seed values beside it. It claims no direction: a page that reads
    one off these cells goes through tunelens.reading."""
    seeds = summary["seeds"]
    lines = [(f"Across {len(seeds)} seeds ({', '.join(map(str, seeds))}; one run each under "
              f"{', '.join(summary['seed_dirs'])}): mean, 95% t interval from the seeds, and each seed's value."), "",
             "| figure | mean | 95% interval | k | per seed |", "|---|---|---|---|---|"]
    for path, cell in summary["across_seeds"].items():
        if prefixes and not path.startswith(prefixes):
            continue
        interval = "-" if cell["low"] is None else f"[{cell['low']:.3g}, {cell['high']:.3g}]"
        lines.append(f"| {path} | {cell['mean']:.3g} | {interval} | {cell['k']} | "
                     f"{', '.join(f'{v:.3g}' for v in cell['per_seed'])} |")
    return lines


def first_seed_run(run: Path, summary: dict) -> Path:
    """The directory of a multi-seed run's first seed, whose one-seed summary a page's prose is written from."""
    return run / summary["seed_dirs"][0]
