"""Tokens per second of the batching server vs the one-at-a-time server, under concurrent clients.

One model, two servers on loopback in this one run: `--max-batch 1` (one request at a time, the
baseline) and `--max-batch N` (waiting requests decode together, tunelens/serve/batching.py). Each
gets the same load: `--clients` threads, each with its own official `openai` client, released together
by a barrier, each asking one chat completion (greedy, `--max-tokens`). Tokens are the servers' own
`usage.completion_tokens`. Then the p50 latency of a lone request (`--lone` requests one after
another) on each server. Errors are counted, never skipped. Targets (issue 19): tokens/s >= 3x the
one-at-a-time server, lone p50 within 10% of it, zero errors.

    python bench/serve_load.py [--model gemma3-270m|tiny] [--clients 32] [--max-tokens 16]
                               [--max-batch 32] [--lone 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

QUERIES = [
    "Write a Python function that reverses the order of words in a sentence.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "Write a Python function that flattens a list of lists one level deep.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function that splits a list into chunks of size n.",
    "Write a Python function that returns the FizzBuzz strings from 1 to n.",
    "Write a Python function that merges two dictionaries, the second one winning.",
    "Write a Python function that returns the second largest distinct value of a list.",
]


def load(spec: str):
    if spec == "tiny":
        from tunelens.testing import tiny_model

        return tiny_model("gemma3", layers=4, hidden=128)
    from tunelens.model.load import load_model

    return load_model(spec, device="cpu")


def ask(url: str, query: str, max_tokens: int):
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    answer = client.chat.completions.create(model="tunelens-base", messages=[{"role": "user", "content": query}],
                                            max_tokens=max_tokens, temperature=0)
    return answer.choices[0].message.content, answer.usage.completion_tokens


def load_test(url: str, clients: int, max_tokens: int) -> tuple[float, int, list, list[str]]:
    """(seconds, tokens, answers, errors) for `clients` requests released at once."""
    answers, errors = [None] * clients, []
    barrier = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        barrier.wait()
        try:
            answers[k] = ask(url, QUERIES[k % len(QUERIES)] + f" (case {k})", max_tokens)
        except Exception as err:  # counted and printed: the target is zero
            errors.append(repr(err))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return seconds, sum(a[1] for a in answers if a), answers, errors


def lone_p50(url: str, runs: int, max_tokens: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        ask(url, QUERIES[0], max_tokens)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="model spec, or `tiny` (random, in-process)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--lone", type=int, default=5, help="lone requests timed on each server")
    # One thread, as bench/eval_throughput.py measured: on a shared 2-core VM two OpenMP threads make each
    # small matmul wait for a scheduler slice. Pass 0 for torch's default.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from tunelens.serve import ServeLimits, create_app, start_in_thread

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    limits = ServeLimits(max_tokens=max(args.max_tokens, 16))
    single = start_in_thread(create_app(model, tokenizer, limits=limits, max_batch=1))
    batched = start_in_thread(create_app(model, tokenizer, limits=limits, max_batch=args.max_batch))
    try:
        ask(single.url, QUERIES[0], 2)  # warm-up: the first call pays one-off setup
        ask(batched.url, QUERIES[0], 2)
        print(f"one at a time: {args.clients} clients ...", file=sys.stderr, flush=True)
        single_s, single_tokens, single_answers, single_errors = load_test(single.url, args.clients, args.max_tokens)
        print(f"batching: {args.clients} clients ...", file=sys.stderr, flush=True)
        batch_s, batch_tokens, batch_answers, batch_errors = load_test(batched.url, args.clients, args.max_tokens)
        print("lone requests ...", file=sys.stderr, flush=True)
        single_p50 = lone_p50(single.url, args.lone, args.max_tokens)
        batch_p50 = lone_p50(batched.url, args.lone, args.max_tokens)
    finally:
        single.stop()
        batched.stop()
    same = sum(a is not None and a == b for a, b in zip(single_answers, batch_answers))
    single_rate, batch_rate = single_tokens / single_s, batch_tokens / batch_s
    print(f"model {args.model}, {args.clients} concurrent clients (openai {_openai_version()}), greedy, "
          f"max_tokens {args.max_tokens}, torch threads {torch.get_num_threads()}")
    print(f"one at a time:        {single_tokens:5d} tokens in {single_s:6.1f} s = {single_rate:7.1f} tokens/s, "
          f"{len(single_errors)} errors")
    print(f"batching (max {args.max_batch:3d}): {batch_tokens:5d} tokens in {batch_s:6.1f} s = {batch_rate:7.1f} "
          f"tokens/s, {len(batch_errors)} errors")
    print(f"batching / one at a time: {batch_rate / single_rate:5.2f}x tokens/s  (target >= 3x)")
    print(f"lone request p50: {batch_p50:6.2f} s batching vs {single_p50:6.2f} s one at a time = "
          f"{batch_p50 / single_p50:4.2f}x  (target <= 1.10x)")
    print(f"identical greedy answers: {same}/{args.clients}")
    for error in (single_errors + batch_errors)[:5]:
        print("error:", error)
    # Other jobs on the machine slow both runs, batched ones less than proportionally: report the load.
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _openai_version() -> str:
    import openai

    return openai.__version__


if __name__ == "__main__":
    main()
