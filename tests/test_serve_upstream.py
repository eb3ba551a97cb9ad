"""`tunelens serve --upstream`: the gate in front of a real OpenAI-compatible server.

The upstream is tunelens's own server (a tiny LoRA model on loopback, with its own API key), serving
the base and the adapter under two names as vLLM does with --lora-modules. The gate server in front
has no model; its answers must be the upstream's own, with routing, metrics and checks added here.
"""

import json
import socket
import threading

import httpx
import openai
import pytest
from typer.testing import CliRunner

from test_gate import IN_DOMAIN_INDEX, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, tiny_adapter_model
from tunelens.errors import UserError
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.gate import build_gate, calibrate
from tunelens.serve import ServeLimits, Upstream, create_app, start_in_thread
from tunelens.serve.upstream import check_upstream_models

UPSTREAM_KEY, FRONT_KEY = "upstream-key", "front-key"
NEAR, FAR = IN_DOMAIN_INDEX[0], OUT_OF_DOMAIN[1]


@pytest.fixture(scope="module")
def tiny():
    return tiny_adapter_model(seed=3)


@pytest.fixture(scope="module")
def upstream(tiny):
    model, tokenizer = tiny
    limits = ServeLimits(max_tokens=64, max_prompt_tokens=200)
    handle = start_in_thread(create_app(model, tokenizer, limits=limits, api_key=UPSTREAM_KEY))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    gate = build_gate(IN_DOMAIN_INDEX, tmp_path_factory.mktemp("gate"), embedder=HashingEmbedder(256), k=3)
    calibrate(gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, target_coverage=5 / 6)
    return gate


def _front(url, gate=None, front_key=None, limits=ServeLimits(max_tokens=32, max_body_bytes=20_000), **upstream):
    settings = dict(base_model="tunelens-base", adapter_model="tunelens-adapter", api_key=UPSTREAM_KEY, timeout=60)
    settings.update(upstream)
    return start_in_thread(create_app(gate=gate, limits=limits, api_key=front_key,
                                      upstream=Upstream(url, **settings)))


@pytest.fixture(scope="module")
def front(upstream, gate):
    handle = _front(upstream.url + "/v1", gate, front_key=FRONT_KEY)
    yield handle
    handle.stop()


def _client(handle, key):
    return openai.OpenAI(base_url=handle.url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def via_gate(front):
    return _client(front, FRONT_KEY)


@pytest.fixture(scope="module")
def direct(upstream):
    return _client(upstream, UPSTREAM_KEY)


def _tunelens(obj):
    return (obj.model_extra or {}).get("tunelens")


def _chat(client, model, query, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": query}],
                                          max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, **kwargs)


def _same_choice(a, b):
    return a.choices[0].model_dump() == b.choices[0].model_dump() and a.usage == b.usage


def test_models_and_health_need_no_local_model(front, via_gate):
    assert [m.id for m in via_gate.models.list().data] == ["tunelens-adapter", "tunelens-base", "auto"]
    health = httpx.get(front.url + "/healthz").json()
    assert health["status"] == "ok" and health["gate"] and health["model"].startswith("upstream http://127.0.0.1")


def test_auto_routes_and_answers_are_the_upstreams(via_gate, direct):
    near, far = _chat(via_gate, "auto", NEAR), _chat(via_gate, "auto", FAR)
    assert _tunelens(near)["route"] == "adapter" and near.model == "tunelens-adapter"
    assert _tunelens(far)["route"] == "base" and far.model == "tunelens-base"
    assert _tunelens(far)["score"] < _tunelens(far)["threshold"] <= _tunelens(near)["score"]
    assert _same_choice(near, _chat(direct, "tunelens-adapter", NEAR))
    assert _same_choice(far, _chat(direct, "tunelens-base", FAR))
    # The two routes really are different models, so a wrong forward could not pass the checks above.
    assert not _same_choice(_chat(direct, "tunelens-base", NEAR), _chat(direct, "tunelens-adapter", NEAR))


def test_forced_routes_and_completion_logprobs_pass_through(via_gate, direct):
    for model in ("tunelens-adapter", "tunelens-base"):
        kwargs = dict(model=model, prompt="def add(a, b):", max_tokens=6, temperature=0, logprobs=3)
        gated, plain = via_gate.completions.create(**kwargs), direct.completions.create(**kwargs)
        assert _tunelens(gated) == {"route": model.removeprefix("tunelens-"), "reason": "forced"}
        assert gated.model == model and _same_choice(gated, plain)
        logprobs = gated.choices[0].logprobs  # top_logprobs are dicts: alternatives spelled alike merge
        assert len(logprobs.token_logprobs) == gated.usage.completion_tokens and logprobs.top_logprobs[0]


def test_fields_tunelens_does_not_read_still_reach_the_upstream(via_gate, direct):
    kwargs = dict(model="tunelens-base", prompt="import", max_tokens=8, temperature=1.0, seed=11, top_p=0.9,
                  stop=["\n\n"])
    assert _same_choice(via_gate.completions.create(**kwargs), direct.completions.create(**kwargs))


def _chunks_without_ids(chunks):
    return [(c.choices[0].model_dump() if c.choices else None, c.usage) for c in chunks]


def test_streams_pass_through_with_logprobs(via_gate, direct):
    kwargs = dict(messages=[{"role": "user", "content": NEAR}], max_tokens=6, temperature=0, logprobs=True,
                  top_logprobs=2, stream=True)
    gated = list(via_gate.chat.completions.create(model="auto", **kwargs))
    plain = list(direct.chat.completions.create(model="tunelens-adapter", **kwargs))
    assert _tunelens(gated[0])["route"] == "adapter" and all(c.model == "tunelens-adapter" for c in gated)
    assert _chunks_without_ids(gated) == _chunks_without_ids(plain)
    assert sum(len(c.choices[0].logprobs.content) for c in gated if c.choices[0].logprobs) >= 1
    assert all(c.usage is None for c in gated)  # usage was asked upstream for the metrics, not passed on

    usage = dict(stream_options={"include_usage": True})
    gated = list(via_gate.completions.create(model="tunelens-base", prompt="for i in", max_tokens=5, temperature=0,
                                             logprobs=1, stream=True, **usage))
    plain = list(direct.completions.create(model="tunelens-base", prompt="for i in", max_tokens=5, temperature=0,
                                           logprobs=1, stream=True, **usage))
    assert _chunks_without_ids(gated) == _chunks_without_ids(plain)
    assert gated[-1].choices == [] and gated[-1].usage.completion_tokens >= 1


def test_metrics_count_routes_and_upstream_tokens(front, via_gate):
    def value(text, prefix):
        return next((float(l.split()[-1]) for l in text.splitlines() if l.startswith(prefix)), 0.0)

    headers = {"authorization": f"Bearer {FRONT_KEY}"}
    before = httpx.get(front.url + "/metrics", headers=headers).text
    answer = _chat(via_gate, "auto", FAR)
    list(via_gate.chat.completions.create(model="auto", messages=[{"role": "user", "content": FAR}], max_tokens=3,
                                          temperature=0, stream=True))
    after = httpx.get(front.url + "/metrics", headers=headers).text
    routes = 'tunelens_routes_total{route="base",reason="gate"}'
    assert value(after, routes) == value(before, routes) + 2
    tokens = "tunelens_completion_tokens_total"
    assert value(after, tokens) - value(before, tokens) == answer.usage.completion_tokens + 3
    assert "tunelens_in_flight 0" in after


def _requests_seen(upstream):
    text = httpx.get(upstream.url + "/metrics", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}).text
    return sum(int(l.split()[-1]) for l in text.splitlines() if l.startswith("tunelens_requests_total{path=\"/v1/c"))


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "malformed JSON"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "max_tokens": "5"}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "max_tokens": 33}).encode(), 400, "limit of 32"),
    (json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "unknown model 'gpt-4'"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "stop": list("abcde")}).encode(), 400, "at most 4"),
    (json.dumps({"model": "tunelens-base", "prompt": "\ud800"}).encode(), 400, "surrogate"),
    (json.dumps({"model": "tunelens-base", "prompt": "x" * 30_000}).encode(), 413, "20000-byte limit"),
])
def test_bad_input_is_refused_here_without_reaching_the_upstream(front, upstream, body, status, needle):
    seen = _requests_seen(upstream)
    response = httpx.post(front.url + "/v1/completions", content=body,
                          headers={"content-type": "application/json", "authorization": f"Bearer {FRONT_KEY}"})
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert _requests_seen(upstream) == seen


def test_the_front_key_is_checked_and_not_sent_upstream(front, upstream):
    body = {"model": "tunelens-base", "prompt": "x", "max_tokens": 1}
    missing = httpx.post(front.url + "/v1/completions", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    # The front's own key would be refused upstream: what goes upstream is --upstream-api-key.
    assert httpx.post(upstream.url + "/v1/completions", json=body,
                      headers={"authorization": f"Bearer {FRONT_KEY}"}).status_code == 401


def test_the_upstreams_own_refusals_pass_through(via_gate):
    with pytest.raises(openai.BadRequestError, match="over this server's limit of 200") as caught:
        via_gate.completions.create(model="tunelens-base", prompt="x " * 300, max_tokens=2)
    assert caught.value.body["code"] == "context_length_exceeded"


def _error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert error["type"] == "server_error"
    return error["message"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_is_down_is_a_502(stream):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    handle = _front(url, connect_timeout=2)
    try:
        body = {"model": "tunelens-base", "prompt": "x", "max_tokens": 2, "stream": stream}
        message = _error(httpx.post(handle.url + "/v1/completions", json=body, timeout=30), 502,
                         "upstream_unavailable")
        assert url in message and "ConnectError" in message
        with pytest.raises(openai.APIStatusError) as caught:
            _client(handle, "x").chat.completions.create(model="tunelens-base", max_tokens=2, stream=stream,
                                                         messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 502
        assert "tunelens_in_flight 0" in httpx.get(handle.url + "/metrics").text
    finally:
        handle.stop()


def test_a_silent_upstream_is_a_504():
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        handle = _front(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        try:
            response = httpx.post(handle.url + "/v1/completions", timeout=30,
                                  json={"model": "tunelens-base", "prompt": "x", "max_tokens": 2})
            assert "did not answer within 0.5 s" in _error(response, 504, "upstream_timeout")
        finally:
            handle.stop()


def test_wrong_upstream_key_or_model_name_is_a_502_naming_the_option(upstream):
    body = {"model": "tunelens-base", "prompt": "x", "max_tokens": 2}
    for settings, code, option in ((dict(api_key="wrong"), "upstream_auth", "--upstream-api-key"),
                                   (dict(base_model="google/gemma-3-270m"), "upstream_model_not_found",
                                    "--upstream-base-model")):
        handle = _front(upstream.url, **settings)
        try:
            assert option in _error(httpx.post(handle.url + "/v1/completions", json=body, timeout=30), 502, code)
        finally:
            handle.stop()


def _read_request(conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _canned_server(payload: bytes, received: list | None = None):
    """A raw socket that answers any request with `payload` and closes (what it got goes to `received`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def answer():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = _read_request(conn)
                if received is not None:
                    received.append(request)
                conn.sendall(payload)

    threading.Thread(target=answer, daemon=True).start()
    return listener


def test_a_stream_cut_off_upstream_ends_with_an_error_event_and_done():
    chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "text": "hello", "logprobs": None, "finish_reason": None}]}
    payload = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
               + f"data: {json.dumps(chunk)}\n\n".encode())
    listener = _canned_server(payload)
    handle = _front(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        response = httpx.post(handle.url + "/v1/completions", timeout=30,
                              json={"model": "tunelens-base", "prompt": "x", "max_tokens": 2, "stream": True})
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        first = json.loads(events[0])
        assert first["choices"][0]["text"] == "hello" and first["tunelens"]["route"] == "base"
        assert "closed the stream" in json.loads(events[1])["error"]["message"] and events[2:] == ["[DONE]"]
    finally:
        handle.stop()
        listener.close()


def test_a_client_leaving_mid_stream_frees_its_place(front, via_gate):
    stream = via_gate.completions.create(model="tunelens-base", prompt="def", max_tokens=30, temperature=0,
                                         stream=True)
    next(iter(stream))
    stream.close()
    headers = {"authorization": f"Bearer {FRONT_KEY}"}
    for _ in range(100):
        if "tunelens_in_flight 0" in httpx.get(front.url + "/metrics", headers=headers).text:
            break
        threading.Event().wait(0.05)
    assert "tunelens_in_flight 0" in httpx.get(front.url + "/metrics", headers=headers).text


def test_multi_turn_chat_goes_upstream_whole_and_auto_judges_the_last_user_turn(gate):
    # tunelens's own server is single-turn, so a canned upstream stands in for a vLLM that renders chats.
    answer = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "tuned", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()
    received = []
    listener = _canned_server(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                              + f"content-length: {len(answer)}\r\n\r\n".encode() + answer, received)
    handle = _front(f"http://127.0.0.1:{listener.getsockname()[1]}", gate, adapter_model="tuned")
    messages = [{"role": "user", "content": FAR}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": NEAR}]
    try:
        client = _client(handle, "x")
        gated = client.chat.completions.create(model="auto", messages=messages, max_tokens=2)
        assert _tunelens(gated)["route"] == "adapter" and gated.choices[0].message.content == "hi"
        sent = json.loads(received[-1].split(b"\r\n\r\n", 1)[1])
        assert sent == {"model": "tuned", "messages": messages, "max_tokens": 2}
        assert _tunelens(client.chat.completions.create(model="auto", messages=messages[::-1]))["route"] == "base"
        with pytest.raises(openai.BadRequestError, match="last user message"):
            client.chat.completions.create(model="auto", messages=[{"role": "system", "content": "hi"}])
    finally:
        handle.stop()
        listener.close()


def test_a_gate_calibrated_on_model_signals_is_refused(tiny, tmp_path):
    model, tokenizer = tiny
    gate = build_gate(IN_DOMAIN_INDEX, tmp_path / "gate", embedder=HashingEmbedder(256), k=3)
    calibrate(gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, model=model, tokenizer=tokenizer)
    with pytest.raises(UserError, match="model signals .*adapter_base_kl, prompt_perplexity.* without --model"):
        create_app(gate=gate, upstream=Upstream("http://127.0.0.1:9", "base", "tuned"))

    from tunelens.cli import app

    result = CliRunner().invoke(app, ["serve", "--upstream", "http://127.0.0.1:9/v1", "--upstream-base-model",
                                      "base", "--upstream-adapter-model", "tuned", "--gate", str(tmp_path / "gate")])
    assert result.exit_code == 2 and "model signals" in result.output and "Traceback" not in result.output


def test_startup_check_of_the_upstreams_model_names(upstream):
    good = Upstream(upstream.url, "tunelens-base", "tunelens-adapter", api_key=UPSTREAM_KEY)
    assert check_upstream_models(good) is None
    with pytest.raises(UserError, match="does not serve tuned: it has auto|does not serve tuned: it has tunelens"):
        check_upstream_models(Upstream(upstream.url, "tunelens-base", "tuned", api_key=UPSTREAM_KEY))
    with pytest.raises(UserError, match="refused the key"):
        check_upstream_models(Upstream(upstream.url, "tunelens-base", api_key="wrong"))
    down = check_upstream_models(Upstream(f"http://127.0.0.1:{_free_port()}", "base", connect_timeout=2))
    assert "does not answer yet" in down


@pytest.mark.parametrize("args, needle", [
    (["--upstream", "http://127.0.0.1:9/v1"], "--upstream needs --upstream-base-model"),
    (["--upstream", "127.0.0.1:9", "--upstream-base-model", "b"], "give an http:// or https:// URL"),
    (["--upstream-adapter-model", "tuned"], "need --upstream URL"),
    (["--upstream", "http://127.0.0.1:9", "--upstream-base-model", "b", "--adapter", "a"], "--upstream-adapter-model"),
    (["--upstream", "http://127.0.0.1:9", "--upstream-base-model", "b", "--host", "0.0.0.0"], "pass --api-key"),
])
def test_serve_options_that_cannot_work_are_one_line_errors(args, needle):
    from tunelens.cli import app

    result = CliRunner().invoke(app, ["serve", *args], env={"TUNELENS_API_KEY": ""})
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
