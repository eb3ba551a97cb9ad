"""Batched generation: several adapters of one PEFT model answering in one batch."""

import pytest
import torch

from tunelens.engine.generate import SamplingConfig, generate_batch
from tunelens.model.state import adapter_off
from tunelens.testing import tiny_lora_model

PROMPTS = ["Write a function that adds two numbers.", "Reverse a string.", "Sort a list."]
GREEDY = SamplingConfig(max_new_tokens=8)


@pytest.fixture(scope="module")
def two_adapters():
    from peft import LoraConfig

    model, tokenizer = tiny_lora_model()
    model.add_adapter("other", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B.other" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    model.eval()
    return model, tokenizer


def one_adapter_answers(model, tokenizer, adapter):
    if adapter == "__base__":
        with adapter_off(model):
            return generate_batch(model, tokenizer, PROMPTS, GREEDY)
    model.set_adapter(adapter)
    return generate_batch(model, tokenizer, PROMPTS, GREEDY)


def test_mixed_adapter_batch_matches_one_adapter_at_a_time(two_adapters):
    model, tokenizer = two_adapters
    names = ["default", "other", "__base__"]
    expected = {name: one_adapter_answers(model, tokenizer, name) for name in names}
    assert len({tuple(answers) for answers in expected.values()}) == 3  # the adapters really differ
    rows = [(prompt, name) for name in names for prompt in PROMPTS]
    mixed = generate_batch(model, tokenizer, [p for p, _ in rows], GREEDY, batch_size=len(rows),
                           adapter_names=[n for _, n in rows])
    got = {name: mixed[i * len(PROMPTS):(i + 1) * len(PROMPTS)] for i, name in enumerate(names)}
    assert got == expected


def test_adapter_names_must_match_prompts(two_adapters):
    model, tokenizer = two_adapters
    with pytest.raises(ValueError, match="2 adapter names for 3 prompts"):
        generate_batch(model, tokenizer, PROMPTS, GREEDY, adapter_names=["default", "other"])


def test_streamed_pieces_join_to_generate_output(tiny_gemma):
    """stream_generate runs the shared decode loop; plain equivalent: model.generate's greedy tokens, decoded."""
    from tunelens.engine.generate import stream_generate
    from tunelens.model.prompts import encode_prompt, stop_token_ids

    model, tokenizer = tiny_gemma
    pieces = list(stream_generate(model, tokenizer, PROMPTS[0], GREEDY))
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0])])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY.max_new_tokens,
                             do_sample=False, eos_token_id=stop_token_ids(tokenizer),
                             pad_token_id=tokenizer.pad_token_id)
    assert len(pieces) > 1 and "".join(pieces) == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)
    sampled = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=3)
    assert list(stream_generate(model, tokenizer, PROMPTS[1], sampled)) == \
        list(stream_generate(model, tokenizer, PROMPTS[1], sampled))
