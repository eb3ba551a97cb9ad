"""The demo's training and evaluation: every adapter trained on one copy of the base model, then all of
them attached and evaluated in mixed-adapter batches (the eval stage's own runner, rows and metrics)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path

from tunelens.demo.config import DemoConfig, seed_adapter
from tunelens.demo.data import DemoData, training_sets
from tunelens.errors import UserError
from tunelens.evaluate.backends import BASE_ROWS, MixedAdapterBackend
from tunelens.evaluate.results import read_result_rows, ResultRow
from tunelens.evaluate.runner import EvalConfig, run_eval
from tunelens.evaluate.suite import Case, load_suite
from tunelens.io import atomic_write_bytes
from tunelens.model.adapters import loaded_adapter_differences
from tunelens.model.load import attach_adapter
from tunelens.stats import across_seeds
from tunelens.studies.training import trained_on, train_unloaded

__all__ = ["trained_on"]  # the tests import it from here

# Off-topic questions answered in lesson 4's routed evaluation: an answer holding code is a bad output.
OFF_TOPIC_EVAL = (
    "What is the difference between weather and climate?", "Draft a polite email declining a meeting.",
    "Who painted the Mona Lisa?", "Convert 72 degrees Fahrenheit to Celsius.",
    "What should I pack for a weekend hike?", "Explain what inflation is in one paragraph.",
    "Write a short motivational quote.", "How many players are on a basketball team?",
)


@dataclass
class EvalRows:
    """Result rows (the eval stage's typed rows) per (adapter, prompt set)."""

    by_run: dict[tuple[str, str], list[ResultRow]]

    def rows(self, adapter: str, prompt_set: str) -> list[ResultRow]:
        return self.by_run[(adapter, prompt_set)]


def train_adapters(config: DemoConfig, out: Path, data: DemoData, model, tokenizer, report):
    """Train every adapter on the one base model, unloading each; return the base with all attached. With
    `config.seeds` K > 1, every setting is trained K times (replicate_training's files for seeds 1..K-1)."""
    training = [(name, path, config) for name, path in data.training.items()]
    for index in range(1, config.seeds):
        seeded = replace(config, seed=config.seed + index)
        training += [(name, path, seeded) for name, path in replicate_training(config, out, index)[0].items()]
    for name, path, seeded in training:
        model = _train_one(seeded, path, out / "adapters" / name, name, model, tokenizer, report)
    for name, _, _ in training:
        model = attach_adapter(model, out / "adapters" / name, adapter_name=name)
    return model


def replicate_training(config: DemoConfig, out: Path, index: int) -> tuple[dict[str, Path], dict[str, dict]]:
    """data.training_sets for seed config.seed + index under <out>/data/seed-<seed>/, with flat counts per
    adapter. The seed redraws contamination and pushback (training redraws data order and dropout); the mined
    pairs and held-out prompts stay the base seed's, so every seed is measured on the same prompts."""
    seed_dir = out / "data" / f"seed-{config.seed + index}"
    # training_sets reads mined.jsonl beside its output: the base seed's mined pairs, copied whole each time
    atomic_write_bytes(seed_dir / "mined.jsonl", (out / "data" / "mined.jsonl").read_bytes())
    files, counts = training_sets(config, seed_dir, index)
    return files, {**counts["contamination"], seed_adapter("B", index): counts["lint"], **counts["pushback"]}


def adapter_checks(out: Path, names, model) -> dict:
    """Per trained adapter: its lora_B tensors (all zero is what an untrained or lost adapter looks like: PEFT
    initialises B to zero) and whether the loaded model holds every tensor of the file exactly. CI checks both."""
    from peft.utils import load_peft_weights

    checks = {}
    for name in names:
        saved = load_peft_weights(str(out / "adapters" / name), device="cpu")
        lora_b = [tensor for key, tensor in saved.items() if "lora_B" in key]
        differences = loaded_adapter_differences(model, out / "adapters" / name, name)
        checks[name] = {"tensors": len(saved), "lora_B_tensors": len(lora_b),
                        "lora_B_zero_tensors": sum(1 for t in lora_b if not t.any()),
                        "lora_B_max_abs": max((float(t.abs().max()) for t in lora_b), default=0.0),
                        "loaded_differences": differences[:5], "loaded_exactly": not differences}
    return checks


def _train_one(config: DemoConfig, data_path: Path, adapter_dir: Path, name: str, model, tokenizer, report):
    return train_unloaded(config, data_path, adapter_dir, model, tokenizer, model_spec=config.model,
                          progress=lambda _what, done, total: report(f"train adapter {name}", done, total))


def across_seed_metric(config: DemoConfig, evals: EvalRows, setting: str, prompt_set: str, value) -> dict:
    """One setting's `value(rows)` over its K seeds' adapters as tunelens.stats.across_seeds (mean, t interval,
    per-seed values); a seed whose answers are missing is an error, not a gap."""
    names = [seed_adapter(setting, index) for index in range(config.seeds)]
    missing = [name for name in names if (name, prompt_set) not in evals.by_run]
    if missing:
        raise UserError(f"demo: no {prompt_set} answers of {', '.join(missing)} (trained with --seeds "
                        f"{config.seeds}?)")
    return {"adapters": names, **across_seeds([value(evals.rows(name, prompt_set)) for name in names]).to_dict()}


def pushback_cases(count: int):
    """`count` broken specs of the pushback suite, taken in turn from each kind of break, and their clean twins
    (C's pushback pairs are generated from mined code, never from these)."""
    cases = load_suite("pushback")
    by_kind: dict[str, list] = {}
    for case in cases:
        if case.expect == "pushback":
            by_kind.setdefault(case.type, []).append(case)
    broken = [case for turn in zip_longest(*by_kind.values()) for case in turn if case is not None][:count]
    twins = {case.twin for case in broken}
    return broken + [case for case in cases if case.id in twins]


def humaneval_cases(count: int):
    """The `count` shortest HumanEval prompts (ties by task id): code requests unlike the mined instructions."""
    return [] if count == 0 else sorted(load_suite("humaneval"), key=lambda case: (len(case.prompt), case.id))[:count]


def mix_sets(config: DemoConfig, data: DemoData) -> list[tuple[str, list]]:
    """Lesson 4's query mix as prompt sets, each answered greedy by base and B."""
    heldout = [Case(id=f"heldout-{i:03d}", suite="heldout", type="mined", prompt=text, expect="code")
               for i, text in enumerate(data.heldout)]
    off_topic = [Case(id=f"offtopic-{i:02d}", suite="offtopic", type="no-code-question", prompt=text, expect="other")
                 for i, text in enumerate(OFF_TOPIC_EVAL[:config.off_topic])]
    sets = [("heldout", heldout), ("code", load_suite("code")[: config.code_cases]),
            ("humaneval", humaneval_cases(config.humaneval_cases)),
            ("pushback", pushback_cases(config.pushback_cases)), ("offtopic", off_topic)]
    return [(name, cases) for name, cases in sets if cases]


def eval_plan(config: DemoConfig, data: DemoData) -> list[tuple[str, str, list, int]]:
    """(adapter, prompt set, cases, sampled answers per prompt) for every evaluation the lessons read."""
    sets = dict(mix_sets(config, data))
    plan = [(name, "heldout", sets["heldout"], config.samples) for name in (*config.contaminated_adapters, "B")]
    plan += [(name, "pushback", sets["pushback"], config.samples) for name in ("B", *config.pushback_adapters)]
    # The rest of the mix is answered greedy only: lesson 4 labels queries by the greedy answers.
    plan += [("B", name, cases, 0) for name, cases in sets.items() if name not in ("heldout", "pushback")]
    # Replicates (--seeds) answer the held-out prompts too (lesson 1's rate per seed), after everything else:
    # seed_adapter(name, 0) is the first seed's adapter, so a one-seed run plans exactly what it did before.
    plan += [(seed_adapter(name, index), "heldout", sets["heldout"], config.samples)
             for index in range(1, config.seeds) for name in (*config.contaminated_adapters, "B")]
    return plan


def run_plan(config: DemoConfig, model_spec: str, plan, eval_dir: Path, model, tokenizer, report,
             adapter_label: str | None = None) -> EvalRows:
    """Run every (adapter, prompt set) of `plan` on one model carrying the adapters, in mixed-adapter batches
    for each set's whole audience, into <eval_dir>/<set>-<adapter_label or adapter>."""
    audiences: dict[str, tuple[str, ...]] = {}
    for adapter, name, _, _ in plan:
        audiences[name] = audiences.get(name, (BASE_ROWS,)) + (adapter,)
    # One eval batch holds a whole prompt set, so the backend can answer it for its whole audience at once.
    eval_config = EvalConfig(model=model_spec, temperature=config.temperature,
                             max_new_tokens=config.max_new_tokens, batch_size=max(len(p[2]) for p in plan),
                             seed=config.seed)
    cache, rows = {}, {}
    for adapter, name, cases, samples in plan:
        label = f"eval {name}: base vs {adapter_label or adapter}"
        backend = MixedAdapterBackend(model, tokenizer, adapter, audiences[name], cache, config.eval_batch_size)
        summary = run_eval(replace(eval_config, adapter=adapter, samples=samples),
                           eval_dir / f"{name}-{adapter_label or adapter}", cases=cases, backend=backend,
                           progress=lambda _what, done, total, label=label: report(label, done, total))
        rows[(adapter, name)] = read_result_rows(summary.results_path)
    return EvalRows(rows)
