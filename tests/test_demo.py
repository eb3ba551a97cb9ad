"""The demo end to end on a tiny random model saved to disk: every stage runs for real (mining,
contamination at two rates, lint, pushback, four trainings, mixed-adapter eval, levers, propensity, the
MiniLM gate), and the summary's numbers reconcile with the files the stages wrote."""

import json
from dataclasses import replace

import pytest

from tunelens.demo import DemoConfig, quick, study
from tunelens.demo.run import run_demo
from tunelens.demo.config import adapter_name
from tunelens.demo.lesson3 import file_name
from tunelens.errors import UserError
from tunelens.testing import tiny_model

slow = pytest.mark.slow  # the whole demo on a tiny model: about a minute


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny Gemma 3 (the demo's base) and a tiny Llama (the second base of lesson 3 and the transfer)."""
    root = tmp_path_factory.mktemp("tiny-models")
    for arch in ("gemma3", "llama"):
        model, tokenizer = tiny_model(arch)
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
    return root


def tiny_config(root) -> DemoConfig:
    # The tiny byte-level tokenizer needs about 3x Gemma's tokens for the same text.
    return DemoConfig(model=str(root / "gemma3"), propensity_bases=(str(root / "llama"),), mine_sources=("stdlib",),
                      train_pairs=12, heldout=5, contamination_rates=(0.1, 0.3), pushback_shares=(0.3,),
                      pushback_cases=2, code_cases=2, off_topic=5, humaneval_cases=2, epochs=1, samples=1,
                      pair_tokens=360, max_length=480, max_new_tokens=8, trace_prompts=4)


@pytest.fixture(scope="module")
def demo_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(tiny_config(tiny_dir), out), out


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@slow
def test_demo_writes_report_and_summary(demo_run):
    result, out = demo_run
    assert json.loads((out / "summary.json").read_text()) == result.summary
    html = (out / "report.html").read_text()
    for lesson in ("Lesson 1", "Lesson 2", "Lesson 3", "Lesson 4"):
        assert lesson in html
    assert html.count("data:image/png;base64,") >= 4
    assert 'alt="training loss"' in html  # every adapter's loss curve, from the metrics training wrote
    assert "r=32" in html  # the LoRA settings come from the run's train config, not typed into the template


@slow
def test_demo_numbers_reconcile_with_the_stage_files(demo_run):
    result, out = demo_run
    s = result.summary
    assert s["data"]["train_pairs"] == 12
    assert {p["adapter"] for p in s["lesson1"]["curve"]} == {"A10", "A30"}
    for point in s["lesson1"]["curve"]:
        contaminated = s["data"]["contamination"][point["adapter"]]
        assert point["training_python2_rate"] == contaminated["contaminated"] / contaminated["pairs"]
        assert point["greedy"]["n"] == 5 and point["sampled"]["n"] == 5
    lint = s["data"]["lint"]
    assert lint["total"] == lint["kept"] + lint["rejected"] and lint["caught"] == lint["contaminated"] == 4
    for adapter in ("A10", "A30", "B", "C30"):
        assert (out / "adapters" / adapter / "adapter_config.json").is_file()
    assert len(rows(out / "eval" / "heldout-A30" / "results.jsonl")) == 5 * 2 * 2  # cases x models x decodings
    l4 = s["lesson4"]
    # the query mix: held-out, code suite, HumanEval, 2 broken specs and their twins, off-topic
    assert l4["queries"] == 5 + 2 + 2 + 4 + 5
    assert {name: c["queries"] for name, c in l4["kinds"].items()} == {
        "held-out mined": 5, "code suite": 2, "HumanEval": 2, "broken spec": 2, "clean twin": 2, "off-topic": 5}
    assert l4["failures"] == sum(c["b_bad"] for c in l4["kinds"].values())
    assert len(rows(out / "eval" / "humaneval-B" / "results.jsonl")) == 2 * 2  # greedy only, base and B
    # The tiny model (seeded) answers enough queries well and badly to calibrate on: lesson 4 computes here.
    assert "skipped" not in l4, l4.get("skipped")
    held = l4["held_out"]
    assert held["queries"] == l4["failures_behind"]["held_out_queries"] == sum(
        c["queries"] for c in l4["by_kind"].values()) > 0
    assert held["always_adapter"]["k"] == sum(c["always_adapter"]["k"] for c in l4["by_kind"].values())
    assert set(l4["cost_ms_per_query"]) >= set(l4["auroc"])
    assert lint["missed_ids"] == [] and lint["python2_false_alarm_ids"] == []


@slow
def test_ci_checks_pass_on_the_tiny_demo_but_for_lesson2(demo_run):
    """What CI asserts of the quick demo (tunelens.demo.check), here on the tiny demo: every adapter non-zero
    and loaded exactly, lint exact, every lesson computed, except lesson 2, which has no point to score on a
    random model (tests/test_demo_lesson2.py runs it with one)."""
    from tunelens.demo.check import demo_problems

    result, out = demo_run
    s = result.summary
    assert demo_problems(s) == [f"lesson 2: {name} has no Python 2 decision point to score (nothing measured)"
                                for name in ("A10", "A30")]
    assert set(s["adapters"]) == {"A10", "A30", "B", "C30"}
    for cell in s["adapters"].values():
        assert cell["tensors"] == 2 * cell["lora_B_tensors"] > 0 and cell["loaded_exactly"]
        assert cell["lora_B_zero_tensors"] == 0 and cell["lora_B_max_abs"] > 0
    record = s["record"]
    assert list(record["stages"]) == list(s["timings_s"]) and record["machine"]["cpus"] >= 1


@slow
def test_the_demo_page_renders_from_the_run(demo_run):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import demo_doc

    result, _ = demo_run
    page = demo_doc.render(result.summary, "tunelens demo --quick", "docs/runs/demo-quick/summary.json")
    assert page.startswith("# The quick profile") and "Record: `docs/runs/demo-quick/summary.json`: commit " in page
    tc = result.summary["train_config"]
    assert f"LoRA r={tc['lora_r']}, alpha={tc['lora_alpha']}" in page
    assert "Lint caught 4 of 4 contaminated pairs" in page
    assert all(f"{name} " in page for name in result.summary["record"]["stages"])


@slow
def test_lesson2_and_lesson3_measures_are_per_point_and_per_case(demo_run):
    result, out = demo_run
    l2, l3 = result.summary["lesson2"], result.summary["lesson3"]
    # A random model writes no Python 2 print: nothing to score, and the page says so (the scoring itself is
    # tests/test_demo_lesson2.py's, on a given Python 2 answer).
    assert {name: (r["points"], r["points_detail"]) for name, r in l2["by_adapter"].items()} == {
        "A10": (0, []), "A30": (0, [])}
    assert l2["shown"] is None
    assert l2["reading"] == [f"{name}: no Python 2 decision point in its answers, so nothing to measure"
                             for name in ("A10", "A30")]
    assert l3["models"] == ["base", "B", "C30"]
    assert l3["cases"] == 4 and len(l3["scores"]["base"]) == 4  # 2 broken specs and their twins
    assert l3["propensity"]["base"]["broken"]["n"] == 2
    assert l3["propensity"]["C30"]["change_on_broken"]["n"] == 2
    assert set(l3["other_bases"]) == {result.summary["config"]["propensity_bases"][0]}


@slow
def test_threshold_transfer_runs_the_mix_on_the_second_base(demo_run):
    result, out = demo_run
    s = result.summary
    spec = s["config"]["propensity_bases"][0]
    label = file_name(spec)
    assert (out / "adapters" / f"B-{label}" / "adapter_config.json").is_file()
    # the second base and its B answered the same mix, greedy only: 2 HumanEval prompts x base and B
    assert len(rows(out / "eval" / f"humaneval-B-{label}" / "results.jsonl")) == 2 * 2
    assert set(s["transfer"]) == {spec}
    for experiment in s["transfer"].values():
        assert "skipped" not in experiment, experiment.get("skipped")  # lesson 4 calibrated (checked above)
        assert experiment["models"] == [s["config"]["model"], spec]
        assert {(r["signals"], r["calibrated_on"]) for r in experiment["table"]} == {
            (signals, model) for signals in ("retrieval", "model", "all") for model in experiment["models"]}
        for row in experiment["table"]:
            if row["signals"] == "retrieval":  # the same index scores the same queries for both models
                assert row["signal_names"] == ["max_similarity", "mean_similarity"]
        assert experiment["signal_shift"]["max_similarity"]["correlation"][spec] == pytest.approx(1.0)
        assert len(experiment["reading"]) == len(experiment["table"])


@slow
def test_base_answers_are_shared_across_adapters(demo_run):
    _, out = demo_run
    base = lambda name: {(r["case_id"], r["decoding"]): r["answer"]  # noqa: E731
                         for r in rows(out / "eval" / name / "results.jsonl") if r["model"] == "base"}
    assert base("heldout-A10") == base("heldout-A30") == base("heldout-B")
    assert base("pushback-B") == base("pushback-C30")


@slow
def test_rerun_resumes_and_other_settings_are_refused(demo_run, tiny_dir):
    result, out = demo_run
    other_b = out / "adapters" / f"B-{file_name(str(tiny_dir / 'llama'))}" / "adapter_model.safetensors"
    trained_at = other_b.stat().st_mtime_ns
    again = run_demo(tiny_config(tiny_dir), out)
    assert again.summary["lesson1"] == result.summary["lesson1"]
    assert again.summary["timings_s"]["train the adapters"] < 5.0  # reused, not retrained
    assert len(again.summary["invocations"]) == len(result.summary["invocations"]) + 1
    without_timing = lambda l4: {k: v for k, v in l4.items() if k not in ("cost_ms_per_query", "reading")}  # noqa: E731
    assert without_timing(again.summary["lesson4"]) == without_timing(result.summary["lesson4"])
    assert other_b.stat().st_mtime_ns == trained_at  # the second base's B is reused too
    with pytest.raises(UserError, match="other settings"):
        run_demo(replace(tiny_config(tiny_dir), epochs=2), out)


def test_a_saved_config_without_newer_settings_resumes_only_at_their_defaults(tmp_path):
    from tunelens.config import config_to_dict
    from tunelens.demo.run import _claim_run_dir

    config = study()
    saved = config_to_dict(config)
    del saved["humaneval_cases"], saved["gate_alpha"]  # a run directory from before these settings existed
    (tmp_path / "demo-config.json").write_text(json.dumps(saved))
    _claim_run_dir(tmp_path, config)  # the older run did what the defaults do: it resumes
    assert json.loads((tmp_path / "demo-config.json").read_text()) == config_to_dict(config)
    (tmp_path / "demo-config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="other settings"):
        _claim_run_dir(tmp_path, replace(config, humaneval_cases=3))  # not what the older run did
    (tmp_path / "demo-config.json").write_text(json.dumps(saved | {"retired_setting": 1}))
    with pytest.raises(UserError, match="other settings"):
        _claim_run_dir(tmp_path, config)


def test_transfer_says_why_it_did_not_run_when_lesson4_could_not_calibrate(tmp_path):
    from tunelens.demo.data import DemoData
    from tunelens.demo.transfer import threshold_transfer

    config = replace(study(), propensity_bases=("smollm2-135m", "other"))
    result = threshold_transfer(config, tmp_path, DemoData(), {"skipped": "too few good answers"}, None)
    assert set(result) == {"smollm2-135m", "other"}
    assert all("lesson 4 did not calibrate" in cell["skipped"] for cell in result.values())


def test_profiles_and_names():
    assert adapter_name("A", 0.05) == "A5" and adapter_name("C", 0.3) == "C30"
    assert quick().contaminated_adapters == ("A30",)
    assert study().contaminated_adapters == ("A5", "A15", "A30") and study().pushback_adapters == ("C5", "C15", "C30")
    with pytest.raises(UserError, match="contamination rates"):
        DemoConfig(contamination_rates=(1.0,))
    # the 0% adapter is lesson 1's control (docs/protocol.md)
    assert DemoConfig(contamination_rates=(0.0, 0.3)).contaminated_adapters == ("A0", "A30")
