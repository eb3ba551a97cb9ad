"""Batch-1 greedy decode speed of a model against the memory-bandwidth limit of this machine, in one run.

At batch 1 every new token reads every weight once (all of the LM head, one row of the input
embedding), so tokens/s cannot exceed (bandwidth / bytes of weights read per token). The script
measures the bandwidth here (a large tensor copy, counted as bytes read + written, and a read-only
sum), then the decode speed of `model.generate` and of tunelens' own decode loop at batch 1, with the
prefill timed apart, and prints each as a fraction of the limit, with the CPU's flags.

With `--batches 8,32` it also times batched greedy decoding (aggregate tokens/s) against the measured
fp32 matmul peak.

Every timing is repeated --repeats times (bandwidth and matmul too) and reported as the median with min and
max; `--json` writes them with the machine and commit (bench/benchrecord.py).

    python bench/decode_bandwidth.py [--model qwen2.5-coder-1.5b] [--tokens 32] [--batches 8,32] [--repeats 5]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")
PROMPT = ("Write a Python class `LRUCache` with get and put in O(1), using a dict and a doubly linked list, "
          "with docstrings.")


def cpu_flags() -> dict:
    """The CPU's model name and which of the flags that decide fast matmul dtypes it has."""
    text = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    flags = set()
    name = platform.processor()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
    return {"model": name, "cpus": os.cpu_count(), "flags": [f for f in FLAGS if f in flags]}


def bandwidth(gib: float = 0.5, repeats: int = MIN_REPEATS) -> dict:
    """GB/s of each of `repeats` copies (read + write counted) and read-only reductions."""
    import torch

    n = int(gib * (1 << 30)) // 4
    src, dst = torch.ones(n), torch.empty(n)
    copy, read = [], []
    for _ in range(repeats):
        copy.append(2 * n * 4 / _timed(lambda: dst.copy_(src)) / 1e9)
        read.append(n * 4 / _timed(src.sum) / 1e9)
    return {"copy": copy, "read": read}


def bytes_per_token(model) -> int:
    """Bytes of weights one batch-1 decode step reads: everything but the input embedding, plus one of its rows."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total - embed.numel() * embed.element_size() + embed.shape[1] * embed.element_size()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_rates(model, tok, tokens: int, repeats: int) -> dict:
    """Decode tokens/s (prefill excluded) of model.generate (what generate_batch runs) and of tunelens'
    shared decode loop (tunelens.engine.decode.decode: stream_generate and trace), both greedy, no early
    stop, `repeats` times each in turn: lists of tokens/s and of prefill seconds."""
    import torch

    from tunelens.engine.decode import Sampler, decode
    from tunelens.model.prompts import encode_prompt

    prompt = encode_prompt(tok, PROMPT)
    ids = torch.tensor([prompt])

    def hf(n):
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False)

    hf(2)  # warm-up: first-call allocations and lazy page-ins of the weights
    rows = {"hf_generate": {"tokens_per_s": [], "prefill_s": []},
            "tunelens_decode": {"tokens_per_s": [], "prefill_s": []}}
    for _ in range(repeats):
        prefill, total = _timed(lambda: hf(1)), _timed(lambda: hf(tokens))
        rows["hf_generate"]["tokens_per_s"].append((tokens - 1) / (total - prefill))
        rows["hf_generate"]["prefill_s"].append(prefill)
        stamps = [time.perf_counter()]
        for _step in decode(model, prompt, Sampler(0.0, 1.0, None), tokens, (), need_logits=False):
            stamps.append(time.perf_counter())
        rows["tunelens_decode"]["tokens_per_s"].append((len(stamps) - 2) / (stamps[-1] - stamps[1]))
        rows["tunelens_decode"]["prefill_s"].append(stamps[1] - stamps[0])
    return rows


def matmul_rates(size: int = 2048, repeats: int = MIN_REPEATS) -> list[float]:
    """GFLOP/s of each of `repeats` fp32 square matmuls: the compute roof batched decoding aims at."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    return [2 * size ** 3 / _timed(lambda: a @ b) / 1e9 for _ in range(repeats)]


def batched_rates(model, tok, batch_sizes, tokens: int, repeats: int) -> dict:
    """Aggregate decode tokens/s at each batch size, `repeats` times: the same prompt in every row (no
    padding), prefill timed apart."""
    import torch

    from tunelens.model.prompts import encode_prompt

    prompt = encode_prompt(tok, PROMPT)
    rows = {}
    for batch in batch_sizes:
        ids = torch.tensor([prompt] * batch)

        def run(n):
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False)

        rates = []
        for _ in range(repeats):
            prefill, total = _timed(lambda: run(1)), _timed(lambda: run(tokens))
            rates.append(batch * (tokens - 1) / (total - prefill))
        rows[batch] = rates
    return rows


def main() -> None:
    import torch

    from tunelens.model.load import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per timed generation")
    parser.add_argument("--batches", default="", help="comma-separated batch sizes to time too, e.g. 8,32")
    parser.add_argument("--batch-tokens", type=int, default=16, help="new tokens per row in the batched runs")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="repetitions of every timing")
    add_json_argument(parser)
    args = parser.parse_args()

    model, tok = load_model(args.model, device="cpu", dtype="fp32")
    figures = Figures("decode_bandwidth", args, dtype="float32", torch_threads=torch.get_num_threads(),
                      cpu=cpu_flags())
    weights = bytes_per_token(model)
    figures.fact("weights read per token, bytes", weights)
    speeds = bandwidth(repeats=args.repeats)
    copy = figures.add("copy bandwidth (read + write)", "GB/s", speeds["copy"])
    read = figures.add("read bandwidth", "GB/s", speeds["read"])
    limit = figures.add("batch-1 limit from copy bandwidth", "tokens/s", [gb * 1e9 / weights for gb in speeds["copy"]])
    decoded = decode_rates(model, tok, args.tokens, args.repeats)
    for name, row in decoded.items():
        figures.add(f"{name} tokens/s", "tokens/s", row["tokens_per_s"])
        figures.add(f"{name} prefill", "s", row["prefill_s"])
        figures.ratio(f"{name} / limit", f"{name} tokens/s", "batch-1 limit from copy bandwidth")
    batches = [int(b) for b in args.batches.split(",") if b]
    if batches:
        peak = figures.add("fp32 matmul", "GFLOP/s", matmul_rates(repeats=args.repeats))
        flops_per_token = 2 * weights / 4
        for batch, rates in batched_rates(model, tok, batches, args.batch_tokens, args.repeats).items():
            figures.add(f"batch {batch} tokens/s", "tokens/s", rates)
            figures.add(f"batch {batch} GFLOP/s", "GFLOP/s", [rate * flops_per_token / 1e9 for rate in rates])
            figures.ratio(f"batch {batch} / matmul peak", f"batch {batch} GFLOP/s", "fp32 matmul")
    cpu = cpu_flags()
    print(f"cpu {cpu['model']} x{cpu['cpus']}, flags {' '.join(cpu['flags'])}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; {args.repeats} repetitions of each timing (median [min, max])")
    print(f"weights read per token {weights / 1e9:.2f} GB; copy {copy['median']:.1f} GB/s [{copy['min']:.1f}, "
          f"{copy['max']:.1f}], read {read['median']:.1f} GB/s; limit {limit['median']:.2f} tokens/s")
    for name in decoded:
        rate, prefill = figures.figures[f"{name} tokens/s"], figures.median(f"{name} prefill")
        print(f"{name:<24} {rate['median']:.3f} tokens/s [{rate['min']:.3f}, {rate['max']:.3f}] = "
              f"{figures.ratios[f'{name} / limit']['value']:.0%} of the limit (prefill {prefill:.1f} s, {args.tokens} tokens)")
    if batches:
        print(f"fp32 matmul peak {peak['median']:.1f} GFLOP/s [{peak['min']:.1f}, {peak['max']:.1f}]")
    for batch in batches:
        rate = figures.figures[f"batch {batch} tokens/s"]
        print(f"batch {batch:<3} {rate['median']:.2f} tokens/s aggregate [{rate['min']:.2f}, {rate['max']:.2f}], "
              f"{figures.median(f'batch {batch} GFLOP/s'):.1f} GFLOP/s = "
              f"{figures.ratios[f'batch {batch} / matmul peak']['value']:.0%} of the matmul peak")
    figures.write(args.json)


if __name__ == "__main__":
    main()
