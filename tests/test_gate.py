"""The retrieval gate: exact index, trust signals, AUROC, threshold, calibration files, routing, CLI."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from tunelens.errors import UserError
from tunelens.gate import (Gate, auroc, build_gate, calibrate, coverage_curve, fit_logistic, model_signals, read_queries, threshold_for_coverage)
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.retrieval.index import top_k

IN_DOMAIN_INDEX = [
    "Write a Python function that reverses a string.",
    "Write a Python function that returns the sum of a list of numbers.",
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function that merges two sorted lists.",
    "Write a Python function that parses a CSV line into fields.",
    "Write a Python function that computes the factorial of n.",
    "Write a Python function that removes duplicates from a list.",
]
IN_DOMAIN_QUERIES = [
    "Write a Python function that reverses a list.",
    "Write a Python function that returns the product of a list of numbers.",
    "Write a Python function that checks whether a year is a leap year.",
    "Write a Python function that counts the words in a string.",
    "Write a Python function that merges two dictionaries.",
    "Write a Python function that computes the fibonacci number n.",
]
OUT_OF_DOMAIN = [
    "Quel temps fait-il à Paris aujourd'hui ?",
    "Tell me a joke about penguins.",
    "What is the capital of Australia?",
    "Recommend a good novel for a long flight.",
    "How do I bake sourdough bread at home?",
    "Wie spät ist es in Berlin?",
]


def tiny_adapter_model(seed=0, perturb=True):
    """A tiny Gemma 3 wrapped in a LoRA adapter; nonzero B so adapter and base differ."""
    from tunelens.testing import tiny_lora_model

    return tiny_lora_model("gemma3", seed=seed, targets=("q_proj", "v_proj", "o_proj"), perturb=perturb,
                           noise_seed=seed)


@pytest.fixture
def small_gate(tmp_path):
    return build_gate(IN_DOMAIN_INDEX, tmp_path / "gate", embedder=HashingEmbedder(256), k=3)


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    sims, rows = top_k(vectors, queries, 5)
    full = queries @ vectors.T
    expected_rows = np.argsort(-full, axis=1)[:, :5]
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(sims, np.take_along_axis(full, expected_rows, axis=1))
    # k beyond the index size returns every row, sorted.
    sims_all, rows_all = top_k(vectors[:3], queries, 10)
    assert rows_all.shape == (4, 3) and np.all(np.diff(sims_all, axis=1) <= 0)


def test_auroc_by_hand_and_against_all_pairs():
    # pairs: (3>1) (3>2) (2>1) and one tie (2=2) -> (3 + 0.5) / 4
    assert auroc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([5], [5]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 6, 40), rng.integers(0, 8, 30)  # many ties
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert auroc(pos, neg) == pytest.approx(brute)
    with pytest.raises(UserError):
        auroc([], [1])


def test_threshold_keeps_the_target_share():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    assert threshold_for_coverage(scores, 0.8) == 0.2  # 8 of 10 scores are >= 0.2
    assert threshold_for_coverage(scores, 0.95) == 0.05  # 9.5 rounds up to all 10
    assert threshold_for_coverage(scores, 0.1) == 0.9
    coverage, fallback = coverage_curve(np.array(scores), np.array([0.15, 0.85]))
    # at threshold 0.9: 1/10 kept, both out-of-domain below it? 0.85 < 0.9 and 0.15 < 0.9 -> fallback 1.0
    assert coverage[1] == pytest.approx(0.1) and fallback[1] == 1.0
    assert coverage[-1] == 1.0 and fallback[-1] == 0.0  # at 0.05 everything is kept


def test_logistic_fit_separates_and_stays_finite():
    features = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1, 1])
    weights = fit_logistic(features, labels)
    assert weights[0] > 0 and np.all(np.isfinite(weights))
    assert abs(weights[1]) < 1e-6  # symmetric data: no bias


def test_build_writes_a_loadable_index(small_gate, tmp_path):
    directory = tmp_path / "gate"
    assert sorted(p.name for p in directory.iterdir()) == ["embeddings.npy", "entries.jsonl", "gate.json"]
    meta = json.loads((directory / "gate.json").read_text())
    assert meta["count"] == len(IN_DOMAIN_INDEX) and meta["embedder"] == "hashing-256"
    loaded = Gate.load(directory)
    assert loaded.vectors.shape == (len(IN_DOMAIN_INDEX), 256)
    signals = loaded.retrieval_signals([IN_DOMAIN_INDEX[2]])[0]
    assert signals.max_similarity == pytest.approx(1.0, abs=1e-5)
    assert signals.neighbours[0]["instruction"] == IN_DOMAIN_INDEX[2]
    assert signals.mean_similarity == pytest.approx(np.mean([n["similarity"] for n in signals.neighbours]), abs=1e-4)


def test_load_rejects_a_missing_or_inconsistent_gate(small_gate, tmp_path):
    with pytest.raises(UserError, match="not a gate directory"):
        Gate.load(tmp_path / "nowhere")
    meta_file = tmp_path / "gate" / "gate.json"
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()) | {"count": 99}))
    with pytest.raises(UserError, match="disagree"):
        Gate.load(tmp_path / "gate")


def test_calibrate_retrieval_only(small_gate, tmp_path):
    result = calibrate(small_gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, target_coverage=5 / 6)
    assert result.signals == ["max_similarity", "mean_similarity"]
    assert result.auroc["max_similarity"] > 0.9
    # Recompute the reported rates from the saved rule.
    gate = Gate.load(tmp_path / "gate")
    in_scores = [gate.calibration.score(s) for s in gate.retrieval_signals(IN_DOMAIN_QUERIES)]
    out_scores = [gate.calibration.score(s) for s in gate.retrieval_signals(OUT_OF_DOMAIN)]
    assert np.mean([s >= result.threshold for s in in_scores]) == pytest.approx(result.in_domain_coverage)
    assert result.in_domain_coverage >= 5 / 6
    assert np.mean([s < result.threshold for s in out_scores]) == pytest.approx(result.out_of_domain_fallback_rate)
    assert result.counts == {"in_domain": 6, "out_of_domain": 6, "folds": 5}
    assert (tmp_path / "gate" / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (tmp_path / "gate" / "calibration_scores.jsonl").read_text().splitlines()]
    assert [r["in_domain"] for r in rows] == [True] * 6 + [False] * 6
    assert np.mean([r["route"] == "base" for r in rows[6:]]) == pytest.approx(result.out_of_domain_fallback_rate)
    decision = gate.route(IN_DOMAIN_INDEX[0])
    assert decision.route == "adapter" and decision.score >= decision.threshold
    assert gate.route("Raconte-moi une blague sur les chats.").route == "base"


def test_route_needs_a_calibration(small_gate):
    with pytest.raises(UserError, match="not calibrated"):
        small_gate.route("anything")


def test_calibrate_rejects_too_few_queries(small_gate):
    with pytest.raises(UserError, match="at least 5"):
        calibrate(small_gate, IN_DOMAIN_QUERIES[:3], OUT_OF_DOMAIN)
    with pytest.raises(UserError, match="target coverage"):
        calibrate(small_gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, target_coverage=1.5)


def test_model_signals_kl_and_perplexity_by_independent_formulas():
    import torch
    import torch.nn.functional as F

    from tunelens.model.state import adapter_off
    from tunelens.model.prompts import encode_prompt

    model, tokenizer = tiny_adapter_model()
    query = "Write a Python function that reverses a string."
    (kl, ppl), = model_signals(model, tokenizer, [query])
    ids = torch.tensor([encode_prompt(tokenizer, query)])
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits[0]
        loss = model(input_ids=ids, labels=ids).loss  # transformers' own shifted mean cross-entropy
        with adapter_off(model):
            base_logits = model(input_ids=ids).logits[0]
    expected_kl = F.kl_div(F.log_softmax(base_logits, -1), F.log_softmax(adapter_logits, -1),
                           log_target=True, reduction="none").sum(-1).mean()
    assert kl == pytest.approx(float(expected_kl), rel=1e-4) and kl > 1e-3
    assert ppl == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_kl_is_zero_when_the_adapter_is_a_no_op():
    model, tokenizer = tiny_adapter_model(perturb=False)  # PEFT initialises B to zero
    (kl, ppl), = model_signals(model, tokenizer, ["hello"])
    assert abs(kl) < 1e-6 and ppl > 1


def test_calibrate_with_model_signals_and_route(small_gate, tmp_path):
    model, tokenizer = tiny_adapter_model()
    result = calibrate(small_gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, model=model, tokenizer=tokenizer)
    assert result.signals == ["max_similarity", "mean_similarity", "adapter_base_kl", "prompt_perplexity"]
    assert set(result.auroc) == set(result.signals) | {"combined"}
    for name in ("adapter_base_kl", "prompt_perplexity"):
        raw, chosen = result.raw_auroc[name], result.auroc[name]
        assert chosen == pytest.approx(max(raw, 1 - raw))
    gate = Gate.load(tmp_path / "gate")
    with pytest.raises(UserError, match="model signals"):
        gate.route("anything")
    decision = gate.route(IN_DOMAIN_INDEX[0], model, tokenizer)
    assert set(decision.to_dict()["signals"]) == set(result.signals)


def test_read_queries_text_and_jsonl(tmp_path):
    text = tmp_path / "q.txt"
    text.write_text("first query\n\n  second query  \n")
    assert read_queries(text) == ["first query", "second query"]
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(json.dumps({"messages": [{"role": "user", "content": "sum a list"},
                                              {"role": "assistant", "content": "sum(xs)"}]}) + "\n")
    assert read_queries(jsonl) == ["sum a list"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="no queries"):
        read_queries(tmp_path / "empty.txt")
    with pytest.raises(UserError, match="not found"):
        read_queries(tmp_path / "missing.txt")
    builtin = read_queries("builtin")
    assert len(builtin) == len(set(builtin)) == 95


def _write_pairs(path, instructions):
    with path.open("w") as handle:
        for i, instruction in enumerate(instructions):
            handle.write(json.dumps({"id": f"p{i}", "instruction": instruction, "output": "pass"}) + "\n")


def test_cli_build_calibrate_route(tmp_path):
    from tunelens.cli import app

    runner = CliRunner()
    data, ind, ood = tmp_path / "clean.jsonl", tmp_path / "in.txt", tmp_path / "out.txt"
    _write_pairs(data, IN_DOMAIN_INDEX)
    ind.write_text("\n".join(IN_DOMAIN_QUERIES))
    ood.write_text("\n".join(OUT_OF_DOMAIN))
    gate_dir = tmp_path / "gate"
    result = runner.invoke(app, ["gate", "build", "--data", str(data), "--out", str(gate_dir),
                                 "--embedder", "hashing-256", "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "8 instructions" in result.output
    assert [e["id"] for e in Gate.load(gate_dir).entries] == [f"p{i}" for i in range(8)]
    result = runner.invoke(app, ["gate", "calibrate", "--gate", str(gate_dir), "--in-domain", str(ind),
                                 "--out-of-domain", str(ood)])
    assert result.exit_code == 0, result.output
    assert "max_similarity" in result.output and "threshold" in result.output
    saved = json.loads((gate_dir / "calibration.json").read_text())
    assert saved["counts"]["in_domain"] == 6
    result = runner.invoke(app, ["route", "--gate", str(gate_dir), "--json", IN_DOMAIN_INDEX[1]])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["route"] == "adapter" and decision["threshold"] == pytest.approx(saved["threshold"])
    result = runner.invoke(app, ["route", "--gate", str(tmp_path / "nowhere"), "q"])
    assert result.exit_code == 2 and "not a gate directory" in result.output


@pytest.mark.slow
def test_minilm_onnx_runtime_matches_sentence_transformers(tmp_path, monkeypatch):
    from tunelens.retrieval.embedders import MiniLMEmbedder

    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path / "cache"))  # a fresh export, written atomically
    fast, plain = MiniLMEmbedder(runtime="onnx"), MiniLMEmbedder(runtime="torch")
    assert (fast.runtime, plain.runtime) == ("onnx", "torch")
    assert [p.name for p in (tmp_path / "cache" / "embedders").iterdir()] == [
        next((tmp_path / "cache" / "embedders").glob("all-MiniLM-L6-v2-*.onnx")).name]
    texts = ["Reverse a string.", "Write a Python function that merges two sorted lists into one sorted list.",
             "Quelle est la capitale de l'Australie ?", "x " * 400]  # padding within a batch; truncation at 256
    np.testing.assert_allclose(fast.encode(texts, batch_size=4), plain.encode(texts), atol=1e-5)
    assert MiniLMEmbedder(runtime="onnx").runtime == "onnx"  # the cached export is reused


@pytest.mark.slow
def test_minilm_gate_ranks_a_paraphrase_first(tmp_path):
    gate = build_gate(IN_DOMAIN_INDEX, tmp_path / "gate", k=3)
    assert gate.meta["embedder"] == "all-MiniLM-L6-v2" and gate.meta["dim"] == 384
    signals = gate.retrieval_signals(["Implement a function to reverse a text string in Python",
                                      "Quelle est la capitale de l'Australie ?"])
    assert signals[0].neighbours[0]["instruction"] == IN_DOMAIN_INDEX[0]
    assert signals[0].max_similarity > 0.7 > signals[1].max_similarity


def test_cli_build_from_a_dataset_directory(tmp_path):
    """`--data` may be a `save_to_disk` directory: it is read and hashed as a whole (it used to crash)."""
    datasets = pytest.importorskip("datasets")
    from tunelens.cli import app
    from tunelens.hashing import file_sha256

    rows = [{"instruction": text, "input": "", "output": "pass"} for text in IN_DOMAIN_INDEX]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    result = CliRunner().invoke(app, ["gate", "build", "--data", str(tmp_path / "ds"), "--out",
                                      str(tmp_path / "gate"), "--embedder", "hashing-64"])
    assert result.exit_code == 0, result.output
    source = json.loads((tmp_path / "gate" / "gate.json").read_text())["source"]
    assert source["pairs"] == len(IN_DOMAIN_INDEX) and source["sha256"] == file_sha256(tmp_path / "ds")
