import os

import pytest

# Tests never touch the network; transformers and the hub client must not even try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and far faster than two threads on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_gemma():
    from tunelens.testing import tiny_model

    return tiny_model("gemma3")


@pytest.fixture(scope="session")
def tiny_llama():
    from tunelens.testing import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_llama):
    """The tiny Llama saved as a model directory, so load_model can open it like a user's checkpoint."""
    model, tokenizer = tiny_llama
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
