"""`study safety --seeds K`: each seed a one-seed run of its own (with its own copy of the model, since a run
leaves adapters attached), the across-seed summary from the seed files, a rerun that resumes, K = 1 as before."""

import json

import pytest

from tunelens.io import atomic_write_json
from tunelens.runtime import RunResult
from tunelens.studies import safety as S
from tunelens.studies.replicates import numeric_leaves, seeds_summary


def _config(**overrides):
    return S.SafetyStudyConfig(**{"model": "tiny", "train_pairs": 8, "shares": (0.2, 0.5), "limit": 2, **overrides})


def test_two_seeds_run_apart_and_are_summarised_from_their_files(tmp_path, monkeypatch):
    calls, real = [], S.run_safety_study

    def one_seed(config, out_dir, progress=None, model=None, tokenizer=None):
        if config.seeds > 1:
            return real(config, out_dir, progress, model, tokenizer)
        calls.append((config.seed, config.seeds, model))
        model.append(config.seed)  # what attaching adapters does to the model: it must not reach the next seed
        summary = {"config": {"seed": config.seed}, "models": ["base", "code"], "flag": True, "label": "x",
                   "propensity": {"models": {"code": {"harmful": {"mean": config.seed / 10, "low": None}}}}}
        atomic_write_json(out_dir / "summary.json", summary)
        return RunResult(out_dir, summary, 0.0)

    monkeypatch.setattr(S, "run_safety_study", one_seed)
    base = []
    s = one_seed(_config(seeds=2, seed=5), tmp_path, model=base, tokenizer="tok")
    assert [(seed, k) for seed, k, _ in calls] == [(5, 1), (6, 1)] and base == []
    assert all(model == [seed] for seed, _, model in calls)  # each seed got a fresh copy
    assert sorted(p.name for p in tmp_path.glob("seed-*")) == ["seed-5", "seed-6"]
    cell = s.summary["across_seeds"]["propensity/models/code/harmful/mean"]
    assert cell["per_seed"] == [0.5, 0.6] and abs(cell["mean"] - 0.55) < 1e-12 and cell["low"] < 0.55 < cell["high"]
    assert "propensity/models/code/harmful/low" not in s.summary["across_seeds"]  # None in every seed
    assert "flag" not in s.summary["across_seeds"] and "config/seed" not in s.summary["across_seeds"]
    assert json.loads((tmp_path / "summary.json").read_text()) == s.summary
    again = one_seed(_config(seeds=2, seed=5), tmp_path, model=base, tokenizer="tok")
    assert len(calls) == 2 and again.summary == s.summary  # a rerun resumes: both seeds were done


def test_a_seed_missing_a_figure_leaves_it_out():
    summaries = [{"a": {"b": 1.0}, "c": 2}, {"a": {"b": 3.0}}]
    s = seeds_summary(_config(seeds=2), summaries)
    assert list(s["across_seeds"]) == ["a/b"] and s["across_seeds"]["a/b"]["mean"] == 2.0
    assert dict(numeric_leaves({"x": [1, {"y": None}], "z": False})) == {"x/0": 1.0, "x/1/y": None}


def test_one_seed_is_the_default():
    assert _config().seeds == 1 and S.SafetyStudyConfig().seeds == 1


@pytest.mark.slow
def test_two_seeds_end_to_end_on_a_tiny_model(tmp_path, one_thread):
    from test_study_safety import MODULE

    from tunelens.testing import tiny_model

    source = tmp_path / "src.py"
    source.write_text(MODULE)
    model, tokenizer = tiny_model("llama")
    config = _config(sources=(str(source),), max_new_tokens=6, resamples=200, pair_tokens=400, max_length=400, seeds=2)
    s = S.run_safety_study(config, tmp_path / "run", model=model, tokenizer=tokenizer).summary
    seeds = [json.loads((tmp_path / "run" / f"seed-{k}" / "summary.json").read_text()) for k in (0, 1)]
    assert [x["config"]["seed"] for x in seeds] == [0, 1] and all(x["models"] == seeds[0]["models"] for x in seeds)
    cell = s["across_seeds"]["propensity/models/code/harmful/mean"]
    assert cell["per_seed"] == [x["propensity"]["models"]["code"]["harmful"]["mean"] for x in seeds]
    assert not any("lora" in name for name, _ in model.named_modules())  # each seed trained on its own copy


def test_a_run_directory_from_before_seeds_resumes():
    from tunelens.config import config_to_dict
    from tunelens.studies.replicates import same_settings

    now = config_to_dict(_config())
    before = {k: v for k, v in now.items() if k != "seeds"}
    assert same_settings(before, now) and not same_settings(before, config_to_dict(_config(seeds=2)))
