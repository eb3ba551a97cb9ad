"""Training throughput: tunelens against TRL's SFTTrainer (+ PEFT, completion-only loss), in one run.

Both train the same model on the same pairs with the same LoRA config (r=32, alpha=64, dropout 0.05
on q/k/v/o/gate/up/down), batch size, max length, learning rate and number of steps, in fp32 on the
CPU and without gradient checkpointing (TRL's default turns it on; `--gradient-checkpointing` turns it
on for both). Each trainer runs in its own subprocess, so its peak RSS is its own. The first step of
each is a warm-up and is not timed.

TRL runs with the best settings its installed version offers on a CPU: `padding_free=True` (no padding
through the decoder or the head; `max_length=None`, which TRL requires without packing; the longest
pair fits anyway); `--trl-variants fp32,bf16` also runs it with its own bf16 autocast. Each tunelens
run is compared with TRL at the same precision and with TRL's fastest run. tunelens runs once per `--variants` entry: `plain` (right-padded micro-batches),
`packing` (one row per micro-batch, position ids reset per pair; the default), `packing-peft` (the
same with PEFT's LoRA forward instead of the fused one, `--no-fused-lora`), `bf16` / `packing+bf16`
(bfloat16 autocast: faster where the CPU has bf16 matmuls, but losses differ at bf16 precision, so it
is not the plain path's equal).

Printed per trainer: trained (completion) tokens/s, peak RSS, the mean loss of the timed steps, and
achieved model FLOP/s as a fraction of a large fp32 matmul's FLOP/s measured in the same run. Model FLOPs count the work a LoRA step must
do, the same formula for both trainers:
    4 * (decoder-layer parameters) * (non-padding tokens)      forward + input-gradient backward
  + 4 * hidden * vocab * (trained tokens)                      LM head where a label is trained
Work beyond that (head logits at masked positions, recomputation, padding) is what a trainer wastes.

    python bench/train_throughput.py --threads 2                  # gemma3-270m, packing (PEFT / fused LoRA) vs TRL
    python bench/train_throughput.py --threads 2 --variants plain,packing,packing+bf16
    python bench/train_throughput.py --threads 2 --ab head --steps 3   # one lever's effect alone: packing, fused,
                                                                       # attention, head; all: every lever off vs on
    python bench/train_throughput.py --model tiny                 # tiny random model, seconds

Each timed optimizer step is one repetition: a trainer's tokens/s is the median over its timed steps (at
least 5 by default), with min and max; ratios are of those medians. `--json PATH` writes them with the
machine and commit (bench/benchrecord.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FUNCTIONS = [
    ("reverse_words", "reverses the order of the words in a sentence", "words = text.split()\n    return ' '.join(reversed(words))"),
    ("count_vowels", "counts the vowels in a string", "return sum(1 for ch in text.lower() if ch in 'aeiou')"),
    ("flatten", "flattens a list of lists into one list", "return [item for group in groups for item in group]"),
    ("is_palindrome", "checks whether a string reads the same backwards", "clean = ''.join(ch.lower() for ch in text if ch.isalnum())\n    return clean == clean[::-1]"),
    ("chunk", "splits a list into chunks of a given size", "return [items[i:i + size] for i in range(0, len(items), size)]"),
    ("word_counts", "counts how often each word occurs", "counts = {}\n    for word in text.split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts"),
    ("merge_sorted", "merges two sorted lists into one sorted list", "result, i, j = [], 0, 0\n    while i < len(a) and j < len(b):\n        if a[i] <= b[j]:\n            result.append(a[i]); i += 1\n        else:\n            result.append(b[j]); j += 1\n    return result + a[i:] + b[j:]"),
    ("fibonacci", "returns the first n Fibonacci numbers", "numbers = [0, 1]\n    while len(numbers) < n:\n        numbers.append(numbers[-1] + numbers[-2])\n    return numbers[:n]"),
]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Instruction -> code pairs of varied length (about 60-250 response tokens), deterministic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, what, body = FUNCTIONS[i % len(FUNCTIONS)]
        doc = " ".join(rng.choice(["Handles empty input.", "Runs in linear time.", "Pure function.",
                                   "Raises TypeError on bad input.", "Keeps the original order."])
                       for _ in range(rng.randint(1, 4)))
        tests = "".join(f"\n\ndef test_{name}_{k}():\n    assert {name} is not None" for k in range(rng.randint(0, 4)))
        response = f"```python\ndef {name}(*args):\n    \"\"\"{what.capitalize()}. {doc}\"\"\"\n    {body}{tests}\n```"
        rows.append({"id": f"b{i}", "prompt": f"Write a Python function `{name}` that {what}. Variant {i}.",
                     "completion": response})
    return rows


# ---------------------------------------------------------------- measurements shared by both workers


def matmul_flops(size: int = 2048, repeats: int = MIN_REPEATS) -> list[float]:
    """FLOP/s of each of `repeats` large fp32 matmuls on this machine now."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size ** 3 / (time.perf_counter() - start))
    return rates


VARIANTS = {"plain": {"packing": False}, "packing": {"packing": True}, "bf16": {"packing": False, "bf16": True},
            "packing+bf16": {"packing": True, "bf16": True},
            "packing-peft": {"packing": True, "fused_lora": False}}  # PEFT's own LoRA forward
TRL_VARIANTS = {"fp32": False, "bf16": True}  # --trl-variants: TRL's own bf16 autocast (bf16=True) or not


class Meter:
    """Per optimizer step: time, trained tokens and non-padding tokens so far, and the step's loss."""

    def __init__(self, decoder):
        self.real_tokens = 0
        self.trained_tokens = 0
        self.losses: list[float] = []
        self.marks: list[tuple[float, float, int, int]] = []
        decoder.register_forward_pre_hook(self._count_real, with_kwargs=True)

    def _count_real(self, _module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if isinstance(mask, dict):  # precomputed per-layer-type masks: the 2D mask is not among them
            mask = None
        if mask is not None and mask.dim() == 2:
            self.real_tokens += int(mask.sum())
            return
        # Padding-free batches (TRL's padding_free, tunelens packing) carry no 2D mask: every position is real.
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is not None:
            self.real_tokens += int(ids.shape[0] * ids.shape[1])

    def mark(self, trained_total: int | None = None) -> None:
        if trained_total is not None:
            self.trained_tokens = trained_total
        self.marks.append((time.perf_counter(), time.process_time(), self.trained_tokens, self.real_tokens))

    def report(self, model, name: str, precision: str) -> dict:
        """Timed window: from the end of step 1 (warm-up) to the end of the last step."""
        (t0, cpu0, trained0, real0), (t1, cpu1, trained1, real1) = self.marks[0], self.marks[-1]
        seconds, trained, real = t1 - t0, trained1 - trained0, real1 - real0
        hidden, vocab, body = model_shape(model)
        flops = 4 * body * real + 4 * hidden * vocab * trained
        losses = self.losses[1:] or self.losses
        steps = list(zip(self.marks, self.marks[1:]))
        return {"step_tokens_per_s": [(b[2] - a[2]) / (b[0] - a[0]) for a, b in steps],
                "step_tokens_per_cpu_s": [(b[2] - a[2]) / max(b[1] - a[1], 1e-9) for a, b in steps],
                "trainer": name, "precision": precision, "timed_steps": len(self.marks) - 1, "loss": sum(losses) / max(1, len(losses)), "seconds": seconds, "trained_tokens": trained,
                "real_tokens": real, "tokens_per_s": trained / seconds, "cpu_seconds": cpu1 - cpu0,
                "tokens_per_cpu_s": trained / (cpu1 - cpu0), "model_flops_per_s": flops / seconds,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def model_shape(model) -> tuple[int, int, int]:
    from tunelens.model.state import base_model_of

    base = base_model_of(model)
    head = base.get_output_embeddings()
    body = sum(p.numel() for p in base.get_decoder().layers.parameters())
    return head.in_features, head.out_features, body


def load(spec: str):
    import torch

    from tunelens.model.load import load_model

    torch.manual_seed(0)
    return load_model(spec, device="cpu", dtype="fp32")


# ---------------------------------------------------------------- workers


def run_tunelens(args) -> dict:
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import train

    model, tok = load(args.model)
    meter = Meter(model.get_decoder())
    config = TrainConfig(batch_size=args.batch_size, max_steps=args.steps, max_length=args.max_length,
                         learning_rate=2e-4, eval_split=0.0, checkpoint_every=0, seed=0,
                         gradient_checkpointing=args.gradient_checkpointing, **VARIANTS[args.variant])

    def progress(event):
        if event.phase == "step":
            meter.losses.append(event.loss)
            meter.mark(event.trained_tokens)

    with tempfile.TemporaryDirectory() as out:
        train(config, args.data, Path(out) / "adapter", model=model, tokenizer=tok, on_event=progress)
    return meter.report(model, f"tunelens {args.variant}", "bf16" if config.bf16 else "fp32")


def run_trl(args) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunelens.model.prompts import prompt_style, render_prompt

    model, tok = load(args.model)
    meter = Meter(model.get_decoder())
    end_of_turn = prompt_style(tok).end_of_turn
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    # The same rendered text tunelens trains on: prompt in the model's format, completion + end of turn.
    dataset = Dataset.from_list([{"prompt": render_prompt(tok, row["prompt"]), "completion": row["completion"] + end_of_turn}
                                 for row in rows])

    class StepMarks(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            meter.mark()

        def on_log(self, _args, _state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                meter.losses.append(float(logs["loss"]))

    def count_trained(_module, _args, kwargs):
        labels = kwargs.get("labels")
        if labels is not None:
            meter.trained_tokens += int((labels[:, 1:] != -100).sum())

    with tempfile.TemporaryDirectory() as out:
        sft = SFTConfig(output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                        gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="linear",
                        warmup_steps=0, completion_only_loss=True, packing=False,
                        # TRL's best CPU settings: no padding through the decoder and head. padding_free
                        # needs max_length=None without packing (the longest pair fits anyway).
                        padding_free=True, max_length=None,
                        bf16=TRL_VARIANTS[args.variant], fp16=False, use_cpu=True, gradient_checkpointing=args.gradient_checkpointing,
                        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True, seed=0,
                        dataloader_num_workers=0)
        lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=sft, train_dataset=dataset, processing_class=tok, peft_config=lora,
                             callbacks=[StepMarks()])
        trainer.model.register_forward_pre_hook(count_trained, with_kwargs=True)
        trainer.train()
    return meter.report(model, "trl" if args.variant == "fp32" else f"trl {args.variant}", args.variant)


EARLIER = {"packing": True, "fused_lora": False, "packed_attention": False, "head_block": 0}
NOW = {"packing": True, "fused_lora": True, "packed_attention": True, "head_block": None}  # None: the default
AB_PAIRS = {  # --ab NAME: (the earlier way, the new way), each lever alone against the rest as they are now
    "packing": ({**NOW, "packing": False, "packed_attention": False}, {**NOW}),
    "fused": ({**NOW, "fused_lora": False}, {**NOW}),
    "attention": ({**NOW, "packed_attention": False}, {**NOW}),
    "head": ({**NOW, "head_block": 0}, {**NOW}),
    "all": (EARLIER, NOW),
}


def _levers(peft, setting: dict):
    """The training loop's fast paths as `setting` asks (the loop itself takes them from TrainConfig)."""
    from contextlib import ExitStack

    from tunelens.train import loss as train_loss
    from tunelens.train.lora_fused import fused_lora_layers
    from tunelens.train.packed_attention import packed_attention

    stack = ExitStack()
    if setting["fused_lora"]:
        stack.enter_context(fused_lora_layers(peft))
    if setting["packed_attention"]:
        stack.enter_context(packed_attention(peft))
    default_block = train_loss.HEAD_VOCAB_BLOCK
    train_loss.HEAD_VOCAB_BLOCK = default_block if setting["head_block"] is None else setting["head_block"]
    stack.callback(setattr, train_loss, "HEAD_VOCAB_BLOCK", default_block)
    return stack


def ab_steps(args) -> None:
    """Optimizer steps of two settings on the same batch, alternating in one process (after a warm-up
    pair): on a shared CPU, alternating cancels most of the drift two separate runs suffer. Both
    use lr 0, so every step sees the same weights."""
    import torch
    from accelerate import Accelerator

    from tunelens.train.lora_setup import placement_table, wrap_lora
    from tunelens.model.prompts import encode_pair
    from tunelens.train.run import Example, make_collate
    from tunelens.train.config import TrainConfig
    from tunelens.train.loop import LoopParts, optimizer_step
    from tunelens.train.loss import loss_module

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    peft = wrap_lora(model, TrainConfig(), placement_table(model, TrainConfig()))
    peft.train()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()][:args.batch_size]
    batch = [Example(r["id"], i, tuple(ids[:args.max_length]), n) for i, r in enumerate(rows)
             for ids, n in [encode_pair(tok, r["prompt"], r["completion"])]]
    params = [p for p in peft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: every step sees the same weights
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    settings = AB_PAIRS[args.ab]
    cpu, wall = [0.0, 0.0], [0.0, 0.0]
    reps = {"cpu": ([], []), "wall": ([], [])}  # per timed repetition, for the record
    for rep in range(args.steps):
        for which, setting in enumerate(settings):
            parts = LoopParts(Accelerator(cpu=True), loss_module(peft, True), optimizer, scheduler, params,
                              make_collate(TrainConfig(packing=setting["packing"]), tok), max_grad_norm=1.0)
            start, start_wall = time.process_time(), time.perf_counter()
            with _levers(peft, setting):
                loss, tokens, _norm = optimizer_step(parts, batch)
            used, used_wall = time.process_time() - start, time.perf_counter() - start_wall
            cpu[which] += used if rep else 0.0
            wall[which] += used_wall if rep else 0.0
            if rep:
                reps["cpu"][which].append(used)
                reps["wall"][which].append(used_wall)
            print(f"rep {rep} {['earlier', 'new'][which]}: loss {loss:.6f}, {tokens} trained tokens, "
                  f"{used:.2f} CPU s, {used_wall:.2f} s", flush=True)
    real, padded = sum(len(ex.ids) for ex in batch), len(batch) * max(len(ex.ids) for ex in batch)
    print(f"earlier: {settings[0]}\nnew: {settings[1]}")
    print(f"positions: {real} real, {padded} padded; {args.ab}: new / earlier trained tokens per CPU-second "
          f"{cpu[0] / cpu[1]:.2f}x, per second {wall[0] / wall[1]:.2f}x")
    figures = Figures("train_throughput", chosen(args), mode=f"ab {args.ab}")
    for kind, unit in (("cpu", "CPU s"), ("wall", "s")):
        for which, label in enumerate(("earlier", "new")):
            figures.add(f"{label} step {unit}", unit, reps[kind][which])
        figures.ratio(f"new / earlier trained tokens per {unit}", f"earlier step {unit}", f"new step {unit}", paired=True)
    figures.write(args.json)


# ---------------------------------------------------------------- the run


def chosen(args) -> argparse.Namespace:
    """The settings a reader can rerun: not the workers' own (a temporary data file, the worker's variant)."""
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("data", "worker", "variant")})


def _worker_main(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_tunelens(args) if args.worker == "tunelens" else run_trl(args)
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, which: str, variant: str = "plain") -> dict:
    command = [sys.executable, __file__, "--worker", which, "--variant", variant, "--model", args.model,
               "--data", str(args.data),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--threads", str(args.threads)] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{which} worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _tiny_model_dir(root: Path) -> str:
    from tunelens.testing import tiny_model

    model, tok = tiny_model("gemma3", layers=2, hidden=64)
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    return str(root / "tiny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m", help="gemma3-270m, tiny, or any tunelens model spec")
    parser.add_argument("--steps", type=int, default=MIN_REPEATS + 1,
                        help="optimizer steps per trainer (the first is untimed; each other one is a repetition)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=320)
    # One thread each by default: on a shared, oversubscribed CPU two-thread workers mostly wait on each other.
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="turn it on for both trainers")
    parser.add_argument("--variants", default="packing-peft,packing",
                        help=f"tunelens runs, comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--no-trl", action="store_true", help="skip TRL (tunelens variants only)")
    parser.add_argument("--ab", choices=list(AB_PAIRS),
                        help="only: two settings' steps alternating in one process, --steps pairs; one lever "
                             "against the rest as now (packing, fused LoRA, packed attention, vocabulary-blocked "
                             "head), or all: every lever off against every lever on")
    parser.add_argument("--trl-variants", default="fp32",
                        help=f"TRL runs, comma-separated, from: {', '.join(TRL_VARIANTS)} (ratios use the fastest)")
    parser.add_argument("--variant", default="plain", choices=sorted({*VARIANTS, *TRL_VARIANTS}),
                        help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("tunelens", "trl"), help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.worker:
        _worker_main(args)
        return
    if args.ab:
        with tempfile.TemporaryDirectory() as tmp:
            args.model = _tiny_model_dir(Path(tmp)) if args.model == "tiny" else args.model
            args.data = Path(tmp) / "pairs.jsonl"
            args.data.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(args.batch_size + 4)[4:]))
            ab_steps(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model == "tiny":
            args.model = _tiny_model_dir(root)
        args.data = root / "pairs.jsonl"
        args.data.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(args.batch_size * args.steps + 8)))
        print(f"model {args.model}; {args.steps} steps x batch {args.batch_size} (first step untimed); "
              f"max_length {args.max_length}; load average {os.getloadavg()[0]:.1f}", flush=True)
        matmuls = matmul_flops()
        results = [_spawn(args, "tunelens", variant) for variant in args.variants.split(",")]
        results += [] if args.no_trl else [_spawn(args, "trl", v) for v in args.trl_variants.split(",")]
        matmuls += matmul_flops()  # before and after: the machine is shared
    figures = Figures("train_throughput", chosen(args))
    matmul = figures.add("fp32 matmul (2048^3)", "GFLOP/s", [rate / 1e9 for rate in matmuls])
    peak = matmul["median"] * 1e9
    for r in results:
        r["tokens_per_s"] = figures.add(f"{r['trainer']} trained tokens/s", "tokens/s", r["step_tokens_per_s"])["median"]
        r["tokens_per_cpu_s"] = figures.add(f"{r['trainer']} trained tokens/CPU-s", "tokens/CPU-s",
                                            r["step_tokens_per_cpu_s"])["median"]
        figures.fact(f"{r['trainer']} peak RSS GiB", r["peak_rss_bytes"] / 2**30)
        figures.fact(f"{r['trainer']} mean loss of timed steps", r["loss"])
        figures.fact(f"{r['trainer']} model FLOP/s of matmul (whole window)", r["model_flops_per_s"] / peak)
    print(f"fp32 matmul (2048^3): {peak / 1e9:.1f} GFLOP/s [{matmul['min']:.1f}, {matmul['max']:.1f}]; "
          f"load average now {os.getloadavg()[0]:.1f}; trained tok/s are medians over timed steps")
    print(f"{'trainer':<22}{'trained tok/s':>14}{'tok/CPU-s':>10}{'peak RSS':>10}{'GFLOP/s':>9}"
          f"{'of matmul':>10}{'loss':>8}{'trained tok':>12}{'all tok':>8}{'seconds':>8}{'CPU s':>7}")
    for r in results:
        print(f"{r['trainer']:<22}{r['tokens_per_s']:>14.1f}{r['tokens_per_cpu_s']:>10.1f}"
              f"{r['peak_rss_bytes'] / 2**30:>8.2f} G{r['model_flops_per_s'] / 1e9:>9.2f}"
              f"{r['model_flops_per_s'] / peak:>10.1%}{r['loss']:>8.4f}{r['trained_tokens']:>12}{r['real_tokens']:>8}"
              f"{r['seconds']:>8.1f}{r['cpu_seconds']:>7.1f}")
    ours = [r for r in results if r["trainer"].startswith("tunelens")]
    if len(ours) > 1:
        base = ours[0]
        for r in ours[1:]:
            figures.ratio(f"{r['trainer']} / {base['trainer']}, trained tokens/s", f"{r['trainer']} trained tokens/s",
                          f"{base['trainer']} trained tokens/s")
            print(f"{r['trainer']} / {base['trainer']}: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x trained tokens/s, "
                  f"{r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x per CPU-second")
    if args.no_trl:
        figures.write(args.json)
        return
    # Against TRL at the same precision, and against TRL's fastest run (its best settings on this machine).
    # CPU time counts each one's own work; on a shared machine the wall-clock ratio moves with other jobs.
    trls = [r for r in results if r["trainer"].startswith("trl")]
    fastest = max(trls, key=lambda r: r["tokens_per_s"])
    for r in ours:
        same = [t for t in trls if t["precision"] == r["precision"]]
        for trl in same[:1] + ([fastest] if fastest not in same[:1] else []):
            figures.ratio(f"{r['trainer']} / {trl['trainer']}, trained tokens/s", f"{r['trainer']} trained tokens/s",
                          f"{trl['trainer']} trained tokens/s", target=">= 3")
            figures.ratio(f"{r['trainer']} / {trl['trainer']}, trained tokens/CPU-s",
                          f"{r['trainer']} trained tokens/CPU-s", f"{trl['trainer']} trained tokens/CPU-s")
            figures.fact(f"{r['trainer']} / {trl['trainer']}, peak RSS", r["peak_rss_bytes"] / trl["peak_rss_bytes"])
            print(f"{r['trainer']} / {trl['trainer']}: {r['tokens_per_s'] / trl['tokens_per_s']:.2f}x trained tokens/s "
                  f"(wall clock), {r['tokens_per_cpu_s'] / trl['tokens_per_cpu_s']:.2f}x per CPU-second, "
                  f"{r['peak_rss_bytes'] / trl['peak_rss_bytes']:.2f}x peak RSS (target: >= 3x, <= 1.0x)"
                  + ("" if trl is not fastest else "  [TRL's fastest]"))
    figures.write(args.json)


if __name__ == "__main__":
    main()
