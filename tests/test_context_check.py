"""`context check`: each reason's risk by hand, the combination, the gate's signal, the examples file and the CLI."""

import json

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.inspect.context_check import (ContextCheckConfig, check_context, lint_findings, mismatch_risk, named_identifiers, ramp_risk, read_examples)
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import Example
from tunelens.retrieval.embedders import HashingEmbedder

CLEAN = "def reverse_words(text):\n    return ' '.join(reversed(text.split()))\n"
PYTHON2 = "def reverse_words(text):\n    print 'reversing'\n    return ' '.join(reversed(text.split()))\n"
BROKEN = "def reverse_words(text):\n    return ' '.join(reversed(text.split()\n"
OTHER = "def mean(values):\n    return sum(values) / len(values)\n"
ASK = "Write a Python function `reverse_words(text)` that reverses the order of the words in text."
QUERY = "Write a Python function `reverse_words_in(line)` that reverses the order of words in a line."
EMBEDDER = HashingEmbedder(256)
# Character trigrams give any two English sentences a cosine of about 0.2-0.3, so the tests' ramp sits higher.
HASHING_RAMP = {"low_similarity": 0.35, "high_similarity": 0.6}


def test_ramp_by_hand():
    assert ramp_risk(0.05, 0.1, 0.3) == 1.0 and ramp_risk(0.5, 0.1, 0.3) == 0.0
    assert ramp_risk(0.2, 0.1, 0.3) == pytest.approx(0.5) and ramp_risk(0.25, 0.1, 0.3) == pytest.approx(0.25)


def test_named_identifiers_from_signatures():
    method = "In a Python class `Cookie`, implement the method `output(self, header='Set-Cookie:\\r\\n')`, which ..."
    assert named_identifiers(method) == (["output"], ["self", "header"])  # the class and the default's text: not
    assert named_identifiers("Use `numpy` and `pandas` here.") == ([], ["numpy", "pandas"])
    assert named_identifiers("Reverse a list.") == ([], [])


def test_mismatch_is_one_when_the_function_asked_for_is_absent():
    assert mismatch_risk(ASK, CLEAN)[0] == 0.0
    risk, missing, named = mismatch_risk(ASK, OTHER)
    assert (risk, missing, named) == (1.0, ["reverse_words", "text"], 2)
    assert mismatch_risk("Write `f(a, b)`.", "def f(a, c):\n    return a + c")[0] == pytest.approx(0.5)
    assert mismatch_risk("Reverse a list.", OTHER)[0] == 0.0


def test_lint_finds_python2_and_syntax_errors_only_in_code():
    assert lint_findings(CLEAN) == ()
    assert "py2-print" in lint_findings(PYTHON2)
    assert lint_findings(BROKEN) == ("syntax-error",)
    assert lint_findings("That request contradicts itself: which one do you want?") == ()


def _check(examples, **overrides):
    return check_context(QUERY, examples, ContextCheckConfig(**{**HASHING_RAMP, **overrides}), embedder=EMBEDDER)


def test_each_reason_flags_and_the_risk_is_the_largest():
    good = _check([Example(ASK, CLEAN, id="good")])
    assert not good.flagged and good.risk < 0.5 and good.examples[0].risks["off_query"] == 0.0
    for response, reason in ((PYTHON2, "lint"), (BROKEN, "lint"), (OTHER, "mismatch")):
        verdict = _check([Example(ASK, response)])
        assert verdict.flagged and verdict.examples[0].main_reason == reason and verdict.risk == 1.0
    far = _check([Example("Summarise the plot of a novel in French.", "Le roman raconte ...")])
    assert far.examples[0].risks["off_query"] == 1.0 and far.flagged
    both = _check([Example(ASK, CLEAN, id="a"), Example(ASK, PYTHON2, id="b")])
    assert both.risk == 1.0 and both.flagged and [e.id for e in both.examples] == ["a", "b"]
    assert _check([Example(ASK, CLEAN)], low_similarity=0.95, high_similarity=0.99).flagged  # a stricter ramp
    assert not _check([]).flagged


def test_similarity_is_the_embedders_cosine():
    verdict = _check([Example(ASK, CLEAN)])
    vectors = EMBEDDER.encode([QUERY, ASK])
    assert verdict.examples[0].similarity == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)


def test_a_gate_adds_how_familiar_the_example_is(tmp_path):
    from tunelens.gate import build_gate

    gate = build_gate([ASK, "Write a Python function `mean(values)` that averages values."], tmp_path / "gate",
                      embedder=EMBEDDER, k=1)
    config = ContextCheckConfig(**HASHING_RAMP)
    known = check_context(QUERY, [Example(ASK, CLEAN)], config, gate=gate)
    assert known.examples[0].training_similarity == pytest.approx(1.0, abs=1e-5)
    assert known.examples[0].risks["unfamiliar"] == 0.0 and "max_similarity" in known.query_signals
    stranger = check_context(QUERY, [Example("Translate this sentence into German please.", CLEAN)], config, gate=gate)
    assert stranger.examples[0].risks["unfamiliar"] == 1.0 and stranger.flagged
    assert "unfamiliar" not in _check([Example(ASK, CLEAN)]).examples[0].risks  # no gate, no such reason


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="high_similarity"):
        ContextCheckConfig(low_similarity=0.5, high_similarity=0.2)


def test_read_examples_accepts_pairs_and_chat_records_and_names_bad_lines(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text(json.dumps({"instruction": ASK, "response": CLEAN, "id": "x"}) + "\n\n"
                    + json.dumps({"messages": [{"role": "user", "content": ASK},
                                               {"role": "assistant", "content": OTHER}]}) + "\n")
    examples = read_examples(path)
    assert [e.id for e in examples] == ["x", "line-3"] and examples[1].response == OTHER
    for line, message in (("{not json", ":1: not a JSON line"), (json.dumps({"instruction": ASK}), "'response'"),
                          ("[1]", "JSON object"), (json.dumps({"messages": [{"role": "user", "content": "a"}]}),
                                                   "assistant")):
        path.write_text(line + "\n")
        with pytest.raises(UserError, match=message):
            read_examples(path)
    with pytest.raises(UserError, match="not found"):
        read_examples(tmp_path / "missing.jsonl")


def test_cli_prints_a_verdict_and_can_fail_on_a_flag(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text(json.dumps({"instruction": ASK, "response": PYTHON2, "id": "py2"}) + "\n")
    runner = CliRunner()
    base = ["context", "check", "--query", QUERY, "--examples", str(path), "--embedder", "hashing-256"]
    shown = runner.invoke(app, base + ["--json"])
    assert shown.exit_code == 0, shown.output
    verdict = json.loads(shown.output)
    assert verdict["flagged"] and verdict["examples"][0]["main_reason"] == "lint"
    assert runner.invoke(app, base + ["--fail-on-flag"]).exit_code == 1
    table = runner.invoke(app, base)
    assert table.exit_code == 0 and "FLAGGED" in table.output
    assert runner.invoke(app, base + ["--high-similarity", "0.0"]).exit_code == 2
    helped = runner.invoke(app, ["context", "check", "--help"])
    assert helped.exit_code == 0 and "tunelens context check --query" in helped.output
