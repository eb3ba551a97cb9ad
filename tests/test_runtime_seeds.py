"""Library code seeds the random generators only for the length of a call: a seeded call gives the same
result every time and leaves torch's, Python's and NumPy's global generators where its caller had them."""

import random

import numpy as np
import pytest
import torch

from tunelens.runtime import seeded


def _draws() -> tuple:
    """One draw from each global generator (advances them all)."""
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


@pytest.fixture
def global_states():
    """The global generators' states before the test, put back after it, and a check that compares."""
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    saved = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())

    def unchanged() -> bool:
        torch_state, python_state, numpy_state = saved
        return (torch.equal(torch.random.get_rng_state(), torch_state) and random.getstate() == python_state
                and all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state)))

    return unchanged


def test_seeded_block_is_reproducible_and_restores_every_generator(global_states):
    with seeded(7):
        first = _draws()
    assert global_states()
    with seeded(7):
        again = _draws()
    with seeded(8):
        other = _draws()
    assert first == again and first != other
    assert global_states()


def test_seeded_restores_after_an_error_and_none_leaves_the_stream_alone(global_states):
    with pytest.raises(RuntimeError), seeded(3):
        torch.rand(5)
        raise RuntimeError("a failing stage still restores the generators")
    assert global_states()
    with seeded(None):
        torch.rand(1)
    assert not global_states()  # None draws from the caller's own stream, as an unseeded call should


def test_sampled_generation_is_reproducible_and_keeps_the_callers_generator(global_states):
    from tunelens.engine.generate import SamplingConfig, generate_batch
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("gemma3", seed=0)
    torch.manual_seed(1234)  # building the model is not what this test is about
    saved = torch.random.get_rng_state()
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=5)
    prompts = ["Write a function.", "Print hello."]
    first = generate_batch(model, tokenizer, prompts, sampling)
    assert torch.equal(torch.random.get_rng_state(), saved)
    assert generate_batch(model, tokenizer, prompts, sampling) == first
    other = generate_batch(model, tokenizer, prompts, SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=8,
                                                                       seed=6))
    assert other != first


def test_building_a_tiny_model_or_a_lora_leaves_the_generator_alone():
    from tunelens.train.lora_setup import placement_table, wrap_lora
    from tunelens.testing import tiny_model
    from tunelens.train.config import TrainConfig

    torch.manual_seed(99)
    saved = torch.random.get_rng_state()
    model, _ = tiny_model("llama", seed=3)
    again, _ = tiny_model("llama", seed=3)
    assert torch.equal(torch.random.get_rng_state(), saved)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    config = TrainConfig(seed=2)
    peft_a = wrap_lora(model, config, placement_table(model, config))
    peft_b = wrap_lora(again, config, placement_table(again, config))
    assert torch.equal(torch.random.get_rng_state(), saved)
    lora_a = {k: v for k, v in peft_a.state_dict().items() if "lora_A" in k}
    assert lora_a and all(torch.equal(v, peft_b.state_dict()[k]) for k, v in lora_a.items())
