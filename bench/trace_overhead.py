"""What recording costs, and what the shared decode loop gains: `tunelens trace` (fp16 head with the
top-K recomputed in fp32, its default for greedy traces on the CPU), `tunelens trace --exact-probs` (the
fp32 head) and the decode loop without logits (what `serve` and `generate` run for greedy requests
without logprobs) against plain `model.generate` on the same prompt and model.

Prints, from one run: greedy tokens/s of each (median, min and max of --repeats alternating runs, same
tokens), the ratios to generate (target: trace and the decode loop at least 1.5x generate's tokens/s),
the largest probability and entropy differences between the default trace and the exact one over every
step of every prompt (stated tolerance |dp| <= 1e-3), and the memory each way of keeping per-step
distributions holds: generate(output_scores=True) keeps steps x vocabulary floats, the trace steps x K.
Peak memory is measured around each call: CUDA's allocator peak on a GPU, else the process's resident set
sampled every 2 ms, --repeats times each way (medians kept). `--json PATH` writes the figures.

    python bench/trace_overhead.py                      # the embedded gemma3-270m
    python bench/trace_overhead.py --model tiny         # a tiny random Gemma 3 (seconds; for CI)
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

PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring and a doctest."


class PeakRSS:
    """Highest resident set size (bytes) seen while the block runs, above the size when it started."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def peak_memory(fn, device):
    """(result, peak bytes above the start) of calling fn."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        return result, torch.cuda.max_memory_allocated() - start
    with PeakRSS() as watch:
        result = fn()
    return result, watch.growth


def load(spec: str):
    if spec == "tiny":
        from tunelens.testing import tiny_model

        return tiny_model("gemma3", layers=4, hidden=128)
    from tunelens.model.load import load_model

    return load_model(spec)


TOLERANCE = 1e-3  # the |dp| the default trace promises against --exact-probs

# Prompts for the tolerance check beside --prompt: code, prose, and a decision-heavy one.
TOLERANCE_PROMPTS = ["Explain what a Python decorator is, in two sentences.",
                     "Write a Python 2 style print statement that shows the sum of a list.",
                     "def quicksort(xs):"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m", help="embedded name, model directory, or `tiny`")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="timed runs of each (alternating)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 gives steadier figures on a busy machine)")
    add_json_argument(parser)
    return parser.parse_args()


def time_runs(ways: dict, repeats: int, device) -> tuple[dict, dict, list[int]]:
    """Wall and CPU tokens/s of each way over alternating runs; every way must give generate's tokens."""
    import torch

    def timed(fn):
        """(tokens, wall seconds, CPU seconds of this process): on a shared CPU the CPU time is the steadier."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        tokens = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return tokens, time.perf_counter() - start, time.process_time() - cpu_start

    for fn in ways.values():
        fn()  # warm-up: kernels, caches, lazy imports, the head's fp16 copy
    rates = {name: [] for name in ways}
    cpu_rates = {name: [] for name in ways}
    reference = None
    for _ in range(repeats):
        for name, fn in ways.items():
            tokens, seconds, cpu_seconds = timed(fn)
            rates[name].append(len(tokens) / seconds)
            cpu_rates[name].append(len(tokens) / cpu_seconds)
            reference = tokens if reference is None else reference
            if tokens != reference:
                raise SystemExit(f"{name} and generate produced different greedy tokens: not a fair comparison")
    return rates, cpu_rates, reference


def print_speeds(rates: dict, cpu_rates: dict, labels: dict, figures: Figures) -> None:
    for name, label in labels.items():
        wall = figures.add(f"{label.strip()} tokens/s", "tokens/s", rates[name])
        figures.add(f"{label.strip()} tokens/CPU-s", "tokens/CPU-s", cpu_rates[name])
        print(f"{label:22s}: median {wall['median']:8.2f} tokens/s, min {wall['min']:8.2f}, max {wall['max']:8.2f}"
              f"  (runs: {', '.join(f'{r:.2f}' for r in rates[name])})")
    # Medians (never a best-of): the spread of each way's runs is in the record beside them.
    base = labels["generate"].strip()
    for name in [n for n in labels if n != "generate"]:
        label = labels[name].strip()
        wall = figures.ratio(f"{label} / generate, tokens/s", f"{label} tokens/s", f"{base} tokens/s", paired=True,
                             target=">= 1.5")
        cpu = figures.ratio(f"{label} / generate, tokens/CPU-s", f"{label} tokens/CPU-s", f"{base} tokens/CPU-s",
                            paired=True)
        pairs = figures.ratios[f"{label} / generate, tokens/s"]["paired"]
        print(f"{label} tokens/s / generate tokens/s: wall median {wall:.2f}x "
              f"(per run pair {pairs['min']:.2f}-{pairs['max']:.2f}x), CPU-time median {cpu:.2f}x; target >= 1.5x")


def tolerance(model, tokenizer, prompts: list[str], tokens: int, top_k: int, figures: Figures) -> None:
    """Largest differences between the default trace and --exact-probs over every step of `prompts`."""
    from tunelens.inspect.trace import TraceConfig, trace_generate

    worst_p = worst_entropy = 0.0
    steps = 0
    for prompt in prompts:
        fast = trace_generate(model, tokenizer, prompt, TraceConfig(max_new_tokens=tokens, top_k=top_k)).steps
        exact = trace_generate(model, tokenizer, prompt,
                               TraceConfig(max_new_tokens=tokens, top_k=top_k, exact_probs=True)).steps
        if [s.token_id for s in fast] != [s.token_id for s in exact]:
            raise SystemExit(f"the default and exact traces chose different tokens on {prompt!r}")
        for a, b in zip(fast, exact):
            if [t.token_id for t in a.top] != [t.token_id for t in b.top]:
                raise SystemExit(f"the default and exact traces differ in their top-{top_k} ids on {prompt!r}")
            diffs = [abs(x.prob - y.prob) for x, y in zip(a.top, b.top)] + [abs(a.prob - b.prob)]
            worst_p, worst_entropy = max(worst_p, *diffs), max(worst_entropy, abs(a.entropy - b.entropy))
        steps += len(fast)
    verdict = "within" if worst_p <= TOLERANCE else "OUTSIDE"
    figures.fact("default vs exact trace: steps compared", steps)
    figures.fact("default vs exact trace: max |dp|", worst_p)
    figures.fact("default vs exact trace: max |d entropy| nats", worst_entropy)
    print(f"default trace vs --exact-probs over {steps} steps of {len(prompts)} prompts: same tokens and top-{top_k} "
          f"ids; max |dp| {worst_p:.2e} ({verdict} the stated {TOLERANCE:.0e}), max |d entropy| {worst_entropy:.2e} nats")


def main() -> None:
    args = parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from tunelens.engine.decode import Sampler, decode
    from tunelens.model.prompts import encode_prompt, stop_token_ids
    from tunelens.inspect.trace import TraceConfig, trace_generate

    torch.set_grad_enabled(False)
    started = time.perf_counter()
    model, tokenizer = load(args.model)
    device = next(model.parameters()).device
    print(f"model {args.model} on {device}, {torch.get_num_threads()} threads (loaded in {time.perf_counter() - started:.1f} s), "
          f"vocabulary {model.get_output_embeddings().weight.shape[0]}, {args.tokens} new tokens, top-k {args.top_k}")
    ids = torch.tensor([encode_prompt(tokenizer, args.prompt)], device=device)
    generate_kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                           eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           do_sample=False, temperature=None, top_p=None, top_k=None)
    config = TraceConfig(max_new_tokens=args.tokens, top_k=args.top_k)
    exact_config = TraceConfig(max_new_tokens=args.tokens, top_k=args.top_k, exact_probs=True)
    stops = stop_token_ids(tokenizer)
    ways = {
        "generate": lambda: model.generate(**generate_kwargs)[0, ids.shape[1]:].tolist(),
        "trace": lambda: [s.token_id for s in trace_generate(model, tokenizer, args.prompt, config).steps],
        "exact": lambda: [s.token_id for s in trace_generate(model, tokenizer, args.prompt, exact_config).steps],
        "loop": lambda: [s.token for s in decode(model, ids[0].tolist(), Sampler(), args.tokens, stops,
                                                 need_logits=False)],
    }
    rates, cpu_rates, reference_tokens = time_runs(ways, args.repeats, device)
    print(f"tokens generated per run: {len(reference_tokens)}")
    figures = Figures("trace_overhead", args, device=str(device), torch_threads=torch.get_num_threads())
    figures.fact("tokens per run", len(reference_tokens))
    print_speeds(rates, cpu_rates, {"generate": "plain model.generate", "trace": "tunelens trace",
                                    "exact": "trace --exact-probs", "loop": "decode loop, greedy"}, figures)
    tolerance(model, tokenizer, [args.prompt] + TOLERANCE_PROMPTS, args.tokens, args.top_k, figures)

    peaks = {"scores": [], "trace": []}
    for _ in range(args.repeats):  # alternating, as the speeds
        scores_out, peak = peak_memory(
            lambda: model.generate(**generate_kwargs, output_scores=True, return_dict_in_generate=True), device)
        peaks["scores"].append(peak / 2**20)
        trace_out, peak = peak_memory(lambda: trace_generate(model, tokenizer, args.prompt, config), device)
        peaks["trace"].append(peak / 2**20)
    scores_peak = figures.add("peak memory growth, generate(output_scores=True)", "MiB", peaks["scores"])["median"] * 2**20
    trace_peak = figures.add("peak memory growth, trace", "MiB", peaks["trace"])["median"] * 2**20
    scores_bytes = sum(s.numel() * s.element_size() for s in scores_out.scores)
    # What the trace loop holds per step: K probabilities and K ids, plus entropy, chosen probability, rank.
    trace_bytes = len(trace_out.steps) * (max(args.top_k, 2) * (4 + 8) + 3 * 4)
    trace_json = len(__import__("json").dumps(trace_out.to_json()).encode())
    print(f"peak memory growth   : generate(output_scores=True) {scores_peak / 2**20:8.2f} MiB, "
          f"trace {trace_peak / 2**20:8.2f} MiB  (ratio {scores_peak / max(trace_peak, 1):.1f}x)")
    print(f"per-step data held   : scores {scores_bytes / 2**20:.2f} MiB ({len(scores_out.scores)} steps x vocabulary), "
          f"trace {trace_bytes / 2**10:.1f} KiB ({len(trace_out.steps)} steps x K={args.top_k}); "
          f"ratio {scores_bytes / trace_bytes:.0f}x; trace.json {trace_json / 2**10:.1f} KiB")
    figures.fact("per-step data held, scores MiB", scores_bytes / 2**20)
    figures.fact("per-step data held, trace KiB", trace_bytes / 2**10)
    figures.fact("trace.json KiB", trace_json / 2**10)
    figures.write(args.json)


if __name__ == "__main__":
    main()
