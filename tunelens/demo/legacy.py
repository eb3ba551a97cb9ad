"""`tunelens demo`: the four lessons of DESIGN.md reproduced end to end with the real stages.

1. Bad data is learned at its rate: adapter A trains on mined pairs of which a known share was
   rewritten into Python 2; adapter B on what `data lint` kept. Their Python 2 rates on unseen prompts
   are shown beside A's training rate.
2. Words move probability: at a point where A writes Python 2, the same continuation is scored with
   "Prefer Python 3, not Python 2." added to the prompt (and with the adapter off).
3. Positive-only data erases pushback: adapter C trains on B's data plus generated pushback pairs;
   base, B and C answer the bundled pushback suite (broken specs and their clean twins).
4. Know when not to trust the fine-tune: a retrieval gate over B's training instructions, calibrated
   on unseen mined instructions vs out-of-domain queries, routes each query to B or the base model.

Every number in runs/demo/summary.json and report.html is read from the files the stages wrote.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from tunelens.errors import UserError
from tunelens.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

Progress = Callable[[str, int, int], None]  # (what is running, done, total)

PY3_NUDGE = "Prefer Python 3, not Python 2."
ADAPTERS = ("A", "B", "C")


@dataclass(frozen=True)
class DemoConfig:
    """The size of the demo run. `quick()` fits CI (at most 8 minutes on 2 CPU cores)."""

    model: str = "gemma3-270m"
    train_pairs: int = 64  # mined pairs adapter A trains on (B and C get what lint keeps of them)
    heldout: int = 12  # unseen mined instructions: Python 2 rates, gate calibration, routing
    contamination_rate: float = 0.3  # share of A's pairs rewritten with a Python 2 print statement
    pushback_rate: float = 0.5  # pushback pairs added for C, as a share of B's pairs
    pushback_pairs: int = 6  # broken specs (each with its clean twin), taken in turn from each kind
    code_cases: int = 6  # code-suite cases added to the routing evaluation (they have tests)
    off_topic: int = 8  # questions that want no code, added to the routing evaluation
    epochs: int = 2
    learning_rate: float = 1e-3  # high, so a CPU-sized run learns the habit it is shown
    batch_size: int = 4
    pair_tokens: int = 112  # mined pairs are chosen this short (training cost grows with tokens)
    max_length: int = 192  # room for the longer pushback pairs
    samples: int = 1  # sampled answers per prompt, beside the greedy one
    temperature: float = 0.8
    max_new_tokens: int = 80
    eval_batch_size: int = 48  # rows per generation batch (base and adapters share batches)
    trace_prompts: int = 6  # A's Python 2 answers scored to find the decision point of lesson 2
    seed: int = 0

    # Sizes are set by the 2-core CPU budget (30 min full, 8 min quick), measured on gemma3-270m: a
    # training step of 4 short pairs takes about 5 s (8 s with pushback pairs); one generation step
    # takes about 0.2 s for 1 row, 0.6 s for 12 rows and 1.0 s for 36 rows, so rows are batched widely.
    @classmethod
    def quick(cls, model: str = "gemma3-270m") -> "DemoConfig":
        return cls(model=model, train_pairs=24, heldout=6, pushback_pairs=4, code_cases=3, off_topic=4, epochs=1,
                   samples=0, pair_tokens=96, max_new_tokens=48, trace_prompts=3)

    def validate(self) -> None:
        if self.train_pairs < 10 or self.heldout < 5:
            raise UserError("demo: need at least 10 training pairs and 5 held-out prompts")
        if not 0 < self.contamination_rate < 1:
            raise UserError("demo: contamination rate must be between 0 and 1")
        if not 0 <= self.off_topic <= len(OFF_TOPIC_EVAL):
            raise UserError(f"demo: off_topic must be between 0 and {len(OFF_TOPIC_EVAL)}")


@dataclass
class DemoResult:
    out_dir: Path
    summary: dict
    seconds: float

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


# ---------------------------------------------------------------------------------------------------
# out-of-domain queries for the gate: things a code-generation fine-tune was never shown

# Calibration set: general questions and code in other languages.
OUT_OF_DOMAIN = (
    "What is the capital of Australia?", "Write a haiku about autumn rain.",
    "Translate 'good morning, how are you?' into French.", "Summarise the plot of Romeo and Juliet.",
    "Give me a recipe for banana bread.", "How do I change a flat bicycle tyre?",
    "What are the symptoms of a common cold?", "Explain the offside rule in football.",
    "Write a SQL query that lists customers who ordered in the last 30 days.",
    "Write a JavaScript function that debounces another function.",
    "How do I centre a div with CSS flexbox?", "Write a Bash one-liner that counts lines in all .txt files.",
    "Explain how photosynthesis works to a ten-year-old.", "Suggest three names for a coffee shop.",
    "Write a Rust function that reverses a vector in place.", "Write a Go HTTP handler that returns JSON.",
)
# Held out from calibration and answered by B and the base model for the routed evaluation: questions
# that ask for no code at all, so an answer with code in it is a bad output.
OFF_TOPIC_EVAL = (
    "What is the difference between weather and climate?", "Draft a polite email declining a meeting.",
    "Who painted the Mona Lisa?", "Convert 72 degrees Fahrenheit to Celsius.",
    "What should I pack for a weekend hike?", "Explain what inflation is in one paragraph.",
    "Write a short motivational quote.", "How many players are on a basketball team?",
)


# ---------------------------------------------------------------------------------------------------
# the run


def run_demo(config: DemoConfig, out_dir: str | Path, progress: Progress | None = None) -> DemoResult:
    config.validate()
    started = time.perf_counter()
    out = Path(out_dir)
    _claim_run_dir(out, config)
    report = progress or (lambda what, done, total: None)
    timings: dict[str, float] = {}

    def timed(name: str, func, *args):
        report(name, 0, 1)
        begin = time.perf_counter()
        value = func(*args)
        timings[name] = round(time.perf_counter() - begin, 1)
        report(name, 1, 1)
        return value

    data = timed("data: mine, contaminate, lint, pushback", _prepare_data, config, out, report)
    # One copy of the base model serves every stage: each adapter is trained on it and then unloaded.
    model, tokenizer = timed("load the base model", _load_base, config)
    for name, path in (("A", data["contaminated_path"]), ("B", data["clean_path"]), ("C", data["pushback_path"])):
        model = timed(f"train adapter {name}", _train_adapter, config, path, out / "adapters" / name, name,
                      model, tokenizer, report)
    model = timed("attach adapters A, B, C", _attach_adapters, model, out)
    evals = timed("eval: held-out prompts, pushback, code", _run_evals, config, out, data, model, tokenizer, report)
    lesson2 = timed("trace and compare at a Python 2 decision point", _lesson2, config, out, evals, model,
                    tokenizer)
    lesson4 = timed("gate: build, calibrate, route", _lesson4, config, out, data, evals, model, tokenizer, report)

    summary = _summary(config, data, evals, lesson2, lesson4, timings, time.perf_counter() - started)
    atomic_write_json(out / "summary.json", summary)
    _write_report(out, summary)
    return DemoResult(out, summary, time.perf_counter() - started)


def _claim_run_dir(out: Path, config: DemoConfig) -> None:
    """A rerun with the same settings resumes (trained adapters and eval answers are reused); other
    settings would mix two runs' files, so they need another directory."""
    marker = out / "demo-config.json"
    if marker.is_file() and json.loads(marker.read_text()) != asdict(config):
        raise UserError(f"{out} holds a demo run with other settings: use another --out, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, asdict(config))


# ---------------------------------------------------------------------------------------------------
# data


def _prepare_data(config: DemoConfig, out: Path, report: Progress) -> dict:
    from tunelens.data.contaminate import ContaminateConfig, contaminate_file
    from tunelens.data.lint import LintConfig, lint_file
    from tunelens.data.mine import MineConfig, mine_pairs
    from tunelens.data.pushback import PushbackConfig, add_pushback_file
    from tunelens.models import load_tokenizer
    from tunelens.prompts import encode_pair
    from tunelens.records import load_pairs

    data_dir = out / "data"
    # Methods too: the standard library has only a few hundred self-contained documented functions.
    mined = mine_pairs(None, MineConfig(seed=config.seed, include_methods=True),
                       on_progress=lambda done, total: report("data: mining the standard library", done, total))
    tokenizer = load_tokenizer(config.model)

    def fits(record: dict) -> bool:
        # Room for the print statement contamination may add, so A's and B's pairs are not truncated.
        messages = record["messages"]
        ids, _ = encode_pair(tokenizer, messages[0]["content"], messages[-1]["content"])
        return len(ids) + 12 <= min(config.pair_tokens, config.max_length)

    candidates = [record for record in mined.pairs if fits(record)]
    needed = config.train_pairs + config.heldout
    if len(candidates) < needed:
        raise UserError(f"demo: only {len(candidates)} mined pairs are at most {config.pair_tokens} tokens "
                        f"long, {needed} needed")
    chosen = random.Random(config.seed).sample(candidates, needed)
    atomic_write_jsonl(data_dir / "mined.jsonl", chosen[: config.train_pairs])
    atomic_write_jsonl(data_dir / "heldout.jsonl", chosen[config.train_pairs:])

    contaminated = contaminate_file(data_dir / "mined.jsonl", data_dir / "contaminated.jsonl",
                                    ContaminateConfig(rate=config.contamination_rate, kinds=("print",),
                                                      seed=config.seed))
    linted = lint_file(data_dir / "contaminated.jsonl", data_dir / "lint", LintConfig())
    recall = _lint_recall(data_dir / "contaminated.jsonl", data_dir / "lint" / "quarantine.jsonl")
    pushed = add_pushback_file(linted.clean_path, data_dir / "clean+pushback.jsonl",
                               PushbackConfig(rate=config.pushback_rate, seed=config.seed))
    return {
        "mined_total": len(mined.pairs), "mined_fitting": len(candidates),
        "train_pairs": contaminated.total, "contaminated_pairs": contaminated.contaminated,
        "training_python2_rate": contaminated.contaminated / contaminated.total,
        "lint": {"total": linted.total, "kept": linted.kept, "rejected": linted.rejected,
                 "by_reason": linted.by_reason, **recall},
        "pushback_added": pushed.added, "pushback_distinct_trigram_ratio": pushed.distinct_trigram_ratio,
        "heldout": [p.instruction for p in load_pairs(data_dir / "heldout.jsonl")],
        "train_instructions_B": [p.instruction for p in load_pairs(linted.clean_path)],
        "contaminated_path": data_dir / "contaminated.jsonl", "clean_path": linted.clean_path,
        "pushback_path": pushed.out_path,
    }


def _lint_recall(contaminated_path: Path, quarantine_path: Path) -> dict:
    """Share of the deliberately contaminated records that lint quarantined with a Python 2 reason."""
    tagged = {json.loads(line)["id"] for line in contaminated_path.read_text().splitlines()
              if line.strip() and "contamination" in json.loads(line)}
    caught = set()
    for line in quarantine_path.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        record = entry.get("record", entry)
        if any(reason["code"].startswith("py2-") for reason in entry.get("reasons", [])):
            caught.add(record.get("id"))
    found = len(tagged & caught)
    return {"contaminated": len(tagged), "caught": found, "recall": found / len(tagged) if tagged else None}


# ---------------------------------------------------------------------------------------------------
# training


def _train_config(config: DemoConfig):
    from tunelens.train import TrainConfig

    return TrainConfig(epochs=config.epochs, learning_rate=config.learning_rate, batch_size=config.batch_size,
                       max_length=config.max_length, eval_split=0.0, checkpoint_every=0, seed=config.seed)


def _load_base(config: DemoConfig):
    from tunelens.models import load_model

    return load_model(config.model, device="cpu")


def _train_adapter(config: DemoConfig, data_path: Path, adapter_dir: Path, name: str, model, tokenizer,
                   report: Progress):
    """Train one adapter on the base model and return the base model again, without LoRA layers."""
    from tunelens.train import train

    if (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "tunelens.json").is_file():
        return model  # trained by an earlier run of this demo directory
    result = train(_train_config(config), data_path, adapter_dir, model=model, tokenizer=tokenizer,
                   model_spec=config.model,
                   progress=lambda event: report(f"train adapter {name}", event.step, event.total_steps))
    return result.model.unload()


def _attach_adapters(model, out: Path):
    from tunelens.models import attach_adapter

    for name in ADAPTERS:
        model = attach_adapter(model, out / "adapters" / name, adapter_name=name)
    return model


# ---------------------------------------------------------------------------------------------------
# evaluation


BASE_ROWS = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class _MixedAdapterBackend:
    """The eval backend for one named adapter of the demo's multi-adapter model.

    The first time a list of prompts is asked for under one decoding, every model that will be asked
    the same prompts (the base model and each adapter evaluated on them: the `audience`) answers it in
    one batch, each row through its own adapter (PEFT's per-row `adapter_names`). Later requests are
    served from that cache. On a memory-bound CPU one step of a 3x larger batch costs well under 3 steps.
    """

    def __init__(self, model, tokenizer, adapter: str, audience: tuple[str, ...], cache: dict, batch_size: int):
        from tunelens.evaluate.backends import BASE, TUNED

        self.model, self.tokenizer, self.adapter, self.audience = model, tokenizer, adapter, audience
        self.cache, self.batch_size, self.roles = cache, batch_size, (BASE, TUNED)

    def generate(self, prompts, sampling, role):
        from tunelens.evaluate.backends import TUNED
        from tunelens.generation import generate_batch

        key = (tuple(prompts), sampling)
        wanted = self.adapter if role == TUNED else BASE_ROWS
        if (key, wanted) not in self.cache:
            names = [name for name in self.audience if (key, name) not in self.cache]
            rows = [(prompt, name) for name in names for prompt in prompts]
            answers = generate_batch(self.model, self.tokenizer, [p for p, _ in rows], sampling,
                                     batch_size=self.batch_size, adapter_names=[n for _, n in rows])
            for index, name in enumerate(names):
                self.cache[(key, name)] = answers[index * len(prompts):(index + 1) * len(prompts)]
        return self.cache[(key, wanted)]

    def describe(self):
        return {"backend": "transformers", "model": self.model.config.tunelens_spec, "adapter": self.adapter,
                "batched_with": [name for name in self.audience if name != self.adapter]}


def _heldout_cases(instructions: list[str]):
    from tunelens.evaluate.suite import Case

    return [Case(id=f"heldout-{i:03d}", suite="heldout", type="mined-stdlib", prompt=text, expect="code")
            for i, text in enumerate(instructions)]


def _off_topic_cases(count: int):
    from tunelens.evaluate.suite import Case

    return [Case(id=f"offtopic-{i:02d}", suite="offtopic", type="no-code-question", prompt=text, expect="other")
            for i, text in enumerate(OFF_TOPIC_EVAL[:count])]


def _pushback_cases(pairs: int):
    """`pairs` broken specs taken in turn from each kind of break in the suite, and their clean twins."""
    from tunelens.evaluate.suite import load_suite

    cases = load_suite("pushback")
    by_kind: dict[str, list] = {}
    for case in cases:
        if case.expect == "pushback":
            by_kind.setdefault(case.type, []).append(case)
    queues = list(by_kind.values())
    broken = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)][:pairs]
    twins = {c.twin for c in broken}
    return broken + [c for c in cases if c.id in twins]


def _run_evals(config: DemoConfig, out: Path, data: dict, model, tokenizer, report: Progress) -> dict:
    from tunelens.evaluate.runner import EvalConfig, run_eval
    from tunelens.evaluate.suite import load_suite

    plan = [  # (adapter, prompt set, cases, sampled answers per prompt)
        ("A", "heldout", _heldout_cases(data["heldout"]), config.samples),
        ("B", "heldout", _heldout_cases(data["heldout"]), config.samples),
        ("B", "pushback", _pushback_cases(config.pushback_pairs), config.samples),
        ("C", "pushback", _pushback_cases(config.pushback_pairs), config.samples),
        ("B", "code", load_suite("code")[: config.code_cases], 0),  # lesson 4 uses greedy answers
        ("B", "offtopic", _off_topic_cases(config.off_topic), 0),
    ]
    audiences: dict[str, tuple[str, ...]] = {}
    for adapter, name, _, _ in plan:
        audiences[name] = audiences.get(name, (BASE_ROWS,)) + (adapter,)
    # One eval batch holds a whole prompt set, so the backend can answer it for its whole audience at once.
    eval_config = EvalConfig(model=config.model, temperature=config.temperature,
                             max_new_tokens=config.max_new_tokens, batch_size=max(len(p[2]) for p in plan),
                             seed=config.seed)
    cache: dict = {}
    results = {}
    for adapter, name, cases, samples in plan:
        label = f"eval {name}: base vs {adapter}"
        backend = _MixedAdapterBackend(model, tokenizer, adapter, audiences[name], cache, config.eval_batch_size)
        summary = run_eval(replace(eval_config, adapter=adapter, samples=samples), out / "eval" / f"{name}-{adapter}",
                           cases=cases, backend=backend,
                           progress=lambda done, total, what, label=label: report(label, done, total))
        results[(adapter, name)] = _read_rows(summary.results_path)
    return results


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metric_rate(rows: list[dict], metric_name: str, model: str, decoding: str) -> dict:
    """A rate of one of the eval stage's metrics over the rows of one model and decoding."""
    from tunelens.evaluate.runner import METRICS
    from tunelens.evaluate.stats import rate

    metric = next(m for m in METRICS if m.name == metric_name)
    applicable = [r for r in rows if r["model"] == model and r["decoding"] == decoding and metric.applies(r)]
    return rate(sum(1 for r in applicable if metric.event(r)), len(applicable)).to_dict()


# ---------------------------------------------------------------------------------------------------
# lesson 2: a Python 2 decision point of A, under the prompt and under the nudged prompt


def _python2_print_positions(tokens: list[str]) -> list[int]:
    """Where a print becomes a Python 2 statement: the `print` token itself (the choice to print at all)
    and the token after it that is not `(` (the choice of statement over call)."""
    positions = []
    for index in range(len(tokens) - 1):
        if tokens[index].strip().endswith("print") and not tokens[index + 1].lstrip().startswith("("):
            positions += [index, index + 1]
    return positions


def _lesson2(config: DemoConfig, out: Path, evals: dict, model, tokenizer) -> dict:
    """Score A's Python 2 answers teacher-forced under the prompt, the nudged prompt and the adapter off;
    report the decision point the nudge moved most (a flip when there is one), and trace that answer."""
    from tunelens.compare import CompareConfig, compare_conditions, write_compare_html
    from tunelens.trace import TraceConfig, trace_generate, write_trace_html

    model.set_adapter("A")
    answers = [(r["prompt"], r["answer"]) for r in evals[("A", "heldout")]
               if r["model"] == "tuned" and r["decoding"] == "greedy"
               and any(f.get("code") == "py2-print" for f in r.get("findings", []))][: config.trace_prompts]
    points = []  # (nudge flipped it, drop in P(Python 2) under the nudge, comparison, position)
    for number, (prompt, answer) in enumerate(answers):
        # The adapter canary proves A is active once; repeating it per answer would only redo its passes.
        comparison = compare_conditions(model, tokenizer, prompt, [f"{prompt}\n\n{PY3_NUDGE}"], answer,
                                        CompareConfig(top_k=5, check_adapter=number == 0))
        tokens = [p.token for p in comparison.positions]
        for index in _python2_print_positions(tokens):
            position = comparison.positions[index]
            if position.token_ranks[0] != 1:
                continue  # not where Python 2 wins under the prompt
            drop = position.token_probs[0] - position.token_probs[1]
            points.append((position.argmax[1] != position.argmax[0], drop, comparison, position))
    if not points:
        return {"found": False, "prompts_tried": len(answers)}
    flipped, _, comparison, position = max(points, key=lambda point: point[:2])
    comparison.save(out / "lesson2" / "compare.json")
    write_compare_html(comparison, out / "lesson2" / "compare.html")
    trace = trace_generate(model, tokenizer, comparison.prompt, TraceConfig(max_new_tokens=config.max_new_tokens))
    trace.save(out / "lesson2" / "trace.json")
    write_trace_html(trace, out / "lesson2" / "trace.html")
    offset = sum(len(p.token) for p in comparison.positions[: position.position])
    alternative = _alternative_index(position)
    conditions = [c.name for c in comparison.conditions]
    return {
        "found": True, "prompt": comparison.prompt, "step": _step_at_offset(trace, offset),
        "continuation_tail": comparison.continuation[max(0, offset - 80): offset + len(position.token)],
        "python2_token": position.token,
        "alternative_token": position.candidate_tokens[alternative],
        "conditions": conditions,
        "python2_prob": dict(zip(conditions, position.token_probs)),
        "alternative_prob": dict(zip(conditions, (row[alternative] for row in position.probs))),
        "flips": [f.text for f in comparison.flips if f.position == position.position],
        "points": len(points), "points_flipped_by_nudge": sum(1 for p in points if p[0]),
        "points_flipped_by_adapter_off": sum(1 for p in points if p[3].argmax[2] != p[3].argmax[0]),
        "prompts_tried": len(answers), "nudge_flipped": flipped,
        "trace_html": "lesson2/trace.html", "compare_html": "lesson2/compare.html",
    }


def _step_at_offset(trace, offset: int) -> int | None:
    """The trace step that starts at character `offset` of the answer (None when tokenization differs)."""
    seen = 0
    for index, step in enumerate(trace.steps):
        if seen == offset:
            return index
        seen += len(step.token)
    return None


def _alternative_index(position) -> int:
    """Among the position's candidates, the token the nudged prompt prefers when it flips, else the
    runner-up under the prompt: the road not taken."""
    nudged = position.argmax[1]
    if nudged != position.token_id:
        return position.candidate_ids.index(nudged)
    ranked = sorted(range(len(position.candidate_ids)), key=lambda j: -position.probs[0][j])
    return next(j for j in ranked if position.candidate_ids[j] != position.token_id)


# ---------------------------------------------------------------------------------------------------
# lesson 4: the gate


def _lesson4(config: DemoConfig, out: Path, data: dict, evals: dict, model, tokenizer, report: Progress) -> dict:
    from tunelens.evaluate.stats import rate
    from tunelens.gate import build_gate, calibrate

    model.set_adapter("B")
    gate = build_gate(data["train_instructions_B"], out / "gate")
    calibration = calibrate(gate, data["heldout"], list(OUT_OF_DOMAIN), model=model, tokenizer=tokenizer,
                            model_info={"model": config.model, "adapter": "B"})
    rows = evals[("B", "heldout")] + evals[("B", "code")] + evals[("B", "offtopic")]
    greedy = {(r["suite"], r["case_id"], r["model"]): r for r in rows if r["decoding"] == "greedy"}
    queries = sorted({(r["suite"], r["case_id"], r["prompt"]) for r in rows})
    routes = {"adapter": 0, "base": 0}
    by_suite: dict[str, dict] = {}
    for index, (suite, case_id, prompt) in enumerate(queries):
        report("gate: routing the eval queries", index, len(queries))
        decision = gate.route(prompt, model=model, tokenizer=tokenizer)
        role = "tuned" if decision.route == "adapter" else "base"
        routes[decision.route] += 1
        counts = by_suite.setdefault(suite, {"queries": 0, "to_base": 0, "bad_routed": 0, "bad_always_adapter": 0})
        counts["queries"] += 1
        counts["to_base"] += role == "base"
        counts["bad_routed"] += _bad_output(greedy[(suite, case_id, role)])
        counts["bad_always_adapter"] += _bad_output(greedy[(suite, case_id, "tuned")])
    routed_bad = sum(c["bad_routed"] for c in by_suite.values())
    adapter_bad = sum(c["bad_always_adapter"] for c in by_suite.values())
    return {
        "auroc": calibration.auroc, "threshold": calibration.threshold,
        "target_coverage": calibration.target_coverage, "in_domain_coverage": calibration.in_domain_coverage,
        "out_of_domain_fallback_rate": calibration.out_of_domain_fallback_rate, "counts": calibration.counts,
        "routes": routes, "queries": len(queries), "by_suite": by_suite,
        "bad_output_routed": rate(routed_bad, len(queries)).to_dict(),
        "bad_output_always_adapter": rate(adapter_bad, len(queries)).to_dict(),
        "coverage_png": "gate/coverage.png",
    }


def _bad_output(row: dict) -> bool:
    """A code request's answer is bad as the eval stage scores it (no code, unparsable, Python 2, failing
    tests); a question that wants no code is answered badly when the answer holds code."""
    return bool(row["bad"]) if row["expect"] == "code" else bool(row["has_code"])


# ---------------------------------------------------------------------------------------------------
# summary and report


def _summary(config: DemoConfig, data: dict, evals: dict, lesson2: dict, lesson4: dict, timings: dict,
             seconds: float) -> dict:
    heldout_a, heldout_b = evals[("A", "heldout")], evals[("B", "heldout")]
    lesson1 = {"training_python2_rate": data["training_python2_rate"],
               "training_pairs": data["train_pairs"], "contaminated_pairs": data["contaminated_pairs"]}
    for label, rows, model in (("base", heldout_a, "base"), ("A", heldout_a, "tuned"), ("B", heldout_b, "tuned")):
        for decoding in ("greedy", "sampled"):
            lesson1[f"{label}_{decoding}"] = _metric_rate(rows, "python2", model, decoding)
    lesson3 = {}
    for label, rows, model in (("base", evals[("B", "pushback")], "base"), ("B", evals[("B", "pushback")], "tuned"),
                               ("C", evals[("C", "pushback")], "tuned")):
        for decoding in ("greedy", "sampled"):
            lesson3[f"{label}_{decoding}"] = {"pushback": _metric_rate(rows, "pushback", model, decoding),
                                              "over_asking": _metric_rate(rows, "over_asking", model, decoding)}
    data_summary = {k: v for k, v in data.items() if not isinstance(v, (Path, list))}
    return {"config": asdict(config), "seconds": round(seconds, 1), "timings_s": timings, "data": data_summary,
            "lesson1": lesson1, "lesson2": lesson2, "lesson3": lesson3, "lesson4": lesson4}


def _write_report(out: Path, summary: dict) -> None:
    from tunelens.report import png_data_uri, render_html

    plots = {name: png_data_uri(png) for name, png in _plots(summary, out).items()}
    atomic_write_text(out / "report.html", render_html("demo_report.html.j2", s=summary, plots=plots))


def _plots(summary: dict, out: Path) -> dict[str, bytes]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(title, labels, cells, ylabel):
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        values = [100 * (c.get("rate") or 0) for c in cells]
        low = [v - 100 * (c.get("low") or 0) for v, c in zip(values, cells)]
        high = [100 * (c.get("high") or 0) - v for v, c in zip(values, cells)]
        ax.bar(labels, values, yerr=[low, high], capsize=4, color="#4c72b0")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", labelsize=8, labelrotation=12)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return buffer.getvalue()

    l1, l3, l4 = summary["lesson1"], summary["lesson3"], summary["lesson4"]
    train_rate = {"rate": l1["training_python2_rate"], "low": l1["training_python2_rate"],
                  "high": l1["training_python2_rate"]}
    plots = {
        "lesson1": bars("Python 2 in answers to unseen prompts (95% Wilson)",
                        ["A: training data", "A greedy", "A sampled", "B greedy", "B sampled", "base greedy"],
                        [train_rate, l1["A_greedy"], l1["A_sampled"], l1["B_greedy"], l1["B_sampled"],
                         l1["base_greedy"]], "% of answers"),
        "lesson3": bars("Pushback on broken specs (95% Wilson)",
                        [f"{m} {d}" for d in ("greedy", "sampled") for m in ("base", "B", "C")],
                        [l3[f"{m}_{d}"]["pushback"] for d in ("greedy", "sampled") for m in ("base", "B", "C")],
                        "% pushed back"),
        "lesson4": bars("Bad outputs, greedy (95% Wilson)", ["always adapter B", "gate-routed"],
                        [l4["bad_output_always_adapter"], l4["bad_output_routed"]], "% bad"),
    }
    lesson2 = summary["lesson2"]
    if lesson2.get("found") and lesson2.get("alternative_token") is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        names = lesson2["conditions"]
        width = 0.38
        xs = range(len(names))
        ax.bar([x - width / 2 for x in xs], [100 * lesson2["python2_prob"][n] for n in names], width,
               label=f"{lesson2['python2_token']!r} (Python 2)", color="#c44e52")
        ax.bar([x + width / 2 for x in xs], [100 * lesson2["alternative_prob"][n] for n in names], width,
               label=f"{lesson2['alternative_token']!r} (alternative)", color="#55a868")
        ax.set_xticks(list(xs), names, fontsize=8)
        ax.set_ylabel("probability %")
        ax.legend(fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        plots["lesson2"] = buffer.getvalue()
    coverage = out / summary["lesson4"]["coverage_png"]
    if coverage.is_file():
        plots["coverage"] = coverage.read_bytes()
    return plots
