"""Generated tokens per second of batched vs one-at-a-time generation, as the eval runs it.

All ways answer the same prompts (eval-style coding instructions) with the same model, greedily, in
this one run: one-at-a-time calls `generate_batch` with batch_size=1 (the plain equivalent), batched
with batch_size=N, and "model.generate" is the batched path as it was before the engine's own loop
replaced `model.generate` (kept here, for this comparison only). Generated tokens are counted by
re-encoding each answer, so padding is never counted. Targets on a 2-core CPU with gemma3-270m:
batched at least 2x one-at-a-time, and the engine at least as fast as model.generate (ratio >= 1).
Each of `--repeats` repetitions runs the three ways in turn, so a burst of load from other jobs does not
land on one side only; tokens/s are the medians of the repetitions, with their min and max.

    python bench/eval_throughput.py [--model gemma3-270m|tiny] [--prompts 8] [--batch-size 8]
                                    [--max-new-tokens 64] [--threads 1] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

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


def old_generate_batch(model, tokenizer, prompts, sampling, batch_size=8) -> list[str]:
    """The batched path before the engine's loop: left-padded batches through `model.generate` (greedy)."""
    import torch

    from tunelens.model.prompts import encode_prompt, stop_token_ids, strip_stop_text

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=sampling.max_new_tokens,
                                 eos_token_id=stop_token_ids(tokenizer), pad_token_id=pad_id, do_sample=False,
                                 temperature=None, top_p=None, top_k=None)
        for row in out[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            answers.append(strip_stop_text(tokenizer, text).replace(tokenizer.pad_token or "\0", ""))
    return answers


def timed_old(model, tokenizer, prompts, sampling, batch_size) -> tuple[float, int, list[str]]:
    start = time.perf_counter()
    answers = old_generate_batch(model, tokenizer, prompts, sampling, batch_size)
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
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help="repetitions of the three ways in turn; medians kept")
    add_json_argument(parser)
    args = parser.parse_args()

    import torch

    from tunelens.engine.generate import SamplingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    timed(model, tokenizer, prompts[:1], SamplingConfig(max_new_tokens=4), 1)  # warm-up: first call pays setup
    timed_old(model, tokenizer, prompts[:1], SamplingConfig(max_new_tokens=4), 1)
    runs = {"one at a time": [], "batched": [], "model.generate": []}
    for repeat in range(args.repeats):
        print(f"repetition {repeat + 1}/{args.repeats}: {len(prompts)} prompts, three ways ...", file=sys.stderr,
              flush=True)
        runs["one at a time"].append(timed(model, tokenizer, prompts, sampling, 1))
        runs["batched"].append(timed(model, tokenizer, prompts, sampling, args.batch_size))
        runs["model.generate"].append(timed_old(model, tokenizer, prompts, sampling, args.batch_size))
    figures = Figures("eval_throughput", args, torch_threads=torch.get_num_threads())
    rates = {name: figures.add(f"{name} tokens/s", "tokens/s", [tokens / seconds for seconds, tokens, _ in done])
             for name, done in runs.items()}
    single_answers, batch_answers, old_answers = (runs[name][0][2] for name in runs)
    same = sum(a == b for a, b in zip(single_answers, batch_answers))
    print(f"model {args.model}, {len(prompts)} prompts, greedy, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repetitions (median [min, max])")
    for name, label in (("one at a time", "one at a time:     "), ("batched", f"batched (size {args.batch_size:2d}):"),
                        ("model.generate", f"model.generate (size {args.batch_size:2d}):")):
        rate = rates[name]
        print(f"{label} {runs[name][0][1]:5d} tokens, {rate['median']:7.1f} tokens/s [{rate['min']:.1f}, {rate['max']:.1f}]")
    speedup = figures.ratio("batched / one at a time", "batched tokens/s", "one at a time tokens/s", paired=True,
                            target=">= 2")
    print(f"batched / one at a time: {speedup:5.2f}x  (target >= 2x)")
    engine = figures.ratio("engine / model.generate, batched", "batched tokens/s", "model.generate tokens/s",
                           paired=True, target=">= 1")
    pairs = figures.ratios["engine / model.generate, batched"]["paired"]
    print(f"engine / model.generate, batched: {engine:5.2f}x  (target >= 1.0; medians of {args.repeats} "
          f"repetitions); per repetition: min {pairs['min']:.2f}x, max {pairs['max']:.2f}x")
    print(f"identical greedy answers: {same}/{len(prompts)} one at a time vs batched (padding can change float "
          f"rounding), {sum(a == b for a, b in zip(batch_answers, old_answers))}/{len(prompts)} engine vs model.generate")
    figures.fact("identical answers, one at a time vs batched", f"{same}/{len(prompts)}")
    # Other jobs on the machine slow both runs, batched ones less than proportionally: report the load.
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    figures.write(args.json)


if __name__ == "__main__":
    main()
