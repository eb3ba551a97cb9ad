"""Few-shot on `tunelens serve`: a chat request's `few_shot` field (or the server's --few-shot) shows it the
nearest training pairs, the response's `tunelens.few_shot` reports them, bad values are 400s, and without
it every answer is exactly what it was before."""

import json

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from test_gate import tiny_adapter_model
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import Example, encode_few_shot, injected, nearest_examples
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.gate import build_gate
from tunelens.engine.generate import SamplingConfig, generate_batch
from tunelens.serve import ServeLimits, Upstream, create_app, start_in_thread
from tunelens.serve.fewshot import FewShotServing, with_example_messages

PAIRS = [
    ("Write a Python function that reverses a string.", "def rev(s):\n    return s[::-1]"),
    ("Write a Python function that checks whether a number is prime.", "def is_prime(n):\n    return n > 1"),
    ("Write a Python function that merges two sorted lists.", "def merge(a, b):\n    return sorted(a + b)"),
]
QUERY = "Write a Python function that reverses a list."
LIMITS = ServeLimits(max_tokens=32, max_prompt_tokens=400)


@pytest.fixture(scope="module")
def tiny():
    return tiny_adapter_model(seed=3)


@pytest.fixture(scope="module")
def pair_gate(tmp_path_factory):
    return build_gate([i for i, _ in PAIRS], tmp_path_factory.mktemp("gate"), ids=["rev", "prime", "merge"],
                      embedder=HashingEmbedder(256), k=2, responses=[r for _, r in PAIRS])


@pytest.fixture(scope="module")
def servers(tiny, pair_gate):
    model, tokenizer = tiny
    plain = start_in_thread(create_app(model, tokenizer, limits=LIMITS))
    shots = start_in_thread(create_app(model, tokenizer, limits=LIMITS, few_shot=FewShotServing(0, pair_gate)))
    default = start_in_thread(create_app(model, tokenizer, limits=LIMITS, few_shot=FewShotServing(1, pair_gate)))
    yield plain, shots, default
    for handle in (plain, shots, default):
        handle.stop()


def _client(handle):
    return openai.OpenAI(base_url=handle.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _chat(handle, query=QUERY, **extra):
    return _client(handle).chat.completions.create(model="tunelens-adapter", max_tokens=6, temperature=0,
                                                   messages=[{"role": "user", "content": query}],
                                                   extra_body=extra or None)


def _tunelens(obj):
    return (obj.model_extra or {}).get("tunelens")


def _post(handle, body, path="/v1/chat/completions"):
    return httpx.post(handle.url + path, json=body, timeout=60)


def test_without_few_shot_the_answer_is_what_it_was(servers):
    plain, shots, _ = servers
    before, after = _chat(plain), _chat(shots)
    assert after.choices[0].model_dump() == before.choices[0].model_dump() and after.usage == before.usage
    assert _tunelens(after) == _tunelens(before) == {"route": "adapter", "reason": "forced"}
    zero = _chat(shots, few_shot=0)
    assert zero.choices[0].model_dump() == before.choices[0].model_dump() and "few_shot" not in _tunelens(zero)


def test_a_request_is_shown_and_told_its_nearest_pairs(servers, tiny, pair_gate):
    _, shots, _ = servers
    model, tokenizer = tiny
    expected = nearest_examples(pair_gate, QUERY, 2)
    assert expected[-1].id == "rev"
    result = _chat(shots, few_shot=2)
    assert _tunelens(result)["few_shot"] == injected(expected)
    assert result.usage.prompt_tokens == len(encode_few_shot(tokenizer, expected, QUERY))
    answer = generate_batch(model, tokenizer, [QUERY], SamplingConfig(max_new_tokens=6), examples=[expected])[0]
    assert result.choices[0].message.content == answer


def test_the_servers_default_applies_to_chat_and_a_request_can_turn_it_off(servers, pair_gate):
    _, _, default = servers
    assert _tunelens(_chat(default))["few_shot"] == injected(nearest_examples(pair_gate, QUERY, 1))
    assert "few_shot" not in _tunelens(_chat(default, few_shot=0))
    completion = _client(default).completions.create(model="tunelens-adapter", prompt="def add(a, b):", max_tokens=3)
    assert "few_shot" not in _tunelens(completion)  # a completion is raw text: no examples by default


def test_the_first_streamed_chunk_reports_the_examples(servers, pair_gate):
    _, shots, _ = servers
    stream = _client(shots).chat.completions.create(model="tunelens-adapter", max_tokens=4, temperature=0,
                                                    messages=[{"role": "user", "content": QUERY}], stream=True,
                                                    extra_body={"few_shot": 1})
    first = next(iter(stream))
    assert _tunelens(first)["few_shot"] == injected(nearest_examples(pair_gate, QUERY, 1))


@pytest.mark.parametrize("value, needle", [
    (-1, "greater than or equal to 0"), (17, "less than or equal to 16"), ("2", "valid integer"),
    (True, "valid integer"), (1.5, "valid integer"), ([1], "valid integer"),
])
def test_a_bad_few_shot_is_a_400_naming_the_field(servers, value, needle):
    _, shots, _ = servers
    response = _post(shots, {"model": "tunelens-adapter", "messages": [{"role": "user", "content": QUERY}],
                             "few_shot": value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "few_shot" and "few_shot" in error["message"] and needle in error["message"]


def test_few_shot_a_server_cannot_give_is_a_400(servers, tiny, tmp_path):
    plain, shots, _ = servers
    body = {"model": "tunelens-adapter", "messages": [{"role": "user", "content": QUERY}], "few_shot": 1,
            "max_tokens": 2}
    response = _post(plain, body)
    assert response.status_code == 400 and "no few-shot index" in response.json()["error"]["message"]
    response = _post(shots, {"model": "tunelens-adapter", "prompt": "x", "few_shot": 1}, "/v1/completions")
    assert response.status_code == 400 and "/v1/chat/completions" in response.json()["error"]["message"]
    old = build_gate([i for i, _ in PAIRS], tmp_path / "old", embedder=HashingEmbedder(64))
    with pytest.raises(UserError, match="stores no responses"):
        FewShotServing(1, old)
    model, tokenizer = tiny
    handle = start_in_thread(create_app(model, tokenizer, limits=LIMITS, few_shot=FewShotServing(0, old)))
    try:
        response = _post(handle, body)
        assert response.status_code == 400 and "stores no responses" in response.json()["error"]["message"]
    finally:
        handle.stop()


def test_examples_count_toward_the_prompt_limit(tiny, pair_gate):
    model, tokenizer = tiny
    plain_tokens = len(encode_few_shot(tokenizer, [], QUERY))
    limits = ServeLimits(max_tokens=8, max_prompt_tokens=plain_tokens + 1)
    handle = start_in_thread(create_app(model, tokenizer, limits=limits, few_shot=FewShotServing(0, pair_gate)))
    try:
        body = {"model": "tunelens-adapter", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 2}
        assert _post(handle, body).status_code == 200
        response = _post(handle, {**body, "few_shot": 2})
        assert response.status_code == 400
        assert "with its 2 few-shot example(s)" in response.json()["error"]["message"]
    finally:
        handle.stop()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.integers(-5, 25), st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2)))
def test_any_few_shot_value_is_served_or_refused_with_a_400(servers, value):
    _, shots, _ = servers
    response = _post(shots, {"model": "tunelens-adapter", "messages": [{"role": "user", "content": "Sort."}],
                             "max_tokens": 1, "few_shot": value})
    valid = value is None or (type(value) is int and 0 <= value <= 16)
    if valid:
        assert response.status_code == 200, response.text
        shown = response.json()["tunelens"].get("few_shot")
        assert (shown is None) if not value else len(shown) == min(value, len(PAIRS))
    else:
        assert response.status_code == 400 and response.json()["error"]["param"] == "few_shot", response.text


def test_example_messages_go_after_the_system_messages():
    shown = [Example("Add.", "def add(a, b): ...", id="1", similarity=0.2)]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sub."}]
    assert with_example_messages(messages, shown) == [
        messages[0], {"role": "user", "content": "Add."}, {"role": "assistant", "content": "def add(a, b): ..."},
        messages[1]]
    assert with_example_messages(messages, []) == messages


def _echo_upstream():
    """An OpenAI-compatible engine that answers a chat with the messages it received (as JSON text)."""
    from types import SimpleNamespace

    from fastapi import FastAPI, Request

    echo = FastAPI()
    echo.state.engine = SimpleNamespace(limits=LIMITS)

    @echo.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        return {"id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": json.dumps(body)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return start_in_thread(echo)


def test_an_upstream_gets_the_examples_as_earlier_messages(pair_gate):
    upstream = _echo_upstream()
    front = start_in_thread(create_app(limits=LIMITS, few_shot=FewShotServing(0, pair_gate),
                                       upstream=Upstream(upstream.url + "/v1", "base-name", "adapter-name")))
    try:
        expected = nearest_examples(pair_gate, QUERY, 2)
        gated = _client(front).chat.completions.create(
            model="tunelens-adapter", max_tokens=6, extra_body={"few_shot": 2},
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUERY}])
        sent = json.loads(gated.choices[0].message.content)
        assert sent["messages"] == with_example_messages(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUERY}], expected)
        assert "few_shot" not in sent and sent["model"] == "adapter-name"  # our field is not forwarded
        assert _tunelens(gated)["few_shot"] == injected(expected)
        plain = json.loads(_chat(front).choices[0].message.content)
        assert plain["messages"] == [{"role": "user", "content": QUERY}]
        response = _post(front, {"model": "tunelens-base", "prompt": "x", "few_shot": 1}, "/v1/completions")
        assert response.status_code == 400 and "/v1/chat/completions" in response.json()["error"]["message"]
    finally:
        front.stop()
        upstream.stop()


def test_serve_options_come_from_one_config(tmp_path, monkeypatch):
    from tunelens.cli import app
    from tunelens.config import load_config
    from tunelens.serve.config import ServeConfig

    result = CliRunner().invoke(app, ["serve", "--few-shot", "2"], env={"TUNELENS_API_KEY": ""})
    assert result.exit_code == 2 and "--few-shot 2 needs --few-shot-index" in result.output
    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text("port: 9001\nfew_shot: 2\ngate: runs/g\nmax_batch: 4\n")
    config = load_config(ServeConfig, yaml_file)
    assert (config.port, config.few_shot, config.examples_index, config.limits().max_tokens) == (9001, 2, "runs/g", 1024)
    seen = {}
    monkeypatch.setattr("tunelens.serve.serve", lambda model, **kw: seen.update(kw, model=model))
    result = CliRunner().invoke(app, ["serve", "--config", str(yaml_file), "--port", "9002", "--few-shot-index", "x"],
                                env={"TUNELENS_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert (seen["port"], seen["few_shot"], seen["few_shot_index"], seen["max_batch"]) == (9002, 2, "x", 4)
    assert seen["upstream"] is None and seen["gate_dir"] == "runs/g"


def test_context_check_scores_the_examples_before_generation(servers):
    _, shots, _ = servers
    body = {"model": "tunelens-adapter", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 2}
    checked = _post(shots, {**body, "few_shot": 2, "context_check": True}).json()["tunelens"]["context_check"]
    assert [e["id"] for e in checked["examples"]] == [e["id"] for e in _post(shots, {**body, "few_shot": 2}).json()
                                                      ["tunelens"]["few_shot"]]
    assert 0.0 <= checked["risk"] <= 1.0 and checked["flagged"] == (checked["risk"] >= checked["threshold"])
    assert all("main_reason" in e for e in checked["examples"])
    assert "context_check" not in _post(shots, {**body, "few_shot": 2}).json()["tunelens"]  # only when asked
    nothing = _post(shots, {**body, "context_check": True}).json()["tunelens"]["context_check"]
    assert nothing["examples"] == [] and nothing["flagged"] is False  # no examples shown, nothing to distrust
    refused = _post(shots, {**body, "context_check": "yes please"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "context_check"
