"""Batch-1 greedy decode speed of a model against the memory-bandwidth limit of this machine, in one run.

At batch 1 every new token reads every weight once (all of the LM head, one row of the input
embedding), so tokens/s cannot exceed (bandwidth / bytes of weights read per token). The script
measures the bandwidth here (a large tensor copy, counted as bytes read + written, and a read-only
sum), then the decode speed of `model.generate` and of tunelens' own decode loop at batch 1, with the
prefill timed apart, and prints each as a fraction of the limit, with the CPU's flags.

With `--batches 8,32` it also times batched greedy decoding (aggregate tokens/s) against the measured
fp32 matmul peak.

    python bench/decode_bandwidth.py [--model qwen2.5-coder-1.5b] [--tokens 32] [--batches 8,32] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

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


def bandwidth(gib: float = 0.5, repeats: int = 5) -> dict:
    """Best of `repeats`: GB/s of a copy (read + write counted) and of a read-only reduction."""
    import torch

    n = int(gib * (1 << 30)) // 4
    src, dst = torch.ones(n), torch.empty(n)
    copy = read = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        copy = min(copy, time.perf_counter() - start)
        start = time.perf_counter()
        src.sum()
        read = min(read, time.perf_counter() - start)
    return {"copy_gb_s": 2 * n * 4 / copy / 1e9, "read_gb_s": n * 4 / read / 1e9, "buffer_gib": gib}


def bytes_per_token(model) -> int:
    """Bytes of weights one batch-1 decode step reads: everything but the input embedding, plus one of its rows."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total - embed.numel() * embed.element_size() + embed.shape[1] * embed.element_size()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_rates(model, tok, tokens: int) -> dict:
    """Decode tokens/s (prefill excluded) of model.generate (what generate_batch runs) and of tunelens'
    shared decode loop (tunelens.engine.decode.decode: stream_generate and trace), both greedy, no early stop."""
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
    hf_prefill = _timed(lambda: hf(1))
    hf_total = _timed(lambda: hf(tokens))
    stamps = [time.perf_counter()]
    for _step in decode(model, prompt, Sampler(0.0, 1.0, None), tokens, (), need_logits=False):
        stamps.append(time.perf_counter())
    return {
        "prompt_tokens": len(prompt),
        "hf_generate": {"tokens": tokens, "tokens_per_s": (tokens - 1) / (hf_total - hf_prefill),
                        "prefill_s": hf_prefill},
        "tunelens_decode": {"tokens": len(stamps) - 1, "tokens_per_s": (len(stamps) - 2) / (stamps[-1] - stamps[1]),
                            "prefill_s": stamps[1] - stamps[0]},
    }


def matmul_peak(size: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of the best of `repeats` fp32 square matmuls: the compute roof batched decoding aims at."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def batched_rates(model, tok, batch_sizes, tokens: int) -> list[dict]:
    """Aggregate decode tokens/s at each batch size: the same prompt in every row (no padding), prefill
    timed apart, and the decode's GFLOP/s counted as 2 x (weights read per token) / 4 bytes per token."""
    import torch

    from tunelens.model.prompts import encode_prompt

    prompt = encode_prompt(tok, PROMPT)
    flops_per_token = 2 * bytes_per_token(model) / 4
    rows = []
    for batch in batch_sizes:
        ids = torch.tensor([prompt] * batch)

        def run(n):
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False)

        prefill = _timed(lambda: run(1))
        total = _timed(lambda: run(tokens))
        rate = batch * (tokens - 1) / (total - prefill)
        rows.append({"batch": batch, "tokens_per_row": tokens, "tokens_per_s": rate, "prefill_s": prefill,
                     "gflop_s": rate * flops_per_token / 1e9})
    return rows


def main() -> None:
    import torch

    from tunelens.model.load import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per timed generation")
    parser.add_argument("--batches", default="", help="comma-separated batch sizes to time too, e.g. 8,32")
    parser.add_argument("--batch-tokens", type=int, default=16, help="new tokens per row in the batched runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    model, tok = load_model(args.model, device="cpu", dtype="fp32")
    result = {"model": args.model, "dtype": "float32", "torch_threads": torch.get_num_threads(), "cpu": cpu_flags(),
              "load_average": os.getloadavg()}
    result["bytes_per_token"] = bytes_per_token(model)
    result["bandwidth"] = bandwidth()
    result["decode"] = decode_rates(model, tok, args.tokens)
    result["matmul_gflop_s"] = matmul_peak()
    batches = [int(b) for b in args.batches.split(",") if b]
    result["batched"] = batched_rates(model, tok, batches, args.batch_tokens) if batches else []
    result["matmul_gflop_s_after"] = matmul_peak()
    result["bandwidth_after"] = bandwidth()  # the machine is shared: was it the same at the end?
    limit = result["bandwidth"]["copy_gb_s"] * 1e9 / result["bytes_per_token"]
    result["limit_tokens_per_s_copy"] = limit
    print(f"cpu {result['cpu']['model']} x{result['cpu']['cpus']}, flags {' '.join(result['cpu']['flags'])}, "
          f"torch threads {result['torch_threads']}, load average {result['load_average'][0]:.1f}")
    print(f"weights read per token {result['bytes_per_token'] / 1e9:.2f} GB; copy {result['bandwidth']['copy_gb_s']:.1f} "
          f"GB/s (after: {result['bandwidth_after']['copy_gb_s']:.1f}), read {result['bandwidth']['read_gb_s']:.1f} GB/s; "
          f"limit {limit:.2f} tokens/s")
    for name, row in result["decode"].items():
        if isinstance(row, dict):
            print(f"{name:<24} {row['tokens_per_s']:.3f} tokens/s = {row['tokens_per_s'] / limit:.0%} of the limit "
                  f"(prefill {row['prefill_s']:.1f} s, {row['tokens']} tokens)")
    peak = result["matmul_gflop_s"]
    if batches:
        print(f"fp32 matmul peak {peak:.1f} GFLOP/s (after: {result['matmul_gflop_s_after']:.1f})")
    for row in result["batched"]:
        print(f"batch {row['batch']:<3} {row['tokens_per_s']:.2f} tokens/s aggregate, {row['gflop_s']:.1f} GFLOP/s "
              f"= {row['gflop_s'] / peak:.0%} of the matmul peak (prefill {row['prefill_s']:.1f} s)")
    if args.json:
        from tunelens.io import atomic_write_json

        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
