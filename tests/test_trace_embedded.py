"""trace and compare on the real embedded Gemma 3 270M (slow: loads the model)."""

import pytest
import torch

pytestmark = pytest.mark.slow

PROMPT = "Write a Python function that prints hello."


@pytest.fixture(scope="module")
def gemma():
    from tunelens.model.load import load_model

    return load_model("gemma3-270m", device="cpu")


def test_greedy_trace_on_gemma_equals_generate_and_a_plain_forward(gemma):
    from tunelens.model.prompts import encode_prompt, stop_token_ids
    from tunelens.inspect.trace import TraceConfig, trace_generate

    model, tokenizer = gemma
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=8, top_k=5))
    ids = torch.tensor([encode_prompt(tokenizer, PROMPT)])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             top_k=None, top_p=None, temperature=None, eos_token_id=stop_token_ids(tokenizer))
        full = model(input_ids=out[:, :-1]).logits[0, ids.shape[1] - 1:].float()
    assert [s.token_id for s in trace.steps] == out[0, ids.shape[1]:].tolist()
    probs = torch.softmax(full, -1)
    for step in trace.steps:
        assert step.prob == pytest.approx(float(probs[step.step, step.token_id]), rel=1e-3, abs=1e-6)
        assert [a.token_id for a in step.top][:2] == probs[step.step].topk(2).indices.tolist()


def test_compare_on_gemma_scores_the_traced_continuation(gemma):
    from tunelens.inspect.compare import CompareConfig, compare_conditions

    model, tokenizer = gemma
    # The reference itself again as a third condition: its KL from the reference is exactly 0, a value the
    # computation must reach (a KL that is only clamped at 0 would pass `>= 0` whatever it computed).
    comparison = compare_conditions(model, tokenizer, PROMPT, [PROMPT + " Prefer Python 3, not Python 2.", PROMPT],
                                    config=CompareConfig(max_new_tokens=8, watch=("print",)))
    assert len(comparison.conditions) == 3 and len(comparison.positions) == len(comparison.continuation_ids)
    # Generated greedily under the reference: each token is the reference's argmax.
    assert all(p.argmax[0] == p.token_id for p in comparison.positions)
    assert all(p.kl[0] == 0 and p.kl[2] == pytest.approx(0, abs=1e-6) for p in comparison.positions)
    # Another prompt is another distribution at some position, and each condition's mean is its positions' mean.
    assert max(p.kl[1] for p in comparison.positions) > 1e-4
    for index, condition in enumerate(comparison.conditions):
        assert condition.mean_kl == pytest.approx(
            sum(p.kl[index] for p in comparison.positions) / len(comparison.positions), abs=1e-5)
