"""`tunelens serve` under bad input (issue 13): every case is a 4xx in OpenAI's error shape and the server
keeps serving; API keys, exposure, read deadlines, body caps while reading; Hypothesis over the schema."""

import json
import select
import socket
import time

import httpx
import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tunelens.errors import UserError
from tunelens.serve import ServeLimits, StopText, create_app, start_in_thread
from tunelens.serve.running import check_exposure, is_loopback
from tunelens.testing import tiny_lora_model

LIMITS = ServeLimits(max_tokens=16, max_prompt_tokens=2000, max_body_bytes=1_000_000, read_timeout=1.0)
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def tiny():
    return tiny_lora_model("gemma3", seed=5)  # with an adapter, so both routes are exercised


@pytest.fixture(scope="module")
def server(tiny):
    model, tokenizer = tiny
    handle = start_in_thread(create_app(model, tokenizer, limits=LIMITS))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def keyed(tiny):
    model, tokenizer = tiny
    handle = start_in_thread(create_app(model, tokenizer, limits=LIMITS, api_key=KEY))
    yield handle
    handle.stop()


def _post(server, body, path="/v1/completions", **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"},
                      timeout=60, **kwargs)


def assert_openai_error(response, status, needle=""):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert needle in error["message"], error["message"]
    return error


def assert_still_serves(server):
    ok = _post(server, {"model": "tunelens-base", "prompt": "def", "max_tokens": 2, "temperature": 0})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def _completion(server, **fields):
    return _post(server, {"model": "tunelens-base", "prompt": "def add(a, b):", "max_tokens": 6, **fields})


# ---------------------------------------------------------------- the cases of issue 13


def test_a_tiny_temperature_is_greedy_not_nan(server):
    tiny_t = _completion(server, temperature=1e-45)
    greedy = _completion(server, temperature=0)
    assert tiny_t.status_code == 200, tiny_t.text
    assert tiny_t.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_seed_torch_cannot_take_is_a_400_also_streamed(server, stream):
    assert_openai_error(_completion(server, seed=2 ** 64, stream=stream), 400, "seed")
    assert _completion(server, seed=2 ** 64 - 1, temperature=1.0, stream=stream).status_code == 200


@pytest.mark.parametrize("prompt", ["", [""]])
def test_an_empty_prompt_on_a_tokenizer_without_bos(server, prompt):
    assert_openai_error(_completion(server, prompt=prompt), 400, "prompt is empty")
    assert_still_serves(server)


def test_deep_nesting_and_huge_integers_and_lone_surrogates(server):
    assert_openai_error(_post(server, b'{"model": "tunelens-base", "prompt": ' + b"[" * 200_000), 400, "nested")
    digits = b'{"model": "tunelens-base", "prompt": "x", "max_tokens": ' + b"7" * 5000 + b"}"
    assert_openai_error(_post(server, digits), 400, "malformed JSON")
    assert_openai_error(_post(server, b'{"model": "tunelens-base", "prompt": "\\ud800"}'), 400, "surrogate")
    assert_openai_error(_post(server, b'{"model": "tunelens-base", "prompt": "x", "temperature": NaN}'), 400,
                        "temperature")
    assert_still_serves(server)


def _raw_request(server, head: bytes) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head)
    return sock


def test_a_chunked_body_is_refused_while_it_is_read(server):
    """200 MB offered without Content-Length: the 413 comes after about the cap, not after the whole body."""
    sock = _raw_request(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent, answer = 0, b""
    sock.settimeout(2)
    try:
        while sent < 200 * 2 ** 20 and not answer:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
            sock.sendall(frame)
            sent += len(chunk)
    except (socket.timeout, ConnectionError):
        pass  # the server stopped reading: its answer is waiting
    sock.settimeout(10)
    while b'"error"' not in answer:  # the head and the body may come in separate reads
        more = sock.recv(65536)
        if not more:
            break
        answer += more
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error"' in answer and sent < 20 * 2 ** 20  # refused within a few buffers of the 1 MB cap
    assert_still_serves(server)


def test_a_240kb_stop_string_does_not_stall_the_model(server):
    start = time.perf_counter()
    plain = _completion(server, temperature=0)
    plain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    long_stop = _completion(server, temperature=0, stop=["q" * 240_000])
    assert long_stop.status_code == 200
    assert long_stop.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]
    assert time.perf_counter() - start < plain_seconds + 0.5


def test_prompt_plus_max_tokens_beyond_the_context_window(server):
    prompt = "x " * 505  # 1010 tokens; the tiny model's window is 1024
    error = assert_openai_error(_completion(server, prompt=prompt, max_tokens=16), 400, "context window of 1024")
    assert error["code"] == "context_length_exceeded"
    fits = _completion(server, prompt=prompt, max_tokens=14)
    assert fits.status_code == 200 and fits.json()["usage"]["completion_tokens"] <= 14
    assert_still_serves(server)


def test_an_unexpected_failure_is_a_500_in_openai_shape_and_the_server_recovers(server, tiny):
    model = tiny[0]

    def fail(module, args, kwargs):
        raise RuntimeError("injected failure")

    hook = model.register_forward_pre_hook(fail, with_kwargs=True)
    try:
        error = assert_openai_error(_completion(server), 500, "injected failure")
        assert error["type"] == "server_error"
        streamed = _completion(server, stream=True).text
        assert '"server_error"' in streamed and "injected failure" in streamed
    finally:
        hook.remove()
    assert_still_serves(server)


# ---------------------------------------------------------------- authentication and exposure


def test_api_key_is_required_when_set(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.post(keyed.url + "/v1/completions", json={"model": "tunelens-base", "prompt": "x"},
                              headers=headers)
        assert assert_openai_error(response, 401, "API key")["code"] == "invalid_api_key"
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert httpx.get(keyed.url + "/healthz").status_code == 200  # probes need no key
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0)
    usage = client.completions.create(model="tunelens-base", prompt="x", max_tokens=1).usage
    assert usage.completion_tokens == 1 and usage.total_tokens == usage.prompt_tokens + 1  # the key let it answer
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_exposure_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(UserError, match="--api-key"):
        check_exposure("0.0.0.0", None, insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    check_exposure("0.0.0.0", KEY, insecure=False)
    check_exposure("127.0.0.1", None, insecure=False)


def test_cli_refuses_a_public_host_without_a_key_before_loading(monkeypatch):
    from tunelens.cli import app

    monkeypatch.delenv("TUNELENS_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--model", "no-such-model", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--insecure" in result.output


# ---------------------------------------------------------------- slow clients


def _closed_within(sock, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except ConnectionError:
        return True
    finally:
        sock.close()


def test_slow_clients_are_cut_off(server):
    silent = _raw_request(server, b"")
    slow_headers = _raw_request(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    slow_body = _raw_request(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    for sock in (silent, slow_headers, slow_body):
        assert _closed_within(sock, 5.0)  # read_timeout is 1 s here
    assert_still_serves(server)


# ---------------------------------------------------------------- stop strings: fast path against plain


class CharTokenizer:
    """One token per character: decode is exact, so StopText can be checked against a plain cut."""

    def decode(self, ids, **kwargs):
        return "".join(chr(i) for i in ids)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text("abc", max_size=40), stops=st.lists(st.text("abc", min_size=1, max_size=5), max_size=3))
def test_stop_text_equals_the_plain_cut(text, stops):
    tracker = StopText(CharTokenizer(), tuple(stops))
    out, stopped = "", False
    for ch in text:
        delta, stopped = tracker.push(ord(ch))
        out += delta
        if stopped:
            break
    if not stopped:
        out += tracker.flush()
    assert (out, stopped) == plain_stop_cut(text, stops)


def plain_stop_cut(text: str, stops) -> tuple[str, bool]:
    """Generation ends at the first token whose text so far holds a stop string, cut at its earliest start."""
    for end in range(1, len(text) + 1):
        cuts = [i for i in (text[:end].find(s) for s in stops) if i >= 0]
        if cuts:
            return text[:min(cuts)], True
    return text, False


def test_stop_text_is_linear_in_the_stop_strings_length():
    tracker = StopText(CharTokenizer(), ("a" * 240_000 + "b", "ab" * 120_000))
    start = time.perf_counter()
    for _ in range(500):
        tracker.push(ord("a"))
    assert time.perf_counter() - start < 0.5
    assert tracker.flush() == "a" * 500  # all 500 were held back: they may begin the first stop string


# ---------------------------------------------------------------- fuzzing the HTTP API


json_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
model_names = st.sampled_from(["tunelens-base", "tunelens-adapter", "auto", ""]) | json_any
small_int = st.integers(-3, 8) | json_any
sampling_fields = {
    "model": model_names,
    "temperature": st.floats(-1, 3) | st.sampled_from([1e-45, 5e-324, float("nan"), float("inf")]) | json_any,
    "top_p": st.floats(-0.5, 1.5) | st.sampled_from([1e-45, float("nan")]) | json_any,
    "n": small_int, "stream": st.booleans() | json_any,
    "stop": st.text(max_size=8) | st.lists(st.text(max_size=8), max_size=6) | json_any,
    "seed": st.integers(-(2 ** 65), 2 ** 65) | json_any,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_any}) | json_any,
}
mixed_completions = st.fixed_dictionaries({}, optional={
    **sampling_fields, "prompt": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=2) | json_any,
    "max_tokens": small_int, "logprobs": small_int | st.integers(15, 25), "echo": st.booleans() | json_any})
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x"]) | json_any},
                                optional={"content": st.text(max_size=20) | st.none() | json_any
                                          | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                            "text": st.text(max_size=8)}), max_size=2)})
mixed_chats = st.fixed_dictionaries({}, optional={
    **sampling_fields, "messages": st.lists(message, max_size=3) | json_any, "max_tokens": small_int,
    "max_completion_tokens": small_int, "logprobs": st.booleans() | json_any, "top_logprobs": small_int})

# Well-typed requests with edge values: these reach the model, where a 500 would hide.
valid_sampling = {
    "temperature": st.floats(0, 2) | st.sampled_from([0.0, 1e-45, 5e-324, 2.0]),
    "top_p": st.floats(0, 1, exclude_min=True) | st.sampled_from([1e-45, 1.0]),
    "stream": st.booleans(), "stop": st.none() | st.text(max_size=6) | st.lists(st.text(max_size=6), max_size=4),
    "seed": st.none() | st.integers(-(2 ** 63), 2 ** 64 - 1),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}
model_name = st.sampled_from(["tunelens-base", "tunelens-adapter"])
valid_completions = st.fixed_dictionaries(
    {"model": model_name, "prompt": st.text(max_size=40) | st.lists(st.text(max_size=20), min_size=1, max_size=1)},
    optional={**valid_sampling, "max_tokens": st.integers(1, 16), "logprobs": st.none() | st.integers(0, 20)})
user_turn = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=40)})
system_turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": st.text(max_size=20)})
valid_chats = st.fixed_dictionaries(
    {"model": model_name, "messages": st.tuples(st.lists(system_turn, max_size=1), user_turn).map(lambda t: t[0] + [t[1]])},
    optional={**valid_sampling, "max_tokens": st.integers(1, 16), "max_completion_tokens": st.integers(1, 16),
              "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20)},
).map(lambda body: body if body.get("logprobs") else {k: v for k, v in body.items() if k != "top_logprobs"})
completion_bodies = valid_completions | mixed_completions
chat_bodies = valid_chats | mixed_chats

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check_fuzzed(server, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(server.url + path, content=content, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code < 500, (body, response.text)
    event(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        assert_openai_error(response, response.status_code)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert '"server_error"' not in response.text and response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")


@FUZZ
@given(body=completion_bodies)
def test_fuzz_completions(server, body):
    _check_fuzzed(server, "/v1/completions", body)


@FUZZ
@given(body=chat_bodies)
def test_fuzz_chat_completions(server, body):
    _check_fuzzed(server, "/v1/chat/completions", body)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_fuzz_raw_bodies(server, body):
    _check_fuzzed(server, "/v1/chat/completions", body)


def test_the_server_still_serves_after_fuzzing(server):
    assert_still_serves(server)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'code="500"' not in metrics.replace('tunelens_requests_total{path="/v1/completions",code="500"}', "")
