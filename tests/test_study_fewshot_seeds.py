"""`study few-shot --seeds K`: one run per seed in its own directory, the across-seed summary built from the
seed files (mean of their values, t interval, per-seed values), a rerun that resumes, and K = 1 unchanged."""

import json
from dataclasses import replace

from test_study_fewshot import _config, _sources

from tunelens.stats import across_seeds
from tunelens.studies import fewshot as F
from tunelens.studies.replicates import numeric_leaves


def test_two_seeds_two_directories_means_of_the_seed_files_and_resume(tmp_path, tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    config = replace(_config(_sources(tmp_path)), seeds=2, seed=3)
    out = tmp_path / "run"
    s = F.run_fewshot_study(config, out, model, tokenizer).summary
    assert sorted(p.name for p in out.glob("seed-*")) == ["seed-3", "seed-4"] and s["seeds"] == [3, 4]
    assert json.loads((out / "summary.json").read_text()) == s
    per_seed = [dict(numeric_leaves(json.loads((out / f"seed-{seed}" / "summary.json").read_text())))
                for seed in (3, 4)]
    assert per_seed[0]["config/seed"] == 3 and per_seed[1]["config/seed"] == 4
    path = "baseline/bad/rate"
    cell = s["across_seeds"][path]
    assert cell["per_seed"] == [per_seed[0][path], per_seed[1][path]] and cell["k"] == 2
    assert cell["mean"] == across_seeds([per_seed[0][path], per_seed[1][path]]).mean
    assert abs(cell["mean"] - (per_seed[0][path] + per_seed[1][path]) / 2) < 1e-12
    # A rerun finds both seeds finished and trains or answers nothing again.
    stamp = (out / "seed-4" / "answers.jsonl").stat().st_mtime_ns
    again = F.run_fewshot_study(config, out, model, tokenizer).summary
    assert (out / "seed-4" / "answers.jsonl").stat().st_mtime_ns == stamp and again == s


def test_one_seed_is_the_run_of_old(tmp_path, tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    out = tmp_path / "run"
    s = F.run_fewshot_study(_config(_sources(tmp_path)), out, model, tokenizer).summary
    assert not list(out.glob("seed-*")) and "across_seeds" not in s and s["prompts"] == 3
