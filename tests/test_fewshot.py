"""The few-shot prompt is the plain prompt when no example is given, and a longer conversation otherwise."""

from tunelens.retrieval.fewshot import Example, example_turns, render_few_shot
from tunelens.model.prompts import render_prompt
from tunelens.testing import tiny_tokenizer


def test_no_examples_is_the_plain_prompt():
    tokenizer = tiny_tokenizer()
    assert render_few_shot(tokenizer, [], "Reverse a list.") == render_prompt(tokenizer, "Reverse a list.")


def test_examples_come_first_as_earlier_exchanges():
    examples = [Example("Add two numbers.", "def add(a, b):\n    return a + b", id="7", similarity=0.5)]
    assert example_turns(examples, "Reverse a list.") == [
        ("user", "Add two numbers."), ("assistant", "def add(a, b):\n    return a + b"), ("user", "Reverse a list.")]
    tokenizer = tiny_tokenizer()
    text = render_few_shot(tokenizer, examples, "Reverse a list.")
    assert text.endswith(render_prompt(tokenizer, "Reverse a list.")[len(tokenizer.bos_token or ""):])
    assert text.index("Add two numbers.") < text.index("Reverse a list.")


def test_example_round_trips_through_a_dict():
    example = Example("a", "b", id="x", similarity=0.25)
    assert Example.from_dict(example.to_dict()) == example
