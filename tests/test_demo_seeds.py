"""Training seeds as replicates (`--seeds K`): the across-seed mean and t interval by hand, the replicate
adapters' names, data and training seeds, and that one seed plans exactly what the demo did before."""

import json
import math
from dataclasses import replace

import pytest

from tunelens.demo import DemoConfig, quick
from tunelens.demo.config import seed_adapter
from tunelens.demo.data import DemoData
from tunelens.demo import runs
from tunelens.errors import UserError
from tunelens.stats import across_seeds, t_central_mass, t_quantile
from tunelens.data.records import pair_to_record


def test_t_quantile_matches_the_closed_forms():
    # df 1 is the Cauchy: P(|T| <= t) = (2 / pi) atan(t), so t = tan(0.95 pi / 2)
    assert t_quantile(0.95, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    # df 2: P(|T| <= t) = t / sqrt(2 + t^2), so t = sqrt(2 a^2 / (1 - a^2)) with a = 0.95
    assert t_quantile(0.95, 2) == pytest.approx(math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2)), rel=1e-9)
    assert t_central_mass(1.0, 2) == pytest.approx(1 / math.sqrt(3))
    # printed tables (three decimals), and the normal limit
    for df, table in ((3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert round(t_quantile(0.95, df), 3) == table
    assert t_quantile(0.95, 5000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t_central_mass(1.0, 0)


def test_across_seeds_by_hand():
    # 0.5, 0.25, 0.75, 0.5: mean 0.5; squared deviations 0, 1/16, 1/16, 0 -> SD sqrt((1/8) / 3) = 0.2041;
    # half-width t(0.975, 3) 3.1824 x 0.2041 / 2 = 0.3248
    cell = across_seeds([0.5, 0.25, 0.75, 0.5])
    assert cell.k == 4 and cell.mean == 0.5 and cell.sd == pytest.approx(math.sqrt(1 / 24))
    assert (cell.low, cell.high) == (pytest.approx(0.5 - 0.32481, abs=1e-5), pytest.approx(0.5 + 0.32481, abs=1e-5))
    assert cell.per_seed == (0.5, 0.25, 0.75, 0.5)
    # two seeds: df 1, t 12.706: 0.75 and 0.5 -> SD 0.25 / sqrt(2); half-width 12.706 x 0.125 = 1.588
    two = across_seeds([0.75, 0.5])
    assert two.low == pytest.approx(0.625 - 1.58828, abs=1e-5) and two.high == pytest.approx(0.625 + 1.58828, abs=1e-5)


def test_across_seeds_with_one_seed_none_or_none_at_all():
    one = across_seeds([0.3])
    assert (one.k, one.mean, one.sd, one.low, one.high) == (1, 0.3, None, None, None)
    dropped = across_seeds([0.2, None, 0.4])  # a seed whose answers never printed: no rate, and k says so
    assert dropped.k == 2 and dropped.mean == pytest.approx(0.3) and dropped.per_seed == (0.2, 0.4)
    assert across_seeds([]).to_dict() == {"k": 0, "mean": None, "sd": None, "low": None, "high": None,
                                          "per_seed": []}
    with pytest.raises(ValueError, match="NaN"):
        across_seeds([0.1, float("nan")])


def test_seed_adapter_names():
    assert seed_adapter("A30", 0) == "A30" and seed_adapter("A30", 2) == "A30-s2"
    with pytest.raises(ValueError):
        seed_adapter("B", -1)
    assert DemoConfig().seeds == 1
    with pytest.raises(UserError):
        DemoConfig(seeds=0)


def _plan(config):
    data = DemoData(heldout=["Write a function that adds two numbers."])
    return [(adapter, name, len(cases), samples) for adapter, name, cases, samples in runs.eval_plan(config, data)]


def test_one_seed_plans_what_the_demo_did_and_k_seeds_add_the_replicates():
    config = quick()
    one = _plan(config)
    assert [row[0] for row in one if row[1] == "heldout"] == ["A30", "B"]
    three = _plan(replace(config, seeds=3))
    assert three[: len(one)] == one  # the first seed's plan is unchanged, replicates come after it
    assert [row[0] for row in three[len(one):]] == ["A30-s1", "B-s1", "A30-s2", "B-s2"]
    assert all(row[1] == "heldout" for row in three[len(one):])


def _mined(tmp_path, count=20):
    records = []
    for i in range(count):
        code = (f"def greet_{i}(name):\n    \"\"\"Greet name, {i} times.\"\"\"\n    for _ in range({i + 1}):\n"
                f"        print('hello', name)\n    return {i}\n")
        records.append(pair_to_record(f"Write greet_{i}(name), which prints hello to name {i + 1} times.", code,
                                      id=f"p{i:02d}"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _contaminated_ids(path):
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if "contamination" in line}


def test_replicate_data_redraws_the_contamination_on_the_same_pairs(tmp_path):
    _mined(tmp_path)
    config = replace(quick(), contamination_rates=(0.3,), pushback_shares=(0.3,))
    first, counts = runs.replicate_training(config, tmp_path, 1)
    second, _ = runs.replicate_training(config, tmp_path, 2)
    assert set(first) == {"A30-s1", "B-s1", "C30-s1"} and set(second) == {"A30-s2", "B-s2", "C30-s2"}
    assert first["A30-s1"].parent.name == "seed-1" and second["A30-s2"].parent.name == "seed-2"
    assert counts["A30-s1"]["contaminated"] == 6  # round(0.3 x 20), whatever the seed
    assert len(_contaminated_ids(first["A30-s1"])) == len(_contaminated_ids(second["A30-s2"])) == 6
    assert _contaminated_ids(first["A30-s1"]) != _contaminated_ids(second["A30-s2"])  # another draw
    assert counts["B-s1"]["kept"] == 14 and counts["B-s1"]["caught"] == 6  # lint removes this seed's six
    again, _ = runs.replicate_training(config, tmp_path, 1)  # a rerun writes the same bytes: adapters resume
    assert again["A30-s1"].read_bytes() == first["A30-s1"].read_bytes()


def test_every_setting_is_trained_with_each_seed_into_its_own_directory(tmp_path, monkeypatch):
    _mined(tmp_path)
    config = replace(quick(), contamination_rates=(0.3,), pushback_shares=(), seed=7, seeds=3)
    data = DemoData(training={"A30": tmp_path / "a.jsonl", "B": tmp_path / "b.jsonl"})
    trained, attached = [], []
    monkeypatch.setattr(runs, "_train_one", lambda cfg, path, directory, name, model, *_: trained.append(
        (name, cfg.seed, directory.name, path.name)) or model)
    monkeypatch.setattr("tunelens.demo.runs.attach_adapter", lambda model, path, adapter_name: attached.append(
        adapter_name) or model)
    runs.train_adapters(config, tmp_path, data, object(), None, lambda *_: None)
    assert [(name, seed, directory) for name, seed, directory, _ in trained] == [
        ("A30", 7, "A30"), ("B", 7, "B"), ("A30-s1", 8, "A30-s1"), ("B-s1", 8, "B-s1"),
        ("A30-s2", 9, "A30-s2"), ("B-s2", 9, "B-s2")]
    assert trained[2][3] == "contaminated-A30.jsonl" and attached == [name for name, *_ in trained]


def test_across_seed_metric_reads_every_seed_of_a_setting():
    config = replace(quick(), seeds=2)
    evals = runs.EvalRows({("A30", "heldout"): [1, 0, 1, 1], ("A30-s1", "heldout"): [0, 0, 1, 1]})
    cell = runs.across_seed_metric(config, evals, "A30", "heldout", lambda rows: sum(rows) / len(rows))
    assert cell["adapters"] == ["A30", "A30-s1"] and cell["per_seed"] == [0.75, 0.5]
    assert cell["mean"] == 0.625 and cell["low"] == pytest.approx(0.625 - 1.58828, abs=1e-5)
    with pytest.raises(UserError, match="B-s1"):
        runs.across_seed_metric(config, runs.EvalRows({("B", "heldout"): [1]}), "B", "heldout", len)


@pytest.mark.slow
def test_the_demo_trains_and_answers_with_every_seed(tmp_path):
    """The whole demo on a tiny model with two seeds: the second seed's adapters exist beside the first's,
    answered the held-out prompts, and lesson 1's rate reads over both."""
    from tunelens.demo.run import run_demo
    from tunelens.demo.lesson1 import metric_rate
    from tunelens.evaluate.results import read_result_rows
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("gemma3")
    model.save_pretrained(tmp_path / "gemma3")
    tokenizer.save_pretrained(tmp_path / "gemma3")
    config = DemoConfig(model=str(tmp_path / "gemma3"), mine_sources=("stdlib",), train_pairs=12, heldout=5,
                        contamination_rates=(0.3,), pushback_shares=(0.3,), pushback_cases=2, code_cases=2,
                        off_topic=5, humaneval_cases=2, epochs=1, samples=1, pair_tokens=360, max_length=480,
                        max_new_tokens=8, trace_prompts=4, seeds=2)
    out = tmp_path / "demo"
    run_demo(config, out)
    for name in ("A30", "B", "C30", "A30-s1", "B-s1", "C30-s1"):
        record = json.loads((out / "adapters" / name / "tunelens.json").read_text())
        assert record["config"]["seed"] == (1 if name.endswith("-s1") else 0)
    evals = runs.EvalRows({(name, "heldout"): read_result_rows(out / "eval" / f"heldout-{name}" / "results.jsonl")
                           for name in ("A30", "A30-s1")})
    cell = runs.across_seed_metric(config, evals, "A30", "heldout",
                                   lambda rows: metric_rate(rows, "python2", "tuned", "sampled")["rate"])
    assert cell["adapters"] == ["A30", "A30-s1"] and len(cell["per_seed"]) == 2


def test_cluster_bootstrap_resamples_whole_prompts():
    from tunelens.stats import bootstrap_mean, cluster_bootstrap_mean

    values = [0.3, -0.1, 0.8, 0.2, 0.5]
    # every value its own cluster: exactly the item bootstrap, draw for draw
    assert cluster_bootstrap_mean(values, range(5), seed=3) == bootstrap_mean(values, seed=3)
    # two prompts, [0, 0] and [1, 1, 1, 1]: a resample is AA (mean 0, p 1/4), AB or BA (4/6, p 1/2) or BB
    # (1, p 1/4), so the 95% interval is [0, 1]; the six points resampled one by one give a narrower one
    clustered = cluster_bootstrap_mean([0, 0, 1, 1, 1, 1], "aabbbb")
    assert clustered.mean == pytest.approx(4 / 6) and (clustered.low, clustered.high) == (0.0, 1.0)
    naive = bootstrap_mean([0, 0, 1, 1, 1, 1])
    assert naive.high - naive.low < clustered.high - clustered.low
    with pytest.raises(ValueError, match="2 values but 3"):
        cluster_bootstrap_mean([1, 2], "abc")
