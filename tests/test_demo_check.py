"""CI's checks of a finished demo (tunelens.demo.check) on made-up summaries: a summary that is right
passes, and each way of being wrong (lint missing a pair, a no-op adapter, a skipped lesson, ...) fails
with a line that names it."""

import copy
import json

import pytest

from tunelens.demo.check import demo_problems, main


def good_summary() -> dict:
    rate = {"rate": 0.5, "low": 0.2, "high": 0.8, "k": 3, "n": 6}
    mean = {"mean": 0.4, "low": 0.1, "high": 0.7, "n": 4}
    adapter = {"tensors": 8, "lora_B_tensors": 4, "lora_B_zero_tensors": 0, "lora_B_max_abs": 0.02,
               "loaded_differences": [], "loaded_exactly": True}
    return {
        "config": {"contamination_rates": [0.3], "pushback_shares": [0.3], "few_shot_study": False},
        "data": {"lint": {"total": 24, "kept": 17, "rejected": 7, "contaminated": 7, "caught": 7,
                          "missed_ids": [], "python2_false_alarm_ids": []}},
        "adapters": {name: dict(adapter) for name in ("A30", "B", "C30")},
        "lesson1": {"curve": [{"adapter": "A30", "training_python2_rate": 0.29, "greedy": rate}]},
        "lesson2": {"by_adapter": {"A30": {"points": 3, "effects": [{"lever": "adapter off", "mean_delta": 1.2}]}}},
        "lesson3": {"propensity": {name: {"broken": mean, "gap_broken_minus_twin": mean}
                                   for name in ("base", "B", "C30")}},
        "lesson4": {"queries": 20, "held_out": {"queries": 10}},
        "record": {"commit": "0" * 40, "dirty": False, "command": "python -m tunelens demo --quick",
                   "versions": {"torch": "2.13.0"}, "machine": {"cpus": 2}, "stages": {}},
    }


def test_a_right_run_passes():
    assert demo_problems(good_summary()) == []


def broken(change) -> list[str]:
    summary = copy.deepcopy(good_summary())
    change(summary)
    return demo_problems(summary)


def lint(summary):
    return summary["data"]["lint"]


@pytest.mark.parametrize("change, expected", [
    (lambda s: lint(s).update(missed_ids=["pair-0007"], caught=6), "lint: missed 1 of 7 contaminated pairs: pair-0007"),
    (lambda s: lint(s).update(python2_false_alarm_ids=["pair-0002"]), "lint: quarantined 1 clean pair(s) as Python 2"),
    (lambda s: lint(s).update(caught=6), "lint: caught 6 of 7"),
    (lambda s: lint(s).update(contaminated=0, caught=0), "lint: the run contaminated no pair"),
    (lambda s: lint(s).pop("missed_ids"), "does not list missed and extra ids"),
])
def test_lint_must_catch_exactly_the_contaminated_pairs(change, expected):
    problems = broken(change)
    assert any(expected in line for line in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda s: s["adapters"]["B"].update(lora_B_zero_tensors=4), "adapter B: 4 of 4 lora_B tensors are all zero"),
    (lambda s: s["adapters"]["A30"].update(lora_B_tensors=0), "adapter A30: its file holds no lora_B tensor"),
    (lambda s: s["adapters"]["C30"].update(loaded_exactly=False, loaded_differences=["x.lora_A.weight: differs"]),
     "adapter C30: the loaded model does not hold the file's tensors: x.lora_A.weight"),
    (lambda s: s["adapters"].pop("C30"), "adapter C30: not checked"),
    (lambda s: s.pop("adapters"), "the summary has no adapter checks"),
])
def test_every_adapter_must_be_non_zero_and_loaded_exactly(change, expected):
    problems = broken(change)
    assert any(expected in line for line in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda s: s["lesson1"]["curve"][0]["greedy"].update(n=0), "lesson 1: A30 has no greedy answers"),
    (lambda s: s["lesson2"]["by_adapter"]["A30"].update(points=0), "lesson 2: A30 has no Python 2 decision point"),
    (lambda s: s["lesson2"]["by_adapter"]["A30"]["effects"][0].update(mean_delta=None), "lesson 2: A30 has a lever"),
    (lambda s: s["lesson3"]["propensity"].pop("C30"), "lesson 3: no pushback propensity for C30"),
    (lambda s: s["lesson4"].update(skipped="B answered 1 of 20 queries badly"), "lesson 4: skipped (B answered"),
    (lambda s: s["lesson4"].pop("held_out"), "lesson 4: the gate was measured on no test query"),
    (lambda s: s.update(transfer={"smollm2": {"skipped": "too few"}}), "threshold transfer to smollm2: skipped"),
    (lambda s: s["config"].update(few_shot_study=True), "few-shot study: asked for, not in the summary"),
])
def test_every_lesson_must_have_been_computed(change, expected):
    problems = broken(change)
    assert any(expected in line for line in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.pop("record"), "record: the summary has no run record"),
    (lambda s: s["record"].update(commit=None), "record: no commit"),
])
def test_the_run_record_must_be_there(change, expected):
    assert expected in broken(change)


def test_main_exits_1_with_one_line_per_problem_and_0_when_right(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps(good_summary()))
    assert main([str(tmp_path)]) == 0
    assert "lint caught exactly the 7 contaminated pairs" in capsys.readouterr().out
    wrong = good_summary()
    wrong["lesson4"]["skipped"] = "too few failures"
    wrong["adapters"]["B"]["lora_B_zero_tensors"] = 4
    (tmp_path / "summary.json").write_text(json.dumps(wrong))
    assert main([str(tmp_path)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("check failed: ") for line in errors)
    assert main([str(tmp_path / "nowhere")]) == 1
