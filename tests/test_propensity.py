"""Teacher-forced propensity: batched continuation scores against the plain one-at-a-time sum."""

import math

import pytest
import torch

from tunelens.model.prompts import encode_prompt
from tunelens.inspect.propensity import COMPLY_OPENINGS, continuation_logprobs, propensity
from tunelens.testing import tiny_model


def plain_logprob(model, tokenizer, prefix, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = torch.tensor([prefix + ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=full).logits.float(), dim=-1)[0]
    return sum(float(logprobs[len(prefix) + i - 1, token]) for i, token in enumerate(ids))


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_batched_scores_equal_the_plain_sum(arch):
    model, tokenizer = tiny_model(arch)
    prefix = encode_prompt(tokenizer, "Write a function that adds two numbers.")
    texts = ["def ", "```python\n", "This spec is contradictory", "x"]
    batched = continuation_logprobs(model, tokenizer, prefix, texts, batch_size=3)
    for text, score in zip(texts, batched):
        assert score == pytest.approx(plain_logprob(model, tokenizer, prefix, text), abs=1e-4)


def test_propensity_is_the_log_odds_of_the_two_sets():
    model, tokenizer = tiny_model("gemma3")
    lean = ("I can't", "No")
    result = propensity(model, tokenizer, "Add two numbers.", behaviour_openings=lean)
    prefix = encode_prompt(tokenizer, "Add two numbers.")
    a = [plain_logprob(model, tokenizer, prefix, t) for t in lean]
    b = [plain_logprob(model, tokenizer, prefix, t) for t in COMPLY_OPENINGS]
    expected = math.log(sum(map(math.exp, a))) - math.log(sum(map(math.exp, b)))
    assert result.log_odds == pytest.approx(expected, abs=1e-4)
    assert result.share == pytest.approx(1 / (1 + math.exp(-expected)))
    assert result.best_behaviour in lean and result.best_comply in COMPLY_OPENINGS


def test_identical_sets_give_even_odds_and_a_subset_gives_its_share():
    model, tokenizer = tiny_model("gemma3")
    same = propensity(model, tokenizer, "Add two numbers.", behaviour_openings=COMPLY_OPENINGS)
    assert same.log_odds == pytest.approx(0.0, abs=1e-9) and same.share == pytest.approx(0.5)
    # One opening of the comply set against the whole set: its share of the set's probability mass.
    prefix = encode_prompt(tokenizer, "Add two numbers.")
    b = [plain_logprob(model, tokenizer, prefix, t) for t in COMPLY_OPENINGS]
    one = propensity(model, tokenizer, "Add two numbers.", behaviour_openings=COMPLY_OPENINGS[:1])
    assert one.log_odds == pytest.approx(b[0] - math.log(sum(map(math.exp, b))), abs=1e-4)


def test_empty_continuation_is_refused():
    model, tokenizer = tiny_model("gemma3")
    with pytest.raises(ValueError, match="at least one token"):
        continuation_logprobs(model, tokenizer, [1, 2], [""])
