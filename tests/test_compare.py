"""compare_conditions against hand computations: teacher-forced scores, KL, flips, watch, adapter conditions."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from tunelens.inspect.compare import (Comparison, CompareConfig, compare_conditions, condition_plan, resolve_watch, write_compare_html)
from tunelens.errors import UserError
from tunelens.model.prompts import encode_prompt

PROMPT = "Write a function that prints hello."
VARIANT = "Write a function that prints hello. Prefer Python 3, not Python 2."


class BigramModel(torch.nn.Module):
    """logits at a position = a fixed row chosen by the token there: the numbers can be set by hand."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        torch.nn.init.zeros_(self.table.weight)
        self.config = SimpleNamespace(tunelens_spec="bigram")

    def set_row(self, token: int, probs: dict[int, float]) -> None:
        """Make the distribution after `token` exactly `probs`, the rest spread evenly over the vocabulary."""
        vocab = self.table.weight.shape[0]
        rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
        row = torch.full((vocab,), math.log(rest), dtype=torch.float64)
        for tid, p in probs.items():
            row[tid] = math.log(p)
        with torch.no_grad():
            self.table.weight[token] = row.float()

    def get_output_embeddings(self):
        return self.table

    def forward(self, input_ids=None, logits_to_keep=0, **kwargs):
        logits = self.table(input_ids)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def _single_token(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_flip_is_detected_and_phrased_like_the_story(tiny_gemma):
    _, tokenizer = tiny_gemma
    model = BigramModel(len(tokenizer))
    # Two raw prompts whose last tokens differ: the only difference the bigram model sees.
    end_a, end_b = tokenizer("x a")["input_ids"][-1], tokenizer("x b")["input_ids"][-1]
    assert end_a != end_b
    printed, paren = _single_token(tokenizer, "print"), _single_token(tokenizer, "(")
    model.set_row(end_a, {printed: 0.55, paren: 0.38})
    model.set_row(end_b, {printed: 0.34, paren: 0.56})
    model.set_row(printed, {paren: 0.9})
    comparison = compare_conditions(model, tokenizer, "x a", ["x b"], continuation="print(",
                                    config=CompareConfig(raw=True, top_k=2, watch=("(",)))
    assert [c.name for c in comparison.conditions] == ["model · prompt", "model · variant 1"]
    assert comparison.continuation_ids == [printed, paren]
    assert len(comparison.flips) == 1
    flip = comparison.flips[0]
    assert (flip.position, flip.reference, flip.other) == (0, 0, 1)
    assert flip.text == "`print` 55% / `(` 38% -> 34% / 56%"
    first = comparison.positions[0]
    assert first.is_flip and first.argmax == [printed, paren]
    assert first.token_probs == pytest.approx([0.55, 0.34], rel=1e-5)
    # Candidates are ordered by the highest probability any condition gives them: "(" (56%) before "print".
    assert first.candidate_ids[:2] == [paren, printed]
    assert first.probs[0][:2] == pytest.approx([0.38, 0.55], rel=1e-5)
    assert first.probs[1][:2] == pytest.approx([0.56, 0.34], rel=1e-5)
    assert [row[0] for row in first.watch] == pytest.approx([0.38, 0.56], rel=1e-5)
    # Position 1 follows "print" under both conditions: same row, no flip, zero KL.
    assert not comparison.positions[1].is_flip and comparison.positions[1].kl == pytest.approx([0.0, 0.0], abs=1e-6)
    # KL(reference || variant) at position 0 by hand: the two named tokens plus the evenly spread rest.
    vocab = len(tokenizer)
    rest_p, rest_q = 0.07 / (vocab - 2), 0.10 / (vocab - 2)
    by_hand = 0.55 * math.log(0.55 / 0.34) + 0.38 * math.log(0.38 / 0.56) + 0.07 * math.log(rest_p / rest_q)
    assert first.kl[1] == pytest.approx(by_hand, rel=1e-4)
    assert comparison.conditions[1].mean_kl == pytest.approx(by_hand / 2, rel=1e-4)
    assert comparison.conditions[0].total_logprob == pytest.approx(math.log(0.55) + math.log(0.9), rel=1e-5)
    assert comparison.conditions[1].argmax_agreement == 1


def test_teacher_forced_scores_equal_a_manual_forward_pass(tiny_gemma):
    model, tokenizer = tiny_gemma
    continuation = "def hello():\n    print('hello')"
    comparison = compare_conditions(model, tokenizer, PROMPT, [VARIANT], continuation=continuation,
                                    config=CompareConfig(top_k=3))
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    assert comparison.continuation_ids == cont_ids and comparison.continuation_source == "given"
    for c, prompt in enumerate([PROMPT, VARIANT]):
        prompt_ids = encode_prompt(tokenizer, prompt)
        assert comparison.conditions[c].prompt_tokens == len(prompt_ids)
        total = 0.0
        for i in (0, 3, len(cont_ids) - 1):
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([prompt_ids + cont_ids[:i]])).logits[0, -1].float()
            probs = torch.softmax(logits, -1)
            pos = comparison.positions[i]
            assert pos.token_probs[c] == pytest.approx(float(probs[cont_ids[i]]), rel=1e-4)
            assert pos.token_ranks[c] == int((probs > probs[cont_ids[i]]).sum()) + 1
            assert pos.argmax[c] == int(probs.argmax())
            top = probs.topk(3).indices.tolist()
            assert set(top) <= set(pos.candidate_ids)
            for tid in top:
                j = pos.candidate_ids.index(tid)
                assert pos.probs[c][j] == pytest.approx(float(probs[tid]), rel=1e-4)
        with torch.inference_mode():
            full = model(input_ids=torch.tensor([prompt_ids + cont_ids])).logits[0].float()
        log_probs = torch.log_softmax(full[len(prompt_ids) - 1:-1], -1)
        total = float(log_probs.gather(-1, torch.tensor(cont_ids)[:, None]).sum())
        assert comparison.conditions[c].total_logprob == pytest.approx(total, rel=1e-4)


def test_kl_between_prompt_and_variant_by_hand(tiny_gemma):
    model, tokenizer = tiny_gemma
    comparison = compare_conditions(model, tokenizer, PROMPT, [VARIANT], continuation="def f():",
                                    config=CompareConfig())
    cont_ids = comparison.continuation_ids
    with torch.inference_mode():
        p = torch.softmax(model(input_ids=torch.tensor([encode_prompt(tokenizer, PROMPT) + cont_ids[:2]]))
                          .logits[0, -1].double(), -1)
        q = torch.softmax(model(input_ids=torch.tensor([encode_prompt(tokenizer, VARIANT) + cont_ids[:2]]))
                          .logits[0, -1].double(), -1)
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    assert comparison.positions[2].kl[0] == 0.0
    assert comparison.positions[2].kl[1] == pytest.approx(by_hand, rel=1e-3, abs=1e-8)


def test_generated_continuation_is_greedy_under_the_first_condition(tiny_gemma):
    from tunelens.inspect.trace import TraceConfig, trace_generate

    model, tokenizer = tiny_gemma
    comparison = compare_conditions(model, tokenizer, PROMPT, [VARIANT], config=CompareConfig(max_new_tokens=5))
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=5))
    assert comparison.continuation_source == "generated"
    assert comparison.continuation_ids == [s.token_id for s in trace.steps]
    # Greedy under the reference: every continuation token is the reference's argmax.
    assert all(p.token_ranks[0] == 1 and p.argmax[0] == p.token_id for p in comparison.positions)


def _perturbed_lora():
    from tunelens.testing import tiny_lora_model

    return tiny_lora_model("gemma3", seed=5, targets=("v_proj",), scale=1.0, noise_seed=1)


def test_adapter_and_base_are_both_conditions():
    from tunelens.model.state import adapter_off

    model, tokenizer = _perturbed_lora()
    comparison = compare_conditions(model, tokenizer, PROMPT, [VARIANT], continuation="def f():")
    assert [c.name for c in comparison.conditions] == [
        "adapter · prompt", "adapter · variant 1", "base · prompt", "base · variant 1"]
    assert [c.adapter for c in comparison.conditions] == [True, True, False, False]
    assert comparison.adapter_canary["max_abs_logit_diff"] > 0
    ids = encode_prompt(tokenizer, PROMPT) + comparison.continuation_ids[:1]
    with torch.inference_mode(), adapter_off(model):
        base = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    tid = comparison.continuation_ids[1]
    assert comparison.positions[1].token_probs[2] == pytest.approx(float(base[tid]), rel=1e-4)
    assert comparison.positions[1].token_probs[0] != pytest.approx(comparison.positions[1].token_probs[2], rel=1e-3)


def test_zero_initialised_adapter_stops_compare():
    from peft import LoraConfig, get_peft_model

    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("gemma3", seed=6)
    fresh = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    with pytest.raises(UserError, match="adapter canary"):
        compare_conditions(fresh, tokenizer, PROMPT, [], continuation="x")


def test_condition_plan_puts_the_reference_first():
    plan = condition_plan("p", ["v1", "v2"], with_adapter=True)
    assert [(name, on, text) for name, on, text, _ in plan] == [
        ("adapter · prompt", True, "p"), ("adapter · variant 1", True, "v1"), ("adapter · variant 2", True, "v2"),
        ("base · prompt", False, "p"), ("base · variant 1", False, "v1"), ("base · variant 2", False, "v2")]


def test_watch_resolution(tiny_gemma):
    _, tokenizer = tiny_gemma
    entry = resolve_watch(tokenizer, "print")
    assert entry.token_id == tokenizer.convert_tokens_to_ids("print") and entry.note == "vocabulary entry"
    long = resolve_watch(tokenizer, "xyzzy plugh")
    ids = tokenizer("xyzzy plugh", add_special_tokens=False)["input_ids"]
    assert long.token_id == ids[0] and long.note == f"first of {len(ids)} tokens"


def test_memory_budget_is_a_clear_error(tiny_gemma):
    model, tokenizer = tiny_gemma
    with pytest.raises(UserError, match="GiB of log-probabilities"):
        compare_conditions(model, tokenizer, PROMPT, [VARIANT], continuation="def f(): pass",
                           config=CompareConfig(max_kept_bytes=1000))


def test_comparison_round_trips_and_renders(tiny_gemma, tmp_path):
    model, tokenizer = tiny_gemma
    comparison = compare_conditions(model, tokenizer, PROMPT, [VARIANT], continuation="def f():\n    pass",
                                    config=CompareConfig(watch=("print",)))
    path = comparison.save(tmp_path / "compare.json")
    loaded = Comparison.load(path)
    assert loaded.to_json() == comparison.to_json()
    html = write_compare_html(loaded, tmp_path / "c.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=" not in html
    assert html.count('class="tok') == len(comparison.positions)
    broken = json.loads(path.read_text())
    del broken["positions"]
    path.write_text(json.dumps(broken))
    with pytest.raises(UserError, match="missing field 'positions'"):
        Comparison.load(path)


def test_cli_compare(tiny_model_dir, tmp_path):
    from tunelens.cli import app

    out, html = tmp_path / "c.json", tmp_path / "c.html"
    result = CliRunner().invoke(app, ["compare", "-m", str(tiny_model_dir), "-p", PROMPT, "--variant", VARIANT,
                                      "--continuation", "def f():", "--watch", "print", "--out", str(out),
                                      "--html", str(html)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["format"] == "tunelens.compare" and len(data["conditions"]) == 2
    assert "flips:" in result.output and html.is_file()
    empty = CliRunner().invoke(app, ["compare", "-m", str(tiny_model_dir), "-p", PROMPT, "--variant", "",
                                     "--out", str(out)])
    assert empty.exit_code == 2 and "variant is empty" in empty.output
