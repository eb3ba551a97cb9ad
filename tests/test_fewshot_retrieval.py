"""Few-shot retrieval: the gate stores responses, nearest_examples returns the known nearest pairs in
the order they are shown, and the K=0 prompt is today's prompt exactly."""

import json

import pytest

from tunelens.errors import UserError
from tunelens.retrieval.fewshot import (Example, FewShot, encode_few_shot, injected, nearest_examples, nearest_examples_batch, render_few_shot)
from tunelens.gate import Gate, build_gate, build_gate_from_file
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.model.prompts import encode_prompt
from tunelens.testing import tiny_tokenizer

PAIRS = [
    ("Write a Python function that reverses a string.", "def rev(s):\n    return s[::-1]"),
    ("Write a Python function that checks whether a number is prime.", "def is_prime(n):\n    ..."),
    ("Write a Python function that merges two sorted lists.", "def merge(a, b):\n    ..."),
    ("Bake a sourdough loaf.", "Mix flour and water."),
]


def pair_gate(path, pairs=PAIRS):
    return build_gate([i for i, _ in pairs], path, ids=[f"p{n}" for n in range(len(pairs))],
                      embedder=HashingEmbedder(256), k=2, responses=[r for _, r in pairs])


def test_the_gate_stores_each_pairs_response(tmp_path):
    pair_gate(tmp_path / "gate")
    rows = [json.loads(line) for line in (tmp_path / "gate" / "entries.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "p0", "instruction": PAIRS[0][0], "response": PAIRS[0][1]}
    assert Gate.load(tmp_path / "gate").entries[2]["response"] == PAIRS[2][1]


def test_gate_build_from_a_pair_file_keeps_responses(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": i, "output": r}) + "\n" for i, r in PAIRS))
    gate = build_gate_from_file(data, tmp_path / "gate", k=2, embedder=HashingEmbedder(64))
    assert [e["response"] for e in gate.entries] == [r for _, r in PAIRS]


def test_nearest_examples_are_the_known_neighbours_nearest_last(tmp_path):
    gate = pair_gate(tmp_path / "gate")
    query = "Write a Python function that reverses a string in place."
    found = nearest_examples(Gate.load(tmp_path / "gate"), query, 2)
    assert [e.id for e in found][-1] == "p0"  # the nearest sits right before the request
    assert found[-1].response == PAIRS[0][1]
    sims = [e.similarity for e in found]
    assert sims == sorted(sims) and sims[0] < sims[1]
    # The recorded similarity is the cosine of the two embeddings.
    vectors = HashingEmbedder(256).encode([query, PAIRS[0][0]])
    assert found[-1].similarity == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-4)
    assert "p3" not in [e.id for e in found]  # the bread recipe is the farthest pair
    assert nearest_examples(gate, query, 0) == []


def test_k_above_the_gate_size_returns_every_pair(tmp_path):
    gate = pair_gate(tmp_path / "gate")
    assert sorted(e.id for e in nearest_examples(gate, "Bake bread.", 10)) == ["p0", "p1", "p2", "p3"]


def test_a_gate_without_responses_is_refused_for_few_shot(tmp_path):
    gate = build_gate([i for i, _ in PAIRS], tmp_path / "old", embedder=HashingEmbedder(64))
    with pytest.raises(UserError, match="stores no responses.*gate build --data"):
        nearest_examples(gate, "Reverse a string.", 2)
    with pytest.raises(UserError, match="stores no responses"):
        FewShot(2, Gate.load(tmp_path / "old"))
    assert FewShot(0, gate).for_one("x") == []  # K=0 never needs responses


def test_few_shot_retrieves_once_per_instruction(tmp_path):
    gate = pair_gate(tmp_path / "gate")
    calls = []
    real = gate.embedder.encode
    gate._embedder = type("Counting", (), {"encode": lambda self, texts, **kw: calls.append(len(texts)) or real(texts),
                                           "name": "hashing-256"})()
    few = FewShot(1, gate)
    first = few.for_each(["Reverse a string.", "Merge two sorted lists.", "Reverse a string."])
    assert calls == [2]
    assert few.for_each(["Merge two sorted lists."]) == [first[1]] and calls == [2]
    assert injected(first[1]) == [{"id": "p2", "similarity": first[1][0].similarity}]


def test_batch_retrieval_matches_one_at_a_time(tmp_path):
    gate = pair_gate(tmp_path / "gate")
    queries = ["Reverse a string.", "Is 7 prime?", "Bread please."]
    assert nearest_examples_batch(gate, queries, 3) == [nearest_examples(gate, q, 3) for q in queries]


@pytest.mark.parametrize("chat_template", [False, True])
def test_k0_tokens_are_the_plain_prompts(chat_template):
    tokenizer = tiny_tokenizer(chat_template=chat_template)
    assert encode_few_shot(tokenizer, [], "Reverse a list.") == encode_prompt(tokenizer, "Reverse a list.")
    shown = [Example("Add.", "def add(a, b): return a + b", id="1", similarity=0.3)]
    ids = encode_few_shot(tokenizer, shown, "Reverse a list.")
    assert ids == tokenizer(render_few_shot(tokenizer, shown, "Reverse a list."), add_special_tokens=False)["input_ids"]
    assert len(ids) > len(encode_prompt(tokenizer, "Reverse a list."))


def test_generation_with_examples_sends_the_few_shot_prompt(monkeypatch):
    from tunelens.engine.generate import SamplingConfig, generate_batch, prompt_ids_for
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model()
    shown = [Example("Add.", "def add(a, b): return a + b", id="1", similarity=0.3)]
    assert prompt_ids_for(tokenizer, "Sub.", False, shown) == encode_few_shot(tokenizer, shown, "Sub.")
    assert prompt_ids_for(tokenizer, "Sub.", False, ()) == encode_prompt(tokenizer, "Sub.")
    seen = []
    import tunelens.engine.generate as generation

    class Spy(generation.BatchDecoder):  # what the one decode loop is given, batch by batch
        def __init__(self, model, rows=(), **kw):
            seen.append([list(row.prompt_ids) for row in rows])
            super().__init__(model, rows, **kw)

    monkeypatch.setattr(generation, "BatchDecoder", Spy)
    sampling = SamplingConfig(max_new_tokens=3)
    plain = generate_batch(model, tokenizer, ["Sub."], sampling)
    assert generate_batch(model, tokenizer, ["Sub."], sampling, examples=[[]]) == plain
    generate_batch(model, tokenizer, ["Sub.", "Sub."], sampling, examples=[shown, []])
    assert seen[0] == seen[1] == [encode_prompt(tokenizer, "Sub.")]
    assert seen[2] == [encode_few_shot(tokenizer, shown, "Sub."), encode_prompt(tokenizer, "Sub.")]
    with pytest.raises(ValueError):
        prompt_ids_for(tokenizer, "Sub.", True, shown)
    with pytest.raises(ValueError):
        generate_batch(model, tokenizer, ["Sub."], sampling, examples=[])
