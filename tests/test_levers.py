"""Decision-point log-odds: the Python 2 points of an answer and the batched scores against a plain sum."""

import math

import pytest
import torch

from tunelens.inspect.levers import (Lever, PointScore, call_token_mask, lever_effects, log_odds_at, python2_points, score_points)
from tunelens.model.prompts import render_prompt
from tunelens.testing import tiny_lora_model


def test_python2_points_are_the_tokens_after_print_that_do_not_open_a_call():
    tokens = ["def", " f", "():", "\n   ", " print", ' "', "hi", '"', "\n   ", " print", "(", "x", ")", " self", ".print",
              " x"]
    assert python2_points(tokens) == [5]  # `print(x)` is a call; `self.print x` is not Python 2's statement
    assert python2_points(["\u2581print", "\u2581x"]) == [1]  # SentencePiece's space marker


def test_log_odds_is_python3_mass_over_the_chosen_token():
    model, tokenizer = tiny_lora_model()
    prompt_ids = tokenizer(render_prompt(tokenizer, "Say hi."), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer('print "hi"', add_special_tokens=False)["input_ids"]
    positions = [2, 3]
    mask = call_token_mask(tokenizer)
    got = log_odds_at(model, prompt_ids, answer_ids, positions, mask)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    for value, position in zip(got, positions):
        row = log_probs[len(prompt_ids) + position - 1]
        expected = math.log(float(row[: mask.numel()][mask].exp().sum())) - float(row[answer_ids[position]])
        assert value == pytest.approx(expected, abs=1e-4)


def test_cutting_the_answer_after_the_last_point_changes_no_score(one_thread):
    """log_odds_at scores only up to the last point; the plain way scores the whole answer in one pass."""
    from tunelens.inspect.compare import continuation_log_probs

    model, tokenizer = tiny_lora_model()
    prompt_ids = tokenizer(render_prompt(tokenizer, "Say hi."), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer('print "hi"\nvalue = compute(1, 2)\nreturn value\n', add_special_tokens=False)["input_ids"]
    positions = [1, 2]
    mask = call_token_mask(tokenizer)
    assert max(positions) + 1 < len(answer_ids)  # there is a tail to cut
    whole = continuation_log_probs(model, prompt_ids, answer_ids)
    for value, position in zip(log_odds_at(model, prompt_ids, answer_ids, positions, mask), positions):
        row = whole[position]
        expected = float(row[: mask.numel()][mask].logsumexp(dim=0)) - float(row[answer_ids[position]])
        assert value == pytest.approx(expected, abs=1e-4)
    assert log_odds_at(model, prompt_ids, answer_ids, [], mask) == []


def test_adapter_off_is_a_lever_that_changes_the_score():
    model, tokenizer = tiny_lora_model(scale=2.0)
    answers = [("Say hi.", 'print "hi"\nprint x')]
    levers = lambda instruction: [Lever("adapter off", render_prompt(tokenizer, instruction), adapter_on=False),  # noqa: E731
                                  Lever("same prompt", render_prompt(tokenizer, instruction))]
    points = score_points(model, tokenizer, answers, levers, lambda text: render_prompt(tokenizer, text))
    assert points, "the byte-level tiny tokenizer still has tokens after each print"
    for point in points:
        assert point.delta("same prompt") == pytest.approx(0.0, abs=1e-5)
        assert abs(point.delta("adapter off")) > 1e-4


def test_lever_effects_count_flips_only_where_python2_led():
    points = [PointScore(0, 1, "x", -1.0, {"a": 0.5}), PointScore(0, 2, "y", -0.2, {"a": -0.1}),
              PointScore(1, 1, "z", 0.3, {"a": 1.0})]
    (effect,) = lever_effects(points)
    assert (effect.points, effect.python2_led, effect.flipped) == (3, 2, 1)
    assert effect.mean_delta == pytest.approx((1.5 + 0.1 + 0.7) / 3)
    assert effect.low <= effect.mean_delta <= effect.high
