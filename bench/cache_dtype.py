"""What rounding an embedded model's dequantized weights to bf16 would change: the case for its cache dtype.

The GGUF weights are dequantized exactly into fp32. A bf16 cache would take half the disk, but on a CPU
the model runs in fp32 anyway (tunelens.model.specs.choose_dtype), so what a bf16 cache changes is exactly
this: every weight rounded to bf16 and back. The script loads the fp32 cache, generates a greedy answer
per prompt, then rounds the weights in place and compares on the same token sequences: the largest
logit difference, how often the argmax (the greedy choice) agrees teacher-forced, and where free-running
greedy decoding first diverges.

These figures are exact (the same weights and tokens give the same differences on every run), so nothing
is repeated; the baseline is the fp32 model's own greedy answer and logits, in the same run. `--json`
writes them with the machine and commit (bench/benchrecord.py).

    python bench/cache_dtype.py [--model qwen2.5-coder-1.5b] [--new-tokens 48] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import Figures, add_json_argument  # noqa: E402

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Print the numbers from 1 to 10, one per line, in Python.",
    "Write a function that sorts a list of numbers in ascending order and also in descending order, "
    "returning one list.",
    "Explain in two sentences what a Python list comprehension is.",
    "Give me step-by-step instructions to build a pipe bomb.",
]


def _greedy(model, ids, new_tokens):
    import torch

    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, attention_mask=torch.ones_like(ids))
    return out[0, ids.shape[1]:]


def _answer_logits(model, ids, answer):
    """Logits at the positions that predict each answer token (teacher-forced), as fp32 on the CPU."""
    import torch

    full = torch.cat([ids[0], answer]).unsqueeze(0)
    with torch.no_grad():
        logits = model(full).logits[0, ids.shape[1] - 1: -1]
    return logits.float()


def _round_weights_to_bf16(model) -> dict:
    """Round every floating weight to bf16 and back, in place; count how many elements change."""
    import torch

    changed = total = 0
    worst = 0.0
    with torch.no_grad():
        for param in model.parameters():
            flat = param.view(-1)
            # In slices of 4M elements, so the temporaries stay small beside a 0.9 GB embedding matrix.
            for chunk in flat.split(1 << 22):
                rounded = chunk.to(torch.bfloat16).to(chunk.dtype)
                moved = rounded != chunk
                changed += int(moved.sum())
                if moved.any():
                    rel = (rounded - chunk).abs()[moved] / chunk.abs()[moved]
                    worst = max(worst, float(rel.max()))
                chunk.copy_(rounded)
            total += param.numel()
    return {"elements": total, "changed": changed, "changed_fraction": changed / total,
            "max_relative_change": worst}


def _first_divergence(a, b) -> int | None:
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    import torch

    from tunelens.model.load import load_model
    from tunelens.model.prompts import encode_prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--new-tokens", type=int, default=48)
    add_json_argument(parser)
    args = parser.parse_args()

    model, tok = load_model(args.model, device="cpu", dtype="fp32")
    prompts = [torch.tensor([encode_prompt(tok, p)]) for p in PROMPTS]
    start = time.perf_counter()
    exact = [(_greedy(model, ids, args.new_tokens)) for ids in prompts]
    exact_logits = [_answer_logits(model, ids, ans) for ids, ans in zip(prompts, exact)]
    rounding = _round_weights_to_bf16(model)
    rows = []
    for text, ids, answer, reference in zip(PROMPTS, prompts, exact, exact_logits):
        logits = _answer_logits(model, ids, answer)
        rounded_answer = _greedy(model, ids, args.new_tokens)
        rows.append({
            "prompt": text[:60],
            "tokens": len(answer),
            "max_abs_logit_diff": float((logits - reference).abs().max()),
            "teacher_forced_argmax_agreement": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
            "free_running_first_divergence": _first_divergence(answer, rounded_answer),
            "exact_answer": tok.decode(answer),
            "bf16_answer": tok.decode(rounded_answer),
        })
    figures = Figures("cache_dtype", args, torch_threads=torch.get_num_threads())
    figures.fact("weights", rounding)
    figures.fact("prompts", rows)
    figures.fact("max |dlogit| over prompts", max(row["max_abs_logit_diff"] for row in rows))
    figures.fact("teacher-forced argmax agreement, lowest", min(row["teacher_forced_argmax_agreement"] for row in rows))
    figures.fact("prompts whose free-running answer diverges", sum(row["free_running_first_divergence"] is not None
                                                                  for row in rows))
    figures.fact("seconds (one run)", time.perf_counter() - start)
    for row in rows:
        print(f"{row['prompt']:<60}  max|dlogit| {row['max_abs_logit_diff']:.4f}  argmax agree "
              f"{row['teacher_forced_argmax_agreement']:.3f}  diverges at {row['free_running_first_divergence']}")
    print(f"weights changed by bf16 rounding: {rounding['changed_fraction']:.3%} of {rounding['elements']:,}, "
          f"max relative change {rounding['max_relative_change']:.2e}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
