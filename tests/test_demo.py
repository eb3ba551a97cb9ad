"""The demo end to end on a tiny random model saved to disk: every stage runs for real (mining the
standard library, contamination, lint, three trainings, mixed-adapter eval, compare, the MiniLM gate)."""

import json
from dataclasses import replace

import pytest

from tunelens.demo import DemoConfig, _bad_output, _python2_print_positions, run_demo
from tunelens.errors import UserError
from tunelens.testing import tiny_model

slow = pytest.mark.slow  # the whole demo on a tiny model: about a minute


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-gemma3")
    model, tokenizer = tiny_model("gemma3")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_config(model_dir) -> DemoConfig:
    # The tiny byte-level tokenizer needs about 3x Gemma's tokens for the same text.
    return DemoConfig(model=str(model_dir), train_pairs=12, heldout=5, pushback_pairs=2, code_cases=2, off_topic=3,
                      epochs=1, samples=1, pair_tokens=360, max_length=480, max_new_tokens=8, trace_prompts=2)


@pytest.fixture(scope="module")
def demo_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(tiny_config(tiny_dir), out), out


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@slow
def test_demo_writes_report_and_summary(demo_run):
    result, out = demo_run
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text()) == result.summary
    html = (out / "report.html").read_text()
    assert "Lesson 1" in html and "Lesson 4" in html and "data:image/png;base64," in html


@slow
def test_demo_numbers_reconcile_with_the_stage_files(demo_run):
    result, out = demo_run
    s = result.summary
    assert s["data"]["train_pairs"] == 12 and s["data"]["contaminated_pairs"] == round(0.3 * 12)
    assert s["data"]["lint"]["caught"] == s["data"]["lint"]["contaminated"] == 4  # lint finds every injected print
    assert s["data"]["lint"]["total"] == s["data"]["lint"]["kept"] + s["data"]["lint"]["rejected"]
    for adapter in "ABC":
        assert (out / "adapters" / adapter / "adapter_config.json").is_file()
    heldout_a = rows(out / "eval" / "heldout-A" / "results.jsonl")
    assert len(heldout_a) == 5 * 2 * 2  # cases x (base, tuned) x (greedy, sampled)
    assert s["lesson1"]["A_greedy"]["n"] == 5
    pushback = rows(out / "eval" / "pushback-C" / "results.jsonl")
    assert {r["case_id"] for r in pushback if r["expect"] == "pushback"} and len(pushback) == 4 * 2 * 2
    l4 = s["lesson4"]
    assert l4["queries"] == 5 + 2 + 3 and sum(l4["routes"].values()) == l4["queries"]
    assert {name: c["queries"] for name, c in l4["by_suite"].items()} == {"heldout": 5, "code": 2, "offtopic": 3}
    assert l4["bad_output_routed"]["k"] == sum(c["bad_routed"] for c in l4["by_suite"].values())
    assert (l4["counts"]["in_domain"], l4["counts"]["out_of_domain"]) == (5, 16)


@slow
def test_base_answers_are_shared_across_adapters(demo_run):
    _, out = demo_run
    base = lambda name: {(r["case_id"], r["decoding"]): r["answer"]  # noqa: E731
                         for r in rows(out / "eval" / name / "results.jsonl") if r["model"] == "base"}
    assert base("heldout-A") == base("heldout-B")
    assert base("pushback-B") == base("pushback-C")


@slow
def test_rerun_resumes_and_other_settings_are_refused(demo_run, tiny_dir):
    result, out = demo_run
    again = run_demo(tiny_config(tiny_dir), out)
    assert again.summary["lesson1"] == result.summary["lesson1"]
    assert again.summary["timings_s"]["train adapter A"] < 1.0  # reused, not retrained
    with pytest.raises(UserError, match="other settings"):
        run_demo(replace(tiny_config(tiny_dir), epochs=2), out)


def test_python2_print_positions_mark_the_print_and_the_token_after_it():
    tokens = ["def", " f", "():", "\n   ", " print", ' "', "hi", '"', "\n   ", " print", "(", "x", ")"]
    assert _python2_print_positions(tokens) == [4, 5]  # the call `print(x)` is not a decision for Python 2


def test_bad_output_rules():
    assert _bad_output({"expect": "code", "bad": True, "has_code": True})
    assert not _bad_output({"expect": "code", "bad": False, "has_code": True})
    assert _bad_output({"expect": "other", "bad": None, "has_code": True})  # code for a question wanting none
    assert not _bad_output({"expect": "other", "bad": None, "has_code": False})
