"""Generated tokens per second of batched vs one-at-a-time generation, as the eval runs it.

Both ways answer the same prompts (eval-style coding instructions) with the same model, greedily, in
this one run: one-at-a-time calls `generate_batch` with batch_size=1 (the plain equivalent), batched
with batch_size=N. Generated tokens are counted by re-encoding each answer, so padding is never
counted. Target on a 2-core CPU with gemma3-270m: batched at least 2x one-at-a-time.

    python bench/eval_throughput.py [--model gemma3-270m|tiny] [--prompts 8] [--batch-size 8]
                                    [--max-new-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

PROMPTS = [
    "Write a Python function `reverse_words(s)` that reverses the order of words in a sentence.",
    "Write a Python function `is_palindrome(s)` that ignores case and non-letters.",
    "Write a Python function `flatten(xss)` that flattens a list of lists one level deep.",
    "Write a Python function `count_vowels(s)` that returns the number of vowels in s.",
    "Write a Python function `chunk(xs, n)` that splits a list into chunks of size n.",
    "Write a Python function `fizzbuzz(n)` that returns the FizzBuzz strings from 1 to n.",
    "Write a Python function `merge_dicts(a, b)` where values of b win on shared keys.",
    "Write a Python function `second_largest(xs)` returning the second largest distinct value.",
    "Write a Python function `roman(n)` that converts an integer to a Roman numeral.",
    "Write a Python function `word_freq(text)` returning a dict of word counts.",
    "Write a Python function `transpose(m)` that transposes a matrix given as a list of rows.",
    "Write a Python function `gcd(a, b)` using Euclid's algorithm.",
    "Write a Python function `unique(xs)` that removes duplicates but keeps the first order.",
    "Write a Python function `median(xs)` for a non-empty list of numbers.",
    "Write a Python function `snake_case(name)` that converts CamelCase to snake_case.",
    "Write a Python function `rotate(xs, k)` that rotates a list right by k places.",
]


def load(spec: str):
    if spec == "tiny":
        from tunelens.testing import tiny_model

        return tiny_model("gemma3", layers=4, hidden=128)
    from tunelens.model.load import load_model

    return load_model(spec, device="cpu")


def timed(model, tokenizer, prompts, sampling, batch_size) -> tuple[float, int, list[str]]:
    from tunelens.engine.generate import generate_batch

    start = time.perf_counter()
    answers = generate_batch(model, tokenizer, prompts, sampling, batch_size=batch_size)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return seconds, tokens, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="model spec, or `tiny` (random, in-process)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    # One thread by default: on a shared 2-core VM, two OpenMP threads make every small GEMM wait for a
    # scheduler slice (measured: an 8x640 @ 640x2048 matmul took 16 ms with 2 threads, 0.8 ms with 1),
    # which erases what batching gains. Pass --threads 0 for torch's default.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from tunelens.engine.generate import SamplingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    timed(model, tokenizer, prompts[:1], SamplingConfig(max_new_tokens=4), 1)  # warm-up: first call pays setup
    print(f"one at a time: {len(prompts)} prompts ...", file=sys.stderr, flush=True)
    single_s, single_tokens, single_answers = timed(model, tokenizer, prompts, sampling, 1)
    print(f"batched: {len(prompts)} prompts ...", file=sys.stderr, flush=True)
    batch_s, batch_tokens, batch_answers = timed(model, tokenizer, prompts, sampling, args.batch_size)
    same = sum(a == b for a, b in zip(single_answers, batch_answers))
    single_rate, batch_rate = single_tokens / single_s, batch_tokens / batch_s
    print(f"model {args.model}, {len(prompts)} prompts, greedy, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"one at a time:      {single_tokens:5d} tokens in {single_s:6.1f} s = {single_rate:7.1f} tokens/s")
    print(f"batched (size {args.batch_size:2d}): {batch_tokens:5d} tokens in {batch_s:6.1f} s = {batch_rate:7.1f} tokens/s")
    print(f"batched / one at a time: {batch_rate / single_rate:5.2f}x  (target >= 2x)")
    print(f"identical greedy answers: {same}/{len(prompts)} (padding can change float rounding)")
    # Other jobs on the machine slow both runs, batched ones less than proportionally: report the load.
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
