"""End to end on the real embedded models (the first run dequantizes and caches them: about a minute)."""

import pytest

from tunelens.engine.generate import SamplingConfig, generate_batch, stream_generate
from tunelens.model.load import load_model
from tunelens.model.prompts import encode_pair, encode_prompt, render_pair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


def test_gemma_continues_python_for_real(gemma):
    model, tok = gemma
    text = "".join(stream_generate(model, tok, "def add(a, b):", SamplingConfig(max_new_tokens=12), raw=True))
    assert "return a + b" in text


@pytest.mark.parametrize("spec", ["gemma3-270m", "smollm2-135m"])
def test_prompt_is_token_prefix_of_pair_for_embedded_models(spec):
    from tunelens.model.specs import load_tokenizer

    tok = load_tokenizer(spec)
    instruction, response = "Write a function that reverses a string.", "def rev(s):\n    return s[::-1]\n"
    prompt_ids = encode_prompt(tok, instruction)
    pair_ids = tok(render_pair(tok, instruction, response), add_special_tokens=False)["input_ids"]
    assert pair_ids[: len(prompt_ids)] == prompt_ids
    assert encode_pair(tok, instruction, response)[1] == len(prompt_ids)


def test_smollm2_answers_an_instruction():
    model, tok = load_model("smollm2-135m")
    [answer] = generate_batch(model, tok, ["Write a Python function that adds two numbers."],
                              SamplingConfig(max_new_tokens=40))
    assert "def " in answer
    assert model.config.model_type == "llama" and tok.chat_template
