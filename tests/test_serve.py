"""The OpenAI-compatible server, on loopback with a tiny model, called with the official openai client."""

import json
import threading

import httpx
import openai
import pytest
import torch

from test_gate import IN_DOMAIN_INDEX, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, tiny_adapter_model
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.gate import build_gate, calibrate
from tunelens.serve import ServeLimits, StopText, create_app, start_in_thread


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, tokenizer = tiny_adapter_model(seed=3)
    gate = build_gate(IN_DOMAIN_INDEX, tmp_path_factory.mktemp("gate"), embedder=HashingEmbedder(256), k=3)
    calibrate(gate, IN_DOMAIN_QUERIES, OUT_OF_DOMAIN, target_coverage=5 / 6)
    limits = ServeLimits(max_tokens=64, max_prompt_tokens=200, max_body_bytes=20_000)
    handle = start_in_thread(create_app(model, tokenizer, gate, limits))
    yield handle, model, tokenizer
    handle.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _extra(obj, name="tunelens"):
    return (obj.model_extra or {}).get(name)


def test_models_and_health(served, client):
    assert [m.id for m in client.models.list().data] == ["tunelens-adapter", "tunelens-base", "auto"]
    assert client.models.retrieve("auto").id == "auto"
    health = httpx.get(served[0].url + "/healthz").json()
    assert health["status"] == "ok" and health["adapter"] and health["gate"]


def test_completion_matches_generate_and_direct_logprobs(served, client):
    from tunelens.engine.generate import SamplingConfig, generate_batch, prompt_ids_for

    _, model, tokenizer = served
    prompt = "def add(a, b):"
    result = client.completions.create(model="tunelens-adapter", prompt=prompt, max_tokens=6, temperature=0,
                                       logprobs=3)
    choice = result.choices[0]
    expected = generate_batch(model, tokenizer, [prompt], SamplingConfig(max_new_tokens=6, temperature=0), raw=True)[0]
    assert choice.text == expected
    assert result.model == "tunelens-adapter" and _extra(result) == {"route": "adapter", "reason": "forced"}
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == result.usage.completion_tokens
    ids = torch.tensor([prompt_ids_for(tokenizer, prompt, raw=True)])
    with torch.no_grad():
        first = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
    assert logprobs.token_logprobs[0] == pytest.approx(float(first.max()), abs=1e-4)
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 3 and chosen == pytest.approx(max(top.values()), abs=1e-6)  # greedy = argmax
    assert logprobs.text_offset == sorted(logprobs.text_offset)
    assert result.usage.prompt_tokens == ids.shape[1]


def test_chat_logprobs_bytes_spell_the_content(client):
    result = client.chat.completions.create(
        model="tunelens-base", messages=[{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Reverse a string."}],
        max_tokens=8, temperature=0, logprobs=True, top_logprobs=5)
    choice = result.choices[0]
    entries = choice.logprobs.content
    assert result.model == "tunelens-base" and choice.message.role == "assistant"
    assert len(entries) == result.usage.completion_tokens
    assert all(len(e.top_logprobs) == 5 and e.logprob <= 0 for e in entries)
    assert bytes(b for e in entries for b in e.bytes).decode("utf-8", "replace") == choice.message.content


def test_streams_concatenate_to_the_plain_answers(client):
    kwargs = dict(model="tunelens-adapter", max_tokens=7, temperature=0)
    plain = client.completions.create(prompt="for i in range", **kwargs).choices[0].text
    chunks = list(client.completions.create(prompt="for i in range", stream=True, logprobs=1, **kwargs))
    assert _extra(chunks[0])["route"] == "adapter"
    assert "".join(c.choices[0].text for c in chunks) == plain
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks if c.choices[0].logprobs) <= 7

    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    plain_chat = client.chat.completions.create(messages=messages, **kwargs)
    stream = list(client.chat.completions.create(messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **kwargs))
    assert stream[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == plain_chat.choices[0].message.content
    assert stream[-1].choices == [] and stream[-1].usage.completion_tokens == plain_chat.usage.completion_tokens


def test_seeded_sampling_repeats(client):
    kwargs = dict(model="tunelens-base", prompt="import", max_tokens=8, temperature=1.0, seed=7)
    assert client.completions.create(**kwargs).choices[0].text == client.completions.create(**kwargs).choices[0].text


def test_auto_routes_through_the_gate(client):
    near = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": IN_DOMAIN_INDEX[0]}],
                                          max_tokens=2, temperature=0)
    far = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": OUT_OF_DOMAIN[1]}],
                                         max_tokens=2, temperature=0)
    assert _extra(near)["route"] == "adapter" and near.model == "tunelens-adapter"
    assert _extra(far)["route"] == "base" and far.model == "tunelens-base"
    assert _extra(far)["score"] < _extra(far)["threshold"] <= _extra(near)["score"]
    assert set(_extra(near)["signals"]) == {"max_similarity", "mean_similarity"}


def test_adapter_and_base_differ(client):
    kwargs = dict(prompt="def add(a, b):", max_tokens=1, temperature=0, logprobs=0)
    adapter = client.completions.create(model="tunelens-adapter", **kwargs).choices[0].logprobs.token_logprobs[0]
    base = client.completions.create(model="tunelens-base", **kwargs).choices[0].logprobs.token_logprobs[0]
    assert adapter != pytest.approx(base, abs=1e-4)


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "must be an object"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "max_tokens": "5"}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "tunelens-base", "prompt": 5}).encode(), 400, "prompt"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "temperature": True}).encode(), 400, "temperature"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "max_tokens": 65}).encode(), 400, "limit of 64"),
    (json.dumps({"model": "tunelens-base", "prompt": "x " * 300}).encode(), 400, "over this server's limit of 200"),
    (json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "unknown model 'gpt-4'"),
    (json.dumps({"model": "tunelens-base", "prompt": "x", "logprobs": 21}).encode(), 400, "logprobs"),
    (json.dumps({"model": "tunelens-base", "prompt": ["a", "b"]}).encode(), 400, "one prompt"),
    (json.dumps({"model": "tunelens-base", "prompt": "x" * 30_000}).encode(), 413, "20000-byte limit"),
])
def test_bad_completion_requests_get_4xx(served, body, status, needle):
    response = httpx.post(served[0].url + "/v1/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]


def test_bad_chat_requests_and_the_server_keeps_serving(served, client):
    url = served[0].url + "/v1/chat/completions"
    multi_turn = {"model": "tunelens-base", "messages": [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"},
                                                         {"role": "user", "content": "c"}]}
    assert "single-turn" in httpx.post(url, json=multi_turn).json()["error"]["message"]
    no_logprobs = {"model": "tunelens-base", "messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}
    assert httpx.post(url, json=no_logprobs).status_code == 400
    bad_role = {"model": "tunelens-base", "messages": [{"role": "wizard", "content": "a"}]}
    assert "messages.0.role" in httpx.post(url, json=bad_role).json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.BadRequestError, match="limit of 64"):
        client.chat.completions.create(model="tunelens-base", messages=[{"role": "user", "content": "a"}],
                                       max_tokens=1000)
    ok = client.chat.completions.create(model="tunelens-base", messages=[{"role": "user", "content": "a"}],
                                        max_tokens=2)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_stop_text_deltas_concatenate_to_the_cut_text(served):
    tokenizer = served[2]
    ids = tokenizer("abc<end_of_turn>def", add_special_tokens=False)["input_ids"]
    tracker = StopText(tokenizer, ("<end_of_turn>",))
    deltas = []
    for token in ids:
        delta, stopped = tracker.push(token)
        deltas.append(delta)
        if stopped:
            break
    assert stopped and "".join(deltas) == "abc"
    tracker = StopText(tokenizer, ("zzz",))
    ids = tokenizer("print('hi') zz", add_special_tokens=False)["input_ids"]
    text = "".join(tracker.push(t)[0] for t in ids)
    assert text == "print('hi') " and tracker.flush() == "zz"  # "zz" was held back: it may begin "zzz"


def test_metrics_count_requests(served, client):
    def count(text, path, code):
        line = f'tunelens_requests_total{{path="{path}",code="{code}"}} '
        return next((int(l.split()[-1]) for l in text.splitlines() if l.startswith(line)), 0)

    before = httpx.get(served[0].url + "/metrics").text
    client.completions.create(model="tunelens-base", prompt="x", max_tokens=1)
    httpx.post(served[0].url + "/v1/completions", content=b"{")
    after = httpx.get(served[0].url + "/metrics").text
    assert count(after, "/v1/completions", 200) == count(before, "/v1/completions", 200) + 1
    assert count(after, "/v1/completions", 400) == count(before, "/v1/completions", 400) + 1
    assert "# TYPE tunelens_routes_total counter" in after and "tunelens_in_flight 0" in after


def test_32_concurrent_clients_get_uncorrupted_answers(served):
    """Each client's greedy answers must equal the ones computed alone: requests never mix state."""
    url = served[0].url + "/v1"
    cases = [("tunelens-adapter", "def add(a, b):"), ("tunelens-base", "def add(a, b):"),
             ("tunelens-adapter", "for i in range"), ("auto", OUT_OF_DOMAIN[0])]
    reference_client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)

    def ask(client, model, prompt, stream):
        kwargs = dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=5, temperature=0,
                      logprobs=True, top_logprobs=2)
        if not stream:
            result = client.chat.completions.create(**kwargs)
            assert result.choices[0].finish_reason in ("length", "stop")
            return result.choices[0].message.content, [e.logprob for e in result.choices[0].logprobs.content]
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        return ("".join(c.choices[0].delta.content or "" for c in chunks),
                [e.logprob for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content])

    expected = {case: ask(reference_client, *case, stream=False) for case in cases}
    errors, checked = [], []

    def worker(index):
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=300)
        for round_ in range(3):
            case = cases[(index + round_) % len(cases)]
            try:
                text, logprobs = ask(client, *case, stream=(index + round_) % 2 == 0)
                assert text == expected[case][0], (case, text)
                assert logprobs == pytest.approx(expected[case][1], abs=1e-5)
                checked.append(case)
            except Exception as err:  # collected and asserted below, in the test's thread
                errors.append(repr(err))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert errors == [] and len(checked) == 96


def test_a_full_queue_answers_503_and_a_gate_must_be_calibrated(tmp_path):
    from tunelens.errors import UserError
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("llama")
    handle = start_in_thread(create_app(model, tokenizer, limits=ServeLimits(max_queue=0)))
    try:
        response = httpx.post(handle.url + "/v1/completions", json={"model": "tunelens-base", "prompt": "x"})
        assert response.status_code == 503 and "server busy" in response.json()["error"]["message"]
        # Without an adapter only the base model is served.
        assert [m["id"] for m in httpx.get(handle.url + "/v1/models").json()["data"]] == ["tunelens-base"]
    finally:
        handle.stop()
    gate = build_gate(IN_DOMAIN_INDEX, tmp_path / "gate", embedder=HashingEmbedder(64))
    with pytest.raises(UserError, match="not calibrated"):
        create_app(model, tokenizer, gate)
