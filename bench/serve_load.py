"""Tokens per second of the batching server vs the one-at-a-time server, under concurrent clients.

One model, two servers on loopback in this one run: `--max-batch 1` (one request at a time, the
baseline) and `--max-batch N` (waiting requests decode together, tunelens/serve/batching.py). Each
gets the same load: `--clients` threads, each with its own official `openai` client, released together
by a barrier, each asking one chat completion (greedy, `--max-tokens`). Tokens are the servers' own
`usage.completion_tokens`. Then the p50 latency of a lone request (`--lone` requests one after
another) on each server. The load test runs `--repeats` times on each server in turn; tokens/s and lone
latency are medians with their min and max. Errors are counted, never skipped. Targets (issue 19): tokens/s >= 3x the
one-at-a-time server, lone p50 within 10% of it, zero errors.

    python bench/serve_load.py [--model gemma3-270m|tiny] [--clients 32] [--max-tokens 16]
                               [--max-batch 32] [--lone 5] [--threads 1] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

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


def lone_times(url: str, runs: int, max_tokens: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        ask(url, QUERIES[0], max_tokens)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="model spec, or `tiny` (random, in-process)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--lone", type=int, default=MIN_REPEATS, help="lone requests timed on each server")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="load tests on each server, in turn")
    add_json_argument(parser)
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
        loads = {"one at a time": [], "batching": []}
        for repeat in range(args.repeats):
            print(f"load test {repeat + 1}/{args.repeats}: {args.clients} clients on each server ...",
                  file=sys.stderr, flush=True)
            loads["one at a time"].append(load_test(single.url, args.clients, args.max_tokens))
            loads["batching"].append(load_test(batched.url, args.clients, args.max_tokens))
        print("lone requests ...", file=sys.stderr, flush=True)
        single_lone = lone_times(single.url, args.lone, args.max_tokens)
        batch_lone = lone_times(batched.url, args.lone, args.max_tokens)
    finally:
        single.stop()
        batched.stop()
    figures = Figures("serve_load", args, torch_threads=torch.get_num_threads(), openai=_openai_version())
    rates = {name: figures.add(f"{name} tokens/s", "tokens/s", [tokens / seconds for seconds, tokens, _, _ in done])
             for name, done in loads.items()}
    errors = {name: [e for done in runs for e in done[3]] for name, runs in loads.items()}
    single_answers, batch_answers = loads["one at a time"][0][2], loads["batching"][0][2]
    same = sum(a is not None and a == b for a, b in zip(single_answers, batch_answers))
    print(f"model {args.model}, {args.clients} concurrent clients (openai {_openai_version()}), greedy, "
          f"max_tokens {args.max_tokens}, torch threads {torch.get_num_threads()}, {args.repeats} load tests each "
          "(median [min, max])")
    for name, label in (("one at a time", "one at a time:       "), ("batching", f"batching (max {args.max_batch:3d}):")):
        rate = rates[name]
        print(f"{label} {loads[name][0][1]:5d} tokens per test, {rate['median']:7.1f} tokens/s "
              f"[{rate['min']:.1f}, {rate['max']:.1f}], {len(errors[name])} errors")
    speedup = figures.ratio("batching / one at a time, tokens/s", "batching tokens/s", "one at a time tokens/s",
                            paired=True, target=">= 3")
    print(f"batching / one at a time: {speedup:5.2f}x tokens/s  (target >= 3x)")
    single_p50 = figures.add("lone request, one at a time", "s", single_lone)["median"]
    batch_p50 = figures.add("lone request, batching", "s", batch_lone)["median"]
    lone = figures.ratio("lone request p50, batching / one at a time", "lone request, batching",
                         "lone request, one at a time", target="<= 1.10")
    print(f"lone request p50: {batch_p50:6.2f} s batching vs {single_p50:6.2f} s one at a time = "
          f"{lone:4.2f}x  (target <= 1.10x)")
    print(f"identical greedy answers: {same}/{args.clients}")
    figures.fact("errors", {name: len(found) for name, found in errors.items()})
    figures.fact("identical answers", f"{same}/{args.clients}")
    single_errors, batch_errors = errors["one at a time"], errors["batching"]
    for error in (single_errors + batch_errors)[:5]:
        print("error:", error)
    # Other jobs on the machine slow both runs, batched ones less than proportionally: report the load.
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    figures.write(args.json)


def _openai_version() -> str:
    import openai

    return openai.__version__


if __name__ == "__main__":
    main()
