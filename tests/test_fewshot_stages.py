"""--few-shot K on trace and compare: K=0 is the plain prompt, K>0 shows the known nearest pairs and
records their ids and similarities in trace.json / compare.json."""

import json

import pytest
from typer.testing import CliRunner

from tunelens.retrieval.fewshot import encode_few_shot, nearest_examples
from tunelens.gate import Gate, build_gate
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.model.prompts import encode_prompt, render_prompt
from tunelens.inspect.trace import Trace, TraceConfig, trace_generate

PAIRS = [
    ("Write a Python function that reverses a string.", "def rev(s):\n    return s[::-1]"),
    ("Write a Python function that checks whether a number is prime.", "def is_prime(n):\n    return n > 1"),
    ("Write a Python function that merges two sorted lists.", "def merge(a, b):\n    return sorted(a + b)"),
    ("Bake a sourdough loaf.", "Mix flour and water."),
]
PROMPT = "Write a Python function that reverses a string of words."
runner = CliRunner()


@pytest.fixture(scope="module")
def pair_gate(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate")
    build_gate([i for i, _ in PAIRS], path, ids=[f"p{n}" for n in range(len(PAIRS))],
               embedder=HashingEmbedder(256), k=2, responses=[r for _, r in PAIRS])
    return path


def _trace(args, tmp_path, name="t.json"):
    from tunelens.cli import app

    out = tmp_path / name
    result = runner.invoke(app, ["trace", *args, "--max-new-tokens", "3", "--out", str(out)])
    return result, (json.loads(out.read_text()) if out.is_file() else None)


def test_trace_k0_is_the_plain_prompt(tiny_model_dir, tiny_llama, tmp_path):
    _, tokenizer = tiny_llama
    result, data = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "0"], tmp_path)
    assert result.exit_code == 0, result.output
    assert data["few_shot"] == [] and data["rendered_prompt"] == render_prompt(tokenizer, PROMPT)
    assert data["prompt_tokens"] == len(encode_prompt(tokenizer, PROMPT))
    _, default = _trace(["-m", str(tiny_model_dir), "-p", PROMPT], tmp_path, "d.json")
    assert default["steps"] == data["steps"] and default["rendered_prompt"] == data["rendered_prompt"]


def test_trace_shows_and_records_the_nearest_pairs(tiny_model_dir, tiny_llama, pair_gate, tmp_path):
    model, tokenizer = tiny_llama
    result, data = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "2",
                           "--few-shot-index", str(pair_gate), "--html", str(tmp_path / "t.html")], tmp_path)
    assert result.exit_code == 0, result.output
    shown = data["few_shot"]
    assert [e["id"] for e in shown][-1] == "p0"  # the nearest pair, right before the request
    expected = nearest_examples(Gate.load(pair_gate), PROMPT, 2)
    assert [(e["id"], e["similarity"]) for e in shown] == [(e.id, e.similarity) for e in expected]
    assert data["prompt_tokens"] == len(encode_few_shot(tokenizer, expected, PROMPT))
    assert PAIRS[0][1] in data["rendered_prompt"]
    direct = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=3), examples=expected)
    assert [s["token_id"] for s in data["steps"]] == [s.token_id for s in direct.steps]
    assert Trace.load(tmp_path / "t.json").few_shot == expected
    assert "p0 (similarity" in (tmp_path / "t.html").read_text()


def test_few_shot_needs_an_index_with_responses_and_the_chat_format(tiny_model_dir, pair_gate, tmp_path):
    result, _ = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "2"], tmp_path)
    assert result.exit_code == 2 and "needs few_shot_index" in result.output
    result, _ = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "1", "--raw",
                        "--few-shot-index", str(pair_gate)], tmp_path)
    assert result.exit_code == 2 and "cannot be used with raw" in result.output
    old = tmp_path / "old"
    build_gate([i for i, _ in PAIRS], old, embedder=HashingEmbedder(64))
    result, _ = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "1", "--few-shot-index", str(old)],
                       tmp_path)
    assert result.exit_code == 2 and "stores no responses" in result.output
    result, _ = _trace(["-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "17",
                        "--few-shot-index", str(pair_gate)], tmp_path)
    assert result.exit_code == 2 and "less than or equal to 16" in result.output


def test_a_trace_written_before_few_shot_still_loads(tiny_gemma, tmp_path):
    model, tokenizer = tiny_gemma
    data = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=2)).to_json()
    del data["few_shot"]
    assert Trace.from_json(data).few_shot == []


def test_compare_shows_the_same_examples_before_every_condition(tiny_model_dir, tiny_llama, pair_gate, tmp_path):
    from tunelens.cli import app
    from tunelens.inspect.compare import Comparison

    _, tokenizer = tiny_llama
    out = tmp_path / "c.json"
    variant = PROMPT + " Prefer Python 3."
    result = runner.invoke(app, ["compare", "-m", str(tiny_model_dir), "-p", PROMPT, "--variant", variant,
                                 "--max-new-tokens", "3", "--few-shot", "1", "--few-shot-index", str(pair_gate),
                                 "--out", str(out), "--html", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    expected = nearest_examples(Gate.load(pair_gate), PROMPT, 1)
    assert [(e["id"], e["similarity"]) for e in data["few_shot"]] == [("p0", expected[0].similarity)]
    assert [c["prompt_tokens"] for c in data["conditions"]] == [
        len(encode_few_shot(tokenizer, expected, PROMPT)), len(encode_few_shot(tokenizer, expected, variant))]
    assert Comparison.load(out).few_shot == expected
    plain = tmp_path / "plain.json"
    result = runner.invoke(app, ["compare", "-m", str(tiny_model_dir), "-p", PROMPT, "--max-new-tokens", "3",
                                 "--out", str(plain)])
    assert result.exit_code == 0, result.output
    assert json.loads(plain.read_text())["conditions"][0]["prompt_tokens"] == len(encode_prompt(tokenizer, PROMPT))


def test_generate_k0_prints_what_it_printed_before(tiny_model_dir, tiny_llama):
    from tunelens.cli import app
    from tunelens.engine.generate import SamplingConfig, stream_generate

    model, tokenizer = tiny_llama
    before = "".join(stream_generate(model, tokenizer, PROMPT, SamplingConfig(max_new_tokens=4))) + "\n"
    for extra in ([], ["--few-shot", "0"]):
        result = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "-p", PROMPT, "--max-new-tokens", "4",
                                     *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout == before


def test_generate_shows_and_records_the_nearest_pairs(tiny_model_dir, tiny_llama, pair_gate, tmp_path):
    from tunelens.cli import app
    from tunelens.engine.generate import SamplingConfig, stream_generate

    model, tokenizer = tiny_llama
    expected = nearest_examples(Gate.load(pair_gate), PROMPT, 2)
    out = tmp_path / "gen.json"
    result = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "-p", PROMPT, "--max-new-tokens", "4",
                                 "--few-shot", "2", "--few-shot-index", str(pair_gate), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = "".join(stream_generate(model, tokenizer, PROMPT, SamplingConfig(max_new_tokens=4), examples=expected))
    assert result.stdout.startswith(text + "\n")
    assert f"{expected[-1].id} (similarity {expected[-1].similarity:.3f})" in result.stderr
    data = json.loads(out.read_text())
    assert [(e["id"], e["similarity"]) for e in data["few_shot"]] == [(e.id, e.similarity) for e in expected]
    assert data["text"] == text and data["prompt_tokens"] == len(encode_few_shot(tokenizer, expected, PROMPT))
    bad = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "-p", PROMPT, "--few-shot", "1", "--raw",
                              "--few-shot-index", str(pair_gate)])
    assert bad.exit_code == 2 and "cannot be used with raw" in bad.output


def test_any_recorded_few_shot_field_loads_or_is_a_user_error(tiny_gemma):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tunelens.errors import UserError

    model, tokenizer = tiny_gemma
    data = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=1)).to_json()
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4))
    example = st.fixed_dictionaries({}, optional={"instruction": scalars, "response": scalars, "id": scalars,
                                                  "similarity": scalars})
    values = st.one_of(scalars, st.lists(st.one_of(example, scalars), max_size=3))

    @settings(max_examples=150, deadline=None)
    @given(values)
    def check(value):
        try:
            loaded = Trace.from_json({**data, "few_shot": value})
        except UserError as err:
            assert "few_shot" in str(err)
            return
        assert isinstance(value, list) and all(isinstance(e.instruction, str) and isinstance(e.id, str)
                                               for e in loaded.few_shot)
        assert loaded.to_json()["few_shot"] == [{**e, "similarity": None if e["similarity"] is None
                                                 else float(e["similarity"])} for e in value]

    check()
