"""The OpenAI-compatible backend against a tiny FastAPI stub server on 127.0.0.1 (no network)."""

import json
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.errors import UserError
from tunelens.evaluate.backends import OpenAIBackend, TransformersBackend, normalise_base_url
from tunelens.evaluate.runner import EvalConfig, read_results, run_eval
from tunelens.engine.generate import SamplingConfig

F = "```"


def _stub_answer(model: str, prompt: str) -> str:
    """The served "base" pushes back on broken specs; "tuned" writes code for everything."""
    if "sorted" in prompt and "descending" in prompt and model == "base":
        return "The examples contradict each other: which order do you want?"
    return f"{F}python\ndef f(xs):\n    return sorted(xs)\n{F}"


def _make_app(requests: list):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    api = FastAPI()

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests.append(("chat", body))
        if body["model"] not in ("base", "tuned"):
            return JSONResponse({"error": {"message": f"model {body['model']} not found"}}, status_code=404)
        text = _stub_answer(body["model"], body["messages"][-1]["content"])
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    @api.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        requests.append(("completions", body))
        return {"choices": [{"index": 0, "text": _stub_answer(body["model"], body["prompt"]), "finish_reason": "stop"}]}

    return api


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stub_server():
    import uvicorn

    requests: list = []
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_make_app(requests), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "stub server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", requests
    server.should_exit = True
    thread.join(timeout=10)


def test_chat_requests_carry_role_model_and_decoding(stub_server):
    url, requests = stub_server
    requests.clear()
    backend = OpenAIBackend(url, "base", "tuned", concurrency=2)
    assert backend.roles == ("base", "tuned")
    answers = backend.generate(["sorted, descending?", "x"], SamplingConfig(32, 0.8, 0.9, seed=5), "tuned")
    assert all(answer.startswith(F) for answer in answers)
    bodies = sorted((body for _, body in requests), key=lambda b: b["seed"])
    assert [(b["model"], b["max_tokens"], b["temperature"], b["top_p"], b["seed"]) for b in bodies] == \
        [("tuned", 32, 0.8, 0.9, 5), ("tuned", 32, 0.8, 0.9, 6)]
    assert bodies[0]["messages"] == [{"role": "user", "content": "sorted, descending?"}]
    assert backend.generate(["sorted, descending?"], SamplingConfig(8), "base") == [
        "The examples contradict each other: which order do you want?"]
    assert "seed" not in requests[-1][1] and requests[-1][1]["temperature"] == 0.0


def test_completions_api_renders_the_prompt_with_the_tokenizer(stub_server, tiny_gemma):
    from tunelens.model.prompts import render_prompt

    url, requests = stub_server
    _, tokenizer = tiny_gemma
    backend = OpenAIBackend(url + "/v1/", "base", api="completions", tokenizer=tokenizer)
    backend.generate(["Write f."], SamplingConfig(8), "base")
    kind, body = requests[-1]
    assert kind == "completions" and body["prompt"] == render_prompt(tokenizer, "Write f.")
    assert "<end_of_turn>" in body["stop"]


def test_run_eval_through_the_server_and_gate(stub_server, tmp_path):
    url, _ = stub_server
    suite = tmp_path / "mini.jsonl"
    cases = [{"id": f"broken{i}", "type": "contradiction", "expect": "pushback",
              "prompt": f"Return xs sorted ascending; example {i}: f([1, 2]) == [2, 1] (descending)."} for i in range(6)]
    cases.append({"id": "clean", "type": "sorting", "expect": "code", "prompt": "Return xs sorted ascending.",
                  "tests": "assert f([2, 1]) == [1, 2]"})
    suite.write_text("".join(json.dumps(c) + "\n" for c in cases))

    result = run_eval(EvalConfig(suites=(str(suite),), samples=0, backend="openai", base_url=url, model="base",
                                 adapter="tuned"), tmp_path / "lib")
    rows = {(r["case_id"], r["model"]): r for r in read_results(tmp_path / "lib" / "results.jsonl")}
    assert rows[("broken0", "base")]["behaviour"] == "pushback" and rows[("broken0", "tuned")]["behaviour"] == "code"
    assert rows[("clean", "tuned")]["tests"] == "passed"
    assert [(c["metric"], c["base_only"], c["p_value"]) for c in result.regressions] == [("pushback", 6, 2 / 64)]
    assert result.summary["source"]["backend"] == "openai"

    args = ["eval", "--suite", str(suite), "--samples", "0", "--backend", "openai", "--base-url", url,
            "--model", "base", "--adapter", "tuned", "--out", str(tmp_path / "cli")]
    gated = CliRunner().invoke(app, args + ["--fail-on-regression"])
    assert gated.exit_code == 1 and "regression" in gated.output
    assert CliRunner().invoke(app, args).exit_code == 0  # resumed, nothing generated, no gate


def test_server_errors_are_one_line_user_errors(stub_server):
    url, _ = stub_server
    with pytest.raises(UserError, match="HTTP 404"):
        OpenAIBackend(url, "missing").generate(["x"], SamplingConfig(4), "base")
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{_free_port()}", "base", timeout_s=2).generate(["x"], SamplingConfig(4), "base")
    with pytest.raises(UserError, match="http://"):
        normalise_base_url("localhost:8000")
    assert normalise_base_url("http://h:1/") == normalise_base_url("http://h:1/v1") == "http://h:1/v1"


def test_transformers_backend_has_a_tuned_role_only_with_an_adapter(tiny_gemma):
    model, tokenizer = tiny_gemma
    backend = TransformersBackend(model, tokenizer, batch_size=2)
    assert backend.roles == ("base",)
    assert len(backend.generate(["a", "b", "c"], SamplingConfig(3), "base")) == 3
