import pytest

from tunelens.model.prompts import (encode_pair, encode_prompt, prompt_style, render_pair, render_prompt, stop_token_ids, strip_stop_text)

INSTRUCTION = "Write a function `add(a, b)` that returns the sum."
RESPONSE = "def add(a, b):\n    return a + b\n"


def test_gemma_turn_format_is_used_without_a_template(tiny_gemma):
    _, tok = tiny_gemma
    assert prompt_style(tok).kind == "gemma_turns"
    assert render_prompt(tok, INSTRUCTION) == (
        f"<bos><start_of_turn>user\n{INSTRUCTION}<end_of_turn>\n<start_of_turn>model\n")
    assert render_pair(tok, INSTRUCTION, RESPONSE).endswith(RESPONSE + "<end_of_turn>\n")


def test_chat_template_is_used_when_present(tiny_llama):
    _, tok = tiny_llama
    style = prompt_style(tok)
    assert style.kind == "chat_template"
    assert style.end_of_turn == "<|im_end|>\n"
    assert render_prompt(tok, INSTRUCTION).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama"])
def test_prompt_is_a_token_prefix_of_the_pair(fixture, request):
    _, tok = request.getfixturevalue(fixture)
    prompt_ids = encode_prompt(tok, INSTRUCTION)
    pair_text_ids = tok(render_pair(tok, INSTRUCTION, RESPONSE), add_special_tokens=False)["input_ids"]
    assert pair_text_ids[: len(prompt_ids)] == prompt_ids
    ids, prompt_len = encode_pair(tok, INSTRUCTION, RESPONSE)
    assert prompt_len == len(prompt_ids) and ids[:prompt_len] == prompt_ids
    assert tok.decode(ids[prompt_len:]) == RESPONSE + prompt_style(tok).end_of_turn


@pytest.mark.parametrize("fixture,marker", [("tiny_gemma", "<end_of_turn>"), ("tiny_llama", "<|im_end|>")])
def test_end_of_turn_stops_generation(fixture, marker, request):
    _, tok = request.getfixturevalue(fixture)
    assert tok.convert_tokens_to_ids(marker) in stop_token_ids(tok)
    assert strip_stop_text(tok, f"x = 1{marker}\nrest") == "x = 1"


def test_chatml_with_a_default_system_prompt_like_qwen():
    """Qwen2.5's template adds its own system turn when none is given: the prompt layer keeps it, a given
    system text replaces it, and the prompt stays a token prefix of the training pair either way."""
    from tunelens.model.prompts import conversation_segments
    from tunelens.testing import CHATML_DEFAULT_SYSTEM, CHATML_DEFAULT_SYSTEM_TEMPLATE, tiny_tokenizer

    tok = tiny_tokenizer(chat_template=CHATML_DEFAULT_SYSTEM_TEMPLATE)
    assert render_prompt(tok, INSTRUCTION) == (
        f"<|im_start|>system\n{CHATML_DEFAULT_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    own = render_prompt(tok, INSTRUCTION, system="Answer in Python 3.")
    assert own.startswith("<|im_start|>system\nAnswer in Python 3.<|im_end|>\n") and CHATML_DEFAULT_SYSTEM not in own
    assert prompt_style(tok).end_of_turn == "<|im_end|>\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)
    for system in (None, "Answer in Python 3."):
        prompt_ids = encode_prompt(tok, INSTRUCTION, system)
        pair_ids = tok(render_pair(tok, INSTRUCTION, RESPONSE, system), add_special_tokens=False)["input_ids"]
        assert pair_ids[: len(prompt_ids)] == prompt_ids
        ids, prompt_len = encode_pair(tok, INSTRUCTION, RESPONSE, system)
        assert (ids[:prompt_len], tok.decode(ids[prompt_len:])) == (prompt_ids, RESPONSE + "<|im_end|>\n")

    class Turn:
        def __init__(self, role, content):
            self.role, self.content, self.trained = role, content, True

    turns = [Turn("user", INSTRUCTION), Turn("assistant", RESPONSE), Turn("user", "Now in one line."),
             Turn("assistant", "add = lambda a, b: a + b\n")]
    segments = conversation_segments(tok, turns)
    assert segments[0] == (render_prompt(tok, INSTRUCTION), False)
    assert "".join(text for text, _ in segments).count(CHATML_DEFAULT_SYSTEM) == 1
