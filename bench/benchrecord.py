"""What every benchmark writes with `--json PATH`: the machine and commit it ran on, its settings, and each
measured quantity as the median of its repetitions with their min and max, plus each ratio against the
baseline measured in the same run.

A benchmark collects repetitions in a `Figures` and writes them at the end:

    figures = Figures("data_mine", args)
    figures.add("baseline wall", "s", [1.2, 1.3, ...])        # one value per repetition
    figures.ratio("mine wall / baseline", "mine wall", "baseline wall")
    figures.write(args.json)                                  # no-op when --json was not given

The ratio is the median of one figure over the median of the other (both from this run); where the two
were measured in pairs (each repetition of one beside one of the other), `paired=True` also keeps the
min, median and max of the per-pair ratios. Never a best-of: a best-of hides how much the load moved
the figure, and the record is read by someone who was not there. scripts/pages.py makes docs/bench.md
from the records committed under docs/runs/bench/.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_REPEATS = 5  # a median of fewer says little on a shared machine; the default of every benchmark


def add_json_argument(parser) -> None:
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the figures (median, min, max of the repetitions; ratios) and the machine here")


KEEP_VALUES = 50  # repetitions kept in the record up to this many; beyond, their 5th and 95th percentiles


def spread(values: list[float]) -> dict:
    """Median, min and max of the repetitions, and the repetitions themselves (or, for many, percentiles)."""
    values = [float(v) for v in values]
    out = {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
    if len(values) <= KEEP_VALUES:
        return out | {"values": values}
    ordered = sorted(values)
    return out | {"p05": ordered[int(0.05 * (len(values) - 1))], "p95": ordered[int(0.95 * (len(values) - 1))]}


class Figures:
    def __init__(self, benchmark: str, args=None, **settings):
        self.benchmark = benchmark
        chosen = {k: v for k, v in vars(args).items() if k != "json"} if args is not None else {}
        self.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in {**chosen, **settings}.items()}
        self.figures: dict[str, dict] = {}
        self.ratios: dict[str, dict] = {}
        self.facts: dict[str, object] = {}
        self._values: dict[str, list[float]] = {}  # every repetition, for paired ratios

    def add(self, name: str, unit: str, values: list[float]) -> dict:
        """One measured quantity, from its repetitions (one value for a count fixed by the inputs)."""
        self._values[name] = [float(v) for v in values]
        self.figures[name] = {"unit": unit, **spread(values)}
        return self.figures[name]

    def median(self, name: str) -> float:
        return self.figures[name]["median"]

    def ratio(self, name: str, figure: str, baseline: str, paired: bool = False, target: str | None = None) -> float:
        """median(figure) / median(baseline); with `paired`, the per-repetition ratios' spread as well."""
        top, bottom = self.figures[figure], self.figures[baseline]
        value = top["median"] / bottom["median"] if bottom["median"] else math.nan
        entry = {"value": value, "figure": figure, "baseline": baseline}
        if paired:
            entry["paired"] = self.paired_spread(figure, baseline)
        if target:
            entry["target"] = target
        self.ratios[name] = entry
        return value

    def paired_spread(self, figure: str, baseline: str) -> dict | None:
        top, bottom = self._values.get(figure), self._values.get(baseline)
        if not top or not bottom or len(top) != len(bottom):
            return None
        pairs = [a / b for a, b in zip(top, bottom) if b]
        return spread(pairs) if pairs else None

    def fact(self, name: str, value) -> None:
        """Something the run found that is not a repeated measurement: a count, a recall, an agreement."""
        self.facts[name] = value

    def as_json(self) -> dict:
        return {"benchmark": self.benchmark, "record": machine_record(), "settings": self.settings,
                "load_average_end": list(os.getloadavg()), "figures": self.figures, "ratios": self.ratios,
                "facts": self.facts}

    def write(self, path: str | None) -> None:
        if not path:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.as_json(), indent=1, sort_keys=False) + "\n")
        print(f"figures written to {path}")


def machine_record() -> dict:
    """Commit (and whether the tree was dirty), command line, package versions and the machine (CPU model,
    the flags that change speed, cores, torch version and threads): tunelens' own run record."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tunelens.runtime import run_record

    record = run_record({})
    record.pop("stages", None)
    return record
