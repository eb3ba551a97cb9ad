"""What every benchmark's --json writes (bench/benchrecord.py): medians of the repetitions with min and max,
never a best-of, ratios of medians measured in the same run, and the machine and commit."""

import json
import sys
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import benchrecord  # noqa: E402


def test_a_figure_is_the_median_with_min_and_max_not_the_best():
    figure = benchrecord.spread([3.0, 1.0, 10.0, 2.0, 4.0])
    assert (figure["median"], figure["min"], figure["max"], figure["n"]) == (3.0, 1.0, 10.0, 5)
    assert figure["values"] == [3.0, 1.0, 10.0, 2.0, 4.0]


def test_many_repetitions_keep_percentiles_instead_of_every_value():
    figure = benchrecord.spread([float(v) for v in range(101)])
    assert figure["median"] == 50.0 and "values" not in figure
    assert (figure["p05"], figure["p95"]) == (5.0, 95.0)


def test_a_ratio_is_of_medians_and_keeps_the_spread_of_the_pairs():
    figures = benchrecord.Figures("x", Namespace(json="out.json", size=3))
    figures.add("new", "s", [1.0, 2.0, 3.0, 4.0, 10.0])
    figures.add("old", "s", [2.0, 2.0, 4.0, 8.0, 5.0])
    assert figures.ratio("new / old", "new", "old", paired=True, target="<= 1") == 3.0 / 4.0
    paired = figures.ratios["new / old"]["paired"]
    # per pair: 0.5, 1, 0.75, 0.5, 2
    assert (paired["median"], paired["min"], paired["max"]) == (0.75, 0.5, 2.0)
    assert figures.ratios["new / old"]["target"] == "<= 1"
    assert figures.settings == {"size": 3}  # the output path is not a setting


def test_the_json_names_the_machine_commit_and_command(tmp_path):
    figures = benchrecord.Figures("x")
    figures.add("t", "s", [1.0] * 5)
    figures.fact("rows", 7)
    figures.write(str(tmp_path / "deep" / "x.json"))
    written = json.loads((tmp_path / "deep" / "x.json").read_text())
    assert written["benchmark"] == "x" and written["facts"] == {"rows": 7}
    record = written["record"]
    assert {"commit", "dirty", "command", "versions", "machine"} <= set(record)
    assert {"cpu_model", "cpus", "usable_cpus", "cpu_flags"} <= set(record["machine"])
    assert "torch" in record["versions"]


def test_no_json_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    benchrecord.Figures("x").write(None)
    assert list(tmp_path.iterdir()) == []


def test_every_benchmark_takes_json_and_repeats_at_least_five_times_by_default():
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name in ("smoke.py", "benchrecord.py"):
            continue
        text = path.read_text()
        assert "add_json_argument(parser)" in text, path.name
        assert "best-of" not in text.replace("never a best-of", "").replace("Never a best-of", ""), path.name
        # every repetition count defaults to MIN_REPEATS (cache_dtype's figures are exact: nothing to repeat)
        assert "MIN_REPEATS" in text or path.name == "cache_dtype.py", path.name
    assert benchrecord.MIN_REPEATS >= 5
