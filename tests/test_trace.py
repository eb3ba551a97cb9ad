"""trace_generate against hand computations on tiny random models (seconds, no network)."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from tunelens.errors import UserError
from tunelens.model.prompts import encode_prompt, stop_token_ids
from tunelens.engine.tokens import pct, show_token, token_pieces
from tunelens.inspect.trace import (Trace, TraceConfig, _decision_reasons, adapter_canary, trace_generate, write_trace_html)

PROMPT = "Write a function that reverses a string."


def _manual_distribution(model, ids):
    """softmax of the model's last-position logits, one full forward pass without any cache."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_recorded_numbers_equal_softmax_of_a_plain_forward_pass(arch, exact, request):
    """Exact probabilities with --exact-probs; by default (the fp16 head) the same ids, values within rounding."""
    model, tokenizer = request.getfixturevalue(arch)
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=6, top_k=5, exact_probs=exact))
    prompt_ids = encode_prompt(tokenizer, PROMPT)
    assert trace.prompt_tokens == len(prompt_ids) and len(trace.steps) == 6
    generated = []
    for step in trace.steps:
        probs = _manual_distribution(model, prompt_ids + generated)
        values, ids = probs.topk(5)
        assert [a.token_id for a in step.top] == ids.tolist()
        assert [a.prob for a in step.top] == pytest.approx(values.tolist(), rel=1e-4)
        assert step.prob == pytest.approx(float(probs[step.token_id]), rel=1e-4)
        assert step.rank == int((probs > probs[step.token_id]).sum()) + 1
        entropy = -sum(p * math.log(p) for p in probs.tolist() if p > 0)
        assert step.entropy == pytest.approx(entropy, rel=1e-4)
        assert step.margin == pytest.approx(float(values[0] - values[1]), rel=1e-3, abs=1e-7)
        generated.append(step.token_id)


@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_default_trace_reads_the_fp16_head_within_the_stated_tolerance(arch, request, monkeypatch):
    """The default greedy trace takes its logits from HeadScan (fp16 head, top-K rows in fp32);
    --exact-probs never does; both give the same tokens, top-K ids and ranks, probabilities within 1e-3."""
    from tunelens.engine.decode import HeadScan

    model, tokenizer = request.getfixturevalue(arch)
    calls = []
    original = HeadScan.logits
    monkeypatch.setattr(HeadScan, "logits", lambda scan, k: calls.append(k) or original(scan, k))
    config = dict(max_new_tokens=12, top_k=4)
    exact = trace_generate(model, tokenizer, PROMPT, TraceConfig(exact_probs=True, **config))
    assert calls == []
    fast = trace_generate(model, tokenizer, PROMPT, TraceConfig(**config))
    assert calls == [4] * len(fast.steps)
    assert [s.token_id for s in fast.steps] == [s.token_id for s in exact.steps]
    for a, b in zip(fast.steps, exact.steps):
        assert [t.token_id for t in a.top] == [t.token_id for t in b.top] and a.rank == b.rank == 1
        assert [t.prob for t in a.top] == pytest.approx([t.prob for t in b.top], abs=1e-3)
        assert a.entropy == pytest.approx(b.entropy, abs=1e-2)
    # Sampling always reads the fp32 head: a sampled trace never asks HeadScan.
    calls.clear()
    trace_generate(model, tokenizer, PROMPT, TraceConfig(temperature=1.0, seed=0, **config))
    assert calls == []


@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_greedy_trace_tokens_equal_model_generate(arch, request):
    model, tokenizer = request.getfixturevalue(arch)
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=20))
    ids = torch.tensor([encode_prompt(tokenizer, PROMPT)])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                             eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
    assert [s.token_id for s in trace.steps] == out[0, ids.shape[1]:].tolist()
    assert all(s.rank == 1 for s in trace.steps)
    assert "".join(s.token for s in trace.steps) == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


def test_sampling_records_the_raw_distribution_and_is_reproducible(tiny_gemma):
    model, tokenizer = tiny_gemma
    config = TraceConfig(max_new_tokens=8, top_k=3, temperature=5.0, top_p=0.9, seed=7)
    first = trace_generate(model, tokenizer, PROMPT, config)
    second = trace_generate(model, tokenizer, PROMPT, config)
    assert [s.token_id for s in first.steps] == [s.token_id for s in second.steps]
    prompt_ids = encode_prompt(tokenizer, PROMPT)
    # At temperature 5 a random tiny model's sample is almost never the argmax; the recorded probability
    # must still be the untempered one.
    generated = []
    for step in first.steps:
        probs = _manual_distribution(model, prompt_ids + generated)
        assert step.prob == pytest.approx(float(probs[step.token_id]), rel=1e-4)
        assert step.rank == int((probs > probs[step.token_id]).sum()) + 1
        assert step.top[0].prob == pytest.approx(float(probs.max()), rel=1e-4)
        generated.append(step.token_id)
    assert any(s.rank > 1 for s in first.steps)
    assert all("not_argmax" in s.reasons for s in first.steps if s.rank > 1)


def test_decision_reasons_by_hand():
    # The story's decision point: 55% vs 38% is a margin of 0.17.
    assert _decision_reasons(0.55, 0.38, 1, 0.1) == []
    assert _decision_reasons(0.55, 0.38, 1, 0.2) == ["low_margin"]
    assert _decision_reasons(0.55, 0.38, 2, 0.1) == ["not_argmax"]
    assert _decision_reasons(0.40, 0.35, 3, 0.1) == ["low_margin", "not_argmax"]


def test_margin_threshold_selects_decision_points(tiny_gemma):
    model, tokenizer = tiny_gemma
    every = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=5, margin_threshold=1.0))
    none = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=5, margin_threshold=0.0))
    assert [s.step for s in every.decision_points] == [0, 1, 2, 3, 4]
    assert none.decision_points == []
    assert every.to_json()["decision_points"] == [0, 1, 2, 3, 4]


def test_memory_holds_k_per_step_not_the_vocabulary(tiny_gemma):
    model, tokenizer = tiny_gemma
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=4, top_k=3))
    assert all(len(step.top) == 3 for step in trace.steps)
    assert max(len(json.dumps(s)) for s in trace.to_json()["steps"]) < 600


class _StopAfter(torch.nn.Module):
    """Wraps a model and makes `stop` overwhelmingly likely from the n-th forward call on."""

    def __init__(self, inner, stop: int, after: int):
        super().__init__()
        self.inner, self.stop, self.after, self.calls = inner, stop, after, 0

    def forward(self, input_ids=None, cache=None, use_cache=None, logits_to_keep=0, **kwargs):
        out = self.inner(input_ids=input_ids, cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep)
        self.calls += 1
        if self.calls >= self.after:
            out.logits[..., self.stop] += 100.0
        return out


def test_stop_token_ends_the_trace_and_is_not_in_the_text(tiny_llama):
    model, tokenizer = tiny_llama
    stop = stop_token_ids(tokenizer)[0]
    trace = trace_generate(_StopAfter(model, stop, after=3), tokenizer, PROMPT, TraceConfig(max_new_tokens=10))
    assert trace.stop_reason == "stop_token" and len(trace.steps) == 3
    assert trace.steps[-1].token_id == stop and trace.steps[-1].prob == pytest.approx(1.0)
    assert trace.text == tokenizer.decode([s.token_id for s in trace.steps[:2]])


def test_token_pieces_join_to_the_decoded_text(tiny_gemma):
    _, tokenizer = tiny_gemma
    ids = tokenizer("def f():\n    print('héllo ✓')\n", add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tokenizer.decode(ids)


def test_trace_round_trips_through_json_and_rerenders(tiny_gemma, tmp_path):
    model, tokenizer = tiny_gemma
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=5, top_k=4))
    path = trace.save(tmp_path / "trace.json")
    loaded = Trace.load(path)
    assert loaded.to_json() == trace.to_json()
    assert loaded.steps == trace.steps and loaded.config == trace.config
    first = write_trace_html(trace, tmp_path / "a.html").read_text()
    second = write_trace_html(loaded, tmp_path / "b.html").read_text()
    assert first == second
    # Self-contained: no external resource of any kind.
    assert "http://" not in first and "https://" not in first and "src=" not in first
    assert first.count('class="tok') == 5


def test_load_names_the_file_and_the_bad_field(tiny_gemma, tmp_path):
    model, tokenizer = tiny_gemma
    data = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=3)).to_json()
    del data["steps"][1]["top"][0]["prob"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"bad.json: steps\[1\].top\[0\]: missing field 'prob'"):
        Trace.load(path)
    path.write_text(json.dumps({**data, "format": "other"}))
    with pytest.raises(UserError, match="not a tunelens trace"):
        Trace.load(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Trace.load(path)
    data["config"]["colour"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="unknown field"):
        Trace.load(path)


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="top_k"):
        TraceConfig(top_k=0)
    with pytest.raises(UserError, match="top_p"):
        TraceConfig(top_p=0)
    with pytest.raises(UserError, match="temperature"):
        TraceConfig(temperature=-1)


# ---------------------------------------------------------------- adapter canary


def _lora(perturb: bool):
    from tunelens.testing import tiny_lora_model

    return tiny_lora_model("gemma3", seed=3, perturb=perturb)


def test_canary_fires_on_a_fresh_zero_initialised_lora():
    model, tokenizer = _lora(perturb=False)
    with pytest.raises(UserError, match="adapter does not change the model's logits"):
        adapter_canary(model, tokenizer, PROMPT)
    with pytest.raises(UserError, match="adapter canary"):
        trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=2))


def test_canary_passes_on_a_perturbed_lora_and_trace_uses_the_adapter():
    from tunelens.model.state import adapter_off

    model, tokenizer = _lora(perturb=True)
    result = adapter_canary(model, tokenizer, PROMPT)
    assert result["max_abs_logit_diff"] > 1e-3
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=3))
    assert trace.adapter_canary == result and trace.adapter == "adapter"
    prompt_ids = encode_prompt(tokenizer, PROMPT)
    tuned = _manual_distribution(model, prompt_ids)
    with adapter_off(model):
        base = _manual_distribution(model, prompt_ids)
    assert trace.steps[0].prob == pytest.approx(float(tuned[trace.steps[0].token_id]), rel=1e-4)
    assert not torch.allclose(tuned, base)


def test_canary_refuses_a_model_without_adapter(tiny_gemma):
    with pytest.raises(UserError, match="no adapter"):
        adapter_canary(*tiny_gemma, PROMPT)


# ---------------------------------------------------------------- formatting and CLI


def test_formatting_helpers():
    assert pct(0.55) == "55%" and pct(0.032) == "3.2%" and pct(0.00041) == "0.041%" and pct(0.0) == "0%"
    assert pct(3.9e-10) == "<0.001%"
    assert show_token("a\n\tb\x1e") == "a\\n\\tb\\x1e" and show_token("") == "∅"


runner = CliRunner()


def test_cli_trace_writes_json_and_html_and_reloads(tiny_model_dir, tmp_path):
    from tunelens.cli import app

    out, html = tmp_path / "t.json", tmp_path / "t.html"
    result = runner.invoke(app, ["trace", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--max-new-tokens",
                                 "4", "--top-k", "3", "--margin", "1", "--out", str(out), "--html", str(html)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["config"]["exact_probs"] is False
    exact = runner.invoke(app, ["trace", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--max-new-tokens", "4",
                                "--exact-probs", "--out", str(tmp_path / "exact.json")])
    assert exact.exit_code == 0, exact.output
    assert json.loads((tmp_path / "exact.json").read_text())["config"]["exact_probs"] is True
    assert data["format"] == "tunelens.trace" and len(data["steps"]) == 4 and data["decision_points"] == [0, 1, 2, 3]
    assert "decision points: 4" in result.output and html.is_file()
    again = runner.invoke(app, ["trace", "--load", str(out), "--html", str(tmp_path / "again.html")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.html").read_text() == html.read_text()


def test_cli_trace_rejects_bad_input(tiny_model_dir, tmp_path):
    from tunelens.cli import app

    both = runner.invoke(app, ["trace", "-m", str(tiny_model_dir), "-p", "x", "--prompt-file", str(tmp_path / "f"),
                               "--out", str(tmp_path / "t.json")])
    assert both.exit_code == 2 and "exactly one of --prompt and --prompt-file" in both.output
    missing = runner.invoke(app, ["trace", "-m", str(tiny_model_dir), "--prompt-file", str(tmp_path / "nope.txt"),
                                  "--out", str(tmp_path / "t.json")])
    assert missing.exit_code == 2 and "nope.txt: no such file" in missing.output
    no_out = runner.invoke(app, ["trace", "-m", str(tiny_model_dir), "-p", "x"])
    assert no_out.exit_code == 2 and "--out is required" in no_out.output
