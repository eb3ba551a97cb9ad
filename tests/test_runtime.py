"""Process-wide settings are changed for a block only: torch's thread count comes back after the block
and after an eval run that set its own."""

import pytest
import torch

from tunelens.evaluate.runner import EvalConfig, run_eval
from tunelens.evaluate.suite import Case
from tunelens.runtime import torch_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_count_holds_inside_the_block_and_comes_back_after(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("a failing stage still restores the count")
    assert torch.get_num_threads() == 2


def test_none_leaves_the_count_alone(two_threads):
    with torch_threads(None):
        torch.set_num_threads(1)  # what the block does itself is its own business
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 1


class CountingBackend:
    """Answers every prompt with a pushback and notes the thread count it generated under."""

    roles = ("base",)

    def __init__(self):
        self.threads = []

    def generate(self, prompts, sampling, role):
        self.threads.append(torch.get_num_threads())
        return ["This contradicts itself: which of the two limits should hold?"] * len(prompts)

    def describe(self):
        return {"backend": "counting"}


def test_an_eval_run_generates_with_its_threads_and_restores_the_count(two_threads, tmp_path):
    case = Case("c1", "t", "contradiction", "Return a list that is empty and has 3 items.", "pushback")
    backend = CountingBackend()
    run_eval(EvalConfig(samples=0, threads=1), tmp_path, cases=[case], backend=backend)
    assert backend.threads == [1] and torch.get_num_threads() == 2
