"""Every stage reports progress in the one shape of `tunelens.runtime.Progress`: (what is running, done,
total), done counting up to total (total 0 while it is not known)."""

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_shape(calls: list[tuple], what: str, total: int) -> None:
    assert calls, "no progress reported"
    assert all(isinstance(c, tuple) and len(c) == 3 for c in calls), calls
    assert {c[0] for c in calls} == {what}
    done = [c[1] for c in calls]
    assert done == sorted(done) and done[-1] == total and {c[2] for c in calls} == {total}


def test_mine_reports_files(tmp_path):
    from tunelens.data.mine import MineConfig, mine_pairs

    for i in range(3):
        (tmp_path / f"mod{i}.py").write_text(f'def f{i}(x):\n    """Return x plus {i}."""\n    y = x + {i}\n    return y\n')
    calls = []
    mine_pairs([tmp_path], MineConfig(workers=1), progress=lambda *call: calls.append(call))
    _check_shape(calls, "mining files", 3)
    assert [c[1] for c in calls] == [1, 2, 3]


def test_lint_reports_records_with_an_unknown_total(tmp_path):
    from tunelens.data.lint import lint_file

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Write f{i}.", "completion": f"def f{i}():\n    return {i}\n"})
                             + "\n" for i in range(4)))
    calls = []
    lint_file(pairs, tmp_path / "lint", progress=lambda *call: calls.append(call))
    assert calls == [("linting", n, 0) for n in (1, 2, 3, 4)]


def test_gate_embedding_and_model_signals_report_counts_not_increments():
    from tunelens.retrieval.embedders import HashingEmbedder
    from tunelens.gate.signals import model_signals
    from tunelens.testing import tiny_lora_model

    calls = []
    HashingEmbedder().encode(["a", "b", "c"], progress=lambda *call: calls.append(call))
    _check_shape(calls, "embedding", 3)
    model, tokenizer = tiny_lora_model("llama")
    calls = []
    model_signals(model, tokenizer, ["Print hello.", "Add two numbers."], progress=lambda *call: calls.append(call))
    assert calls == [("model signals", 1, 2), ("model signals", 2, 2)]


def test_trace_reports_loading_then_each_generated_token(monkeypatch, tmp_path):
    from tunelens.inspect import trace as trace_module
    from tunelens.model.load import as_loaded
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("llama")
    monkeypatch.setattr(trace_module.LoadedModel, "load", staticmethod(lambda *a, **k: as_loaded(model, tokenizer)))
    run = trace_module.TraceRun(model="tiny", prompt="Print hello.", out=tmp_path / "t.json",
                                config=trace_module.TraceConfig(max_new_tokens=4, check_adapter=False))
    calls = []
    trace = trace_module.run_trace(run, progress=lambda *call: calls.append(call))
    assert calls[:2] == [("loading tiny", 0, 1), ("loading tiny", 1, 1)]
    assert calls[2:] == [("generating", n, 4) for n in range(1, len(trace.steps) + 1)]
