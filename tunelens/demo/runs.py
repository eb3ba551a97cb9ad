"""The demo's training and evaluation: every adapter trained on one copy of the base model, then all of
them attached and evaluated in mixed-adapter batches (the eval stage's own runner, rows and metrics)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tunelens.demo.config import DemoConfig
from tunelens.demo.data import DemoData
from tunelens.evaluate.results import ResultRow

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


def load_base(config: DemoConfig):
    from tunelens.models import load_model

    return load_model(config.model, device="cpu")


def train_adapters(config: DemoConfig, out: Path, data: DemoData, model, tokenizer, report):
    """Train every adapter on the one base model, unloading each; return the base with all attached."""
    from tunelens.models import attach_adapter

    for name, path in data.training.items():
        model = _train_one(config, path, out / "adapters" / name, name, model, tokenizer, report)
    for name in data.training:
        model = attach_adapter(model, out / "adapters" / name, adapter_name=name)
    return model


def train_config(config: DemoConfig):
    from tunelens.train import TrainConfig

    return TrainConfig(epochs=config.epochs, learning_rate=config.learning_rate, batch_size=config.batch_size,
                       max_length=config.max_length, eval_split=0.0, checkpoint_every=0, seed=config.seed)


def _train_one(config: DemoConfig, data_path: Path, adapter_dir: Path, name: str, model, tokenizer, report):
    from tunelens.train import train

    if (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "tunelens.json").is_file():
        return model  # trained by an earlier run of this demo directory
    result = train(train_config(config), data_path, adapter_dir, model=model, tokenizer=tokenizer,
                   model_spec=config.model,
                   progress=lambda _what, done, total: report(f"train adapter {name}", done, total))
    return result.model.unload()


def heldout_cases(instructions: list[str]):
    from tunelens.evaluate.suite import Case

    return [Case(id=f"heldout-{i:03d}", suite="heldout", type="mined", prompt=text, expect="code")
            for i, text in enumerate(instructions)]


def off_topic_cases(count: int):
    from tunelens.evaluate.suite import Case

    return [Case(id=f"offtopic-{i:02d}", suite="offtopic", type="no-code-question", prompt=text, expect="other")
            for i, text in enumerate(OFF_TOPIC_EVAL[:count])]


def pushback_cases(count: int):
    """`count` broken specs of the pushback suite, taken in turn from each kind of break, and their clean
    twins. None of them was used to build training pairs: C's pushback pairs are generated from mined code."""
    from tunelens.evaluate.suite import load_suite

    cases = load_suite("pushback")
    by_kind: dict[str, list] = {}
    for case in cases:
        if case.expect == "pushback":
            by_kind.setdefault(case.type, []).append(case)
    queues = list(by_kind.values())
    broken = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)][:count]
    twins = {case.twin for case in broken}
    return broken + [case for case in cases if case.id in twins]


def eval_plan(config: DemoConfig, data: DemoData) -> list[tuple[str, str, list, int]]:
    """(adapter, prompt set, cases, sampled answers per prompt) for every evaluation the lessons read."""
    from tunelens.evaluate.suite import load_suite

    heldout = heldout_cases(data.heldout)
    pushback = pushback_cases(config.pushback_cases)
    plan = [(name, "heldout", heldout, config.samples) for name in (*config.contaminated_adapters, "B")]
    plan += [(name, "pushback", pushback, config.samples) for name in ("B", *config.pushback_adapters)]
    plan += [("B", "code", load_suite("code")[: config.code_cases], 0),
             ("B", "offtopic", off_topic_cases(config.off_topic), 0)]
    return [entry for entry in plan if entry[2]]


def run_evals(config: DemoConfig, out: Path, data: DemoData, model, tokenizer, report) -> EvalRows:
    from tunelens.evaluate.backends import BASE_ROWS, MixedAdapterBackend
    from tunelens.evaluate.results import read_result_rows
    from tunelens.evaluate.runner import EvalConfig, run_eval

    plan = eval_plan(config, data)
    audiences: dict[str, tuple[str, ...]] = {}
    for adapter, name, _, _ in plan:
        audiences[name] = audiences.get(name, (BASE_ROWS,)) + (adapter,)
    # One eval batch holds a whole prompt set, so the backend can answer it for its whole audience at once.
    eval_config = EvalConfig(model=config.model, temperature=config.temperature,
                             max_new_tokens=config.max_new_tokens, batch_size=max(len(p[2]) for p in plan),
                             seed=config.seed)
    cache: dict = {}
    rows = {}
    for adapter, name, cases, samples in plan:
        label = f"eval {name}: base vs {adapter}"
        backend = MixedAdapterBackend(model, tokenizer, adapter, audiences[name], cache, config.eval_batch_size)
        summary = run_eval(replace(eval_config, adapter=adapter, samples=samples), out / "eval" / f"{name}-{adapter}",
                           cases=cases, backend=backend,
                           progress=lambda _what, done, total, label=label: report(label, done, total))
        rows[(adapter, name)] = read_result_rows(summary.results_path)
    return EvalRows(rows)
