"""The batching server: requests decoded together must answer exactly as each one alone."""

import threading

import httpx
import openai
import pytest

from tunelens.model.load import as_loaded
from tunelens.model.prompts import stop_token_ids
from tunelens.serve import ServeLimits, create_app, start_in_thread
from tunelens.serve.batching import Batch, Request, run_batch, take_group
from tunelens.serve.engine import Job, run_job
from tunelens.testing import tiny_lora_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_lora_model("gemma3", seed=5)


def _jobs(tokenizer, use_adapter):
    # Prompts of different lengths (left padding), greedy and seeded sampling, logprobs or not,
    # user stop strings, different max_tokens: every per-request setting at once.
    prompts = ["def add(a, b):", "for i in range(10):\n    print(i)", "x", "import os\nimport sys\n", "class A:"]
    settings = [(0.0, 1.0, None, 3, ()), (1.0, 1.0, 7, 0, ()), (0.0, 1.0, None, None, ("f f", "R")),
                (0.8, 0.9, 11, 2, ()), (0.0, 1.0, None, None, ())]
    return [Job(tokenizer(p)["input_ids"], 5 + 3 * k, t, top_p, seed, top, stops, use_adapter=use_adapter)
            for k, (p, (t, top_p, seed, top, stops)) in enumerate(zip(prompts, settings))]


@pytest.mark.parametrize("use_adapter", [True, False])
def test_a_batch_answers_as_each_request_alone(tiny, use_adapter):
    model, tokenizer = tiny
    loaded, stops = as_loaded(model, tokenizer), set(stop_token_ids(tokenizer))
    jobs = _jobs(tokenizer, use_adapter)
    alone = [run_job(loaded, job, stops, lambda d, i: None, threading.Event()) for job in jobs]
    deltas = {k: [] for k in range(len(jobs))}
    requests = [Request(job, (lambda k: lambda d, i: deltas[k].append(d))(k), threading.Event(), None)
                for k, job in enumerate(jobs)]
    together = dict(run_batch(loaded, requests, stops))
    assert sorted(together) == list(range(len(jobs)))
    for k, (single, batched) in enumerate(zip(alone, [together[k] for k in range(len(jobs))])):
        assert batched.ids == single.ids and batched.text == single.text == "".join(deltas[k]), k
        assert batched.finish_reason == single.finish_reason and batched.completion_tokens == single.completion_tokens
        assert [t.logprob for t in batched.tokens] == pytest.approx([t.logprob for t in single.tokens], abs=1e-5)
        assert [[a for a, _ in t.top] for t in batched.tokens] == [[a for a, _ in t.top] for t in single.tokens]
    assert {o.finish_reason for o in alone} == {"length", "stop"}  # both ways of ending are exercised


def test_the_answers_leave_as_they_end_and_a_cancelled_one_leaves_at_once(tiny):
    model, tokenizer = tiny
    loaded, stops = as_loaded(model, tokenizer), set(stop_token_ids(tokenizer))
    ids = tokenizer("def f():")["input_ids"]
    jobs = [Job(ids, n, 0.0, 1.0, None, None, (), use_adapter=True) for n in (9, 2, 5)]
    cancelled = threading.Event()
    cancelled.set()
    requests = [Request(job, lambda d, i: None, threading.Event(), None) for job in jobs]
    requests.append(Request(Job(ids, 9, 0.0, 1.0, None, None, (), True), lambda d, i: None, cancelled, None))
    order = [(index, outcome.completion_tokens, outcome.finish_reason)
             for index, outcome in run_batch(loaded, requests, stops)]
    assert order == [(3, 0, "cancelled"), (1, 2, "length"), (2, 5, "length"), (0, 9, "length")]


def test_take_group_keeps_one_route_and_the_cap():
    def request(adapter):
        return Request(Job([1], 1, 0.0, 1.0, None, None, (), use_adapter=adapter), None, threading.Event(), None)

    base1, adapter1, base2, base3, adapter2 = pending = [request(False), request(True), request(False),
                                                         request(False), request(True)]
    assert take_group(pending, 2) == [base1, base2] and pending == [adapter1, base3, adapter2]
    assert take_group(pending, 8) == [adapter1, adapter2] and pending == [base3]
    assert take_group([], 4) == []
    base, adapter1, adapter2 = pending = [request(False), request(True), request(True)]
    assert take_group(pending, 1, route=True) == [adapter1] and pending == [base, adapter2]  # the batch's route
    assert take_group(pending, 0) == []


def test_requests_joining_a_running_batch_answer_as_alone(tiny):
    model, tokenizer = tiny
    loaded, stops = as_loaded(model, tokenizer), set(stop_token_ids(tokenizer))
    jobs = _jobs(tokenizer, True)
    alone = [run_job(loaded, job, stops, lambda d, i: None, threading.Event()) for job in jobs]
    requests = [Request(job, lambda d, i: None, threading.Event(), None) for job in jobs]
    batch, outcomes = Batch(loaded, requests[:2], stops), {}
    for step in range(40):
        if step == 2:
            batch.join(requests[2:4])  # mid-decode: the first two have taken two tokens each
        if step == 4:
            batch.join(requests[4:])
        outcomes.update(batch.step())
        if not batch.rows:
            break
    assert sorted(outcomes) == list(range(len(jobs)))
    for k, single in enumerate(alone):
        joined = outcomes[k]
        assert joined.ids == single.ids and joined.text == single.text and joined.finish_reason == single.finish_reason
        assert [t.logprob for t in joined.tokens] == pytest.approx([t.logprob for t in single.tokens], abs=1e-5)


def _metric(url, name):
    text = httpx.get(url + "/metrics").text
    return next(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith(name + " "))


def test_concurrent_clients_are_batched_and_answer_as_the_one_at_a_time_server(tiny):
    model, tokenizer = tiny
    limits = ServeLimits(max_tokens=32)
    single = start_in_thread(create_app(model, tokenizer, limits=limits, max_batch=1))
    batched = start_in_thread(create_app(model, tokenizer, limits=limits, max_batch=8))
    cases = [("tunelens-adapter" if k % 3 else "tunelens-base", f"Write function number {k} that adds.", k % 2 == 0)
             for k in range(12)]

    def ask(url, model_name, prompt, stream):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        kwargs = dict(model=model_name, messages=[{"role": "user", "content": prompt}], max_tokens=6,
                      temperature=0, logprobs=True, top_logprobs=2, stop=["zz"])
        if not stream:
            answer = client.chat.completions.create(**kwargs)
            return answer.choices[0].message.content, [e.logprob for e in answer.choices[0].logprobs.content]
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        return ("".join(c.choices[0].delta.content or "" for c in chunks),
                [e.logprob for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content])

    try:
        expected = [ask(single.url, *case) for case in cases]
        results, errors = [None] * len(cases), []
        barrier = threading.Barrier(len(cases))

        def worker(k):
            try:
                barrier.wait()
                results[k] = ask(batched.url, *cases[k])
            except Exception as err:  # collected and asserted in the test's thread
                errors.append(repr(err))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(cases))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert errors == []
        for (text, logprobs), (want_text, want_logprobs) in zip(results, expected):
            assert text == want_text and logprobs == pytest.approx(want_logprobs, abs=1e-5)
        # Batching really happened: fewer batches than requests.
        assert _metric(batched.url, "tunelens_batched_requests_total") == len(cases)
        assert _metric(batched.url, "tunelens_batches_total") < len(cases)

        assert _metric(batched.url, "tunelens_in_flight") == 0
    finally:
        single.stop()
        batched.stop()


def test_the_engine_lets_late_requests_join_the_running_batch(tiny):
    import asyncio

    from tunelens.serve.engine import Engine

    model, tokenizer = tiny
    loaded, stops = as_loaded(model, tokenizer), set(stop_token_ids(tokenizer))
    engine = Engine(loaded, limits=ServeLimits(max_tokens=64), max_batch=8)
    jobs = _jobs(tokenizer, True)
    jobs[0].max_tokens = jobs[1].max_tokens = 30  # still decoding when the others arrive
    alone = [run_job(loaded, job, stops, lambda d, i: None, threading.Event()) for job in jobs]
    started = threading.Event()

    def first_tokens(delta, info, seen=[]):
        seen.append(delta)
        if len(seen) >= 3:
            started.set()

    async def scenario():
        hold = threading.Event()
        engine.executor.submit(hold.wait)  # so that the first two are both waiting when the thread frees
        early = [asyncio.create_task(engine.generate(jobs[0], first_tokens, threading.Event())),
                 asyncio.create_task(engine.generate(jobs[1], lambda d, i: None, threading.Event()))]
        await asyncio.sleep(0.05)
        hold.set()
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 60)
        late = [asyncio.create_task(engine.generate(job, lambda d, i: None, threading.Event())) for job in jobs[2:]]
        return await asyncio.gather(*early, *late)

    outcomes = asyncio.run(scenario())
    for single, batched in zip(alone, outcomes):
        assert batched.ids == single.ids and batched.text == single.text
        assert batched.finish_reason == single.finish_reason
    assert engine.metrics.joins >= 1 and engine.metrics.batches == 1  # the late ones joined the first batch
    assert engine.metrics.batched_requests == len(jobs) and engine.active is None
