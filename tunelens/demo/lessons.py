"""`tunelens study lessons`: the case study's lessons 1 and 2 with training seeds as replicates, run as
docs/protocol.md fixes them before any run.

One run directory holds K training seeds (seed ... seed + K - 1). A seed redraws which prints become Python 2,
the data order and the dropout; the mined pool, the held-out prompts and lesson 2's split are the base seed's.
Per seed, under <out>/seed-<s>/: one training file per share (`contaminate --mode prints`; lesson 2 adds 30%)
and one LoRA each; lesson 1's answers at temperature 1 (answers-<adapter>.jsonl); lesson 2's reference points
under every lever and placebo (lesson2.json); seed.json last, so a rerun skips a finished seed. A rerun reuses
what is on disk, an invocation stops between seeds once its budget would be exceeded, and summary.json is
rebuilt from the seed directories after every invocation. It lives in tunelens.demo because lesson 1's
measures are tunelens.demo.measures, and the layers contract lets a study import nothing from the demo.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tunelens.config import config_to_dict, configclass, option
from tunelens.data.contaminate import ContaminateConfig, contaminate_file, count_prints, print_rich
from tunelens.data.mine import MineConfig, mine_pairs
from tunelens.data.records import load_pairs
from tunelens.demo.config import adapter_name
from tunelens.demo.measures import injected_print_check, lesson1_table, python2_given_prints, seed_slope
from tunelens.engine.generate import SamplingConfig, generate_batch
from tunelens.errors import UserError
from tunelens.hashing import file_sha256
from tunelens.inspect.levers import (LEVER_ROWS, MIN_POINTS, MIN_PROMPTS, SEED_DELTA, choose_placebo_example,
                                     lesson2_table, placebo_length_mismatches, placebo_levers, seed_lesson2)
from tunelens.io import atomic_write_json, atomic_write_jsonl, read_jsonl
from tunelens.model.load import attach_adapter, load_model
from tunelens.model.prompts import render_prompt
from tunelens.pycheck.check import code_or_nothing
from tunelens.runtime import Progress, RunResult, StageTimer, claim_run_dir, log_invocation, no_progress
from tunelens.studies.training import fits_tokens, train_unloaded

LESSON2_SHARE = 0.3  # lesson 2's adapters are A30-style: 30% of the training prints are Python 2


@configclass
class LessonsStudyConfig:
    """The study's settings; each field is a flag of `study lessons` and a key of its --config YAML file. The
    defaults are docs/protocol.md's sizes after its amendment 1 (64 print-rich training pairs of at most 400
    tokens, 64 print-inviting held-out prompts, 2 epochs, answers at temperature 1 of at most 100 tokens).
    A rerun must give the same settings to resume."""

    model: str = option("gemma3-270m", "Base model spec (the protocol: gemma3-270m for lesson 1, "
                                       "qwen2.5-coder-1.5b for lesson 2).", short="-m")
    lesson: tuple[int, ...] = option((1,), "Lessons to run on the same adapters: 1, 2 or 1,2.")
    seeds: int = option(2, "Training seeds K (seed ... seed+K-1); the protocol's n is 14 for lesson 1 on "
                           "gemma3-270m and 4 for lesson 2.", min=1)
    shares: tuple[float, ...] = option((0.0, 0.05, 0.15, 0.3), "Lesson 1: Python 2's shares of the training "
                                                               "prints, one adapter each (lesson 2 adds 0.3).")
    lesson1_seeds: int | None = option(None, "Lesson 1 answers only for the first N seeds (default: all), e.g. "
                                             "Qwen's descriptive K=2 on lesson 2's A30 adapters.", min=1)
    train_pairs: int = option(64, "Print-rich mined pairs each adapter trains on.", min=4)
    heldout: int = option(64, "Held-out print-inviting prompts from modules with no training pair: lesson 1's "
                              "answers, and lesson 2's points in the base's answers to them.", min=4)
    mine_sources: tuple[str, ...] = option(("stdlib", "site-packages"), "Where pairs are mined: stdlib, "
                                                                        "site-packages or source paths.")
    licenses: tuple[str, ...] = option(("permissive",), "Licences of the mined code (as `data mine --licenses`).")
    mine_max_lines: int = option(200, "Longest function mined (lines): print-rich code is long (docs/protocol.md, "
                                      "amendment 1).", min=3)
    pair_tokens: int = option(400, "Pairs are chosen at most this many tokens long.", min=16)
    max_length: int = option(448, "Training sequence cap.", min=16)
    epochs: int = option(2, "Training epochs per adapter.", min=1)
    learning_rate: float = option(1e-3, "Peak learning rate (as the demo's).", min=0.0)
    batch_size: int = option(4, "Training batch size.", min=1)
    temperature: float = option(1.0, "Temperature of lesson 1's answers (the model's own distribution).", min=0.0)
    max_new_tokens: int = option(100, "Most tokens per lesson 1 answer.", min=1)
    eval_batch_size: int = option(16, "Prompts per generation batch.", min=1)
    resamples: int = option(2000, "Bootstrap resamples of lesson 1's per-seed slope interval.", min=100)
    seed: int = option(0, "Base seed: mining, drawing, the split; training seeds are seed ... seed+K-1.")

    def validate(self) -> None:
        if not self.lesson or any(n not in (1, 2) for n in self.lesson) or len(set(self.lesson)) != len(self.lesson):
            raise UserError(f"study lessons: --lesson takes 1, 2 or 1,2 (lessons 3, 4 and safety are not testable "
                            f"here: docs/protocol.md), got {','.join(map(str, self.lesson)) or 'none'}")
        if any(not 0 <= s < 1 for s in self.shares) or len(set(self.shares)) != len(self.shares):
            raise UserError("study lessons: --shares must be distinct shares in [0, 1) (e.g. 0,0.05,0.15,0.3)")
        if 1 in self.lesson and not self.shares:
            raise UserError("study lessons: lesson 1 needs at least one share in --shares")


def adapter_of(share: float) -> str:
    return adapter_name("A", share)  # A0, A5, A15, A30, as the demo names them


def trained_shares(config: LessonsStudyConfig) -> list[float]:
    return sorted({*(config.shares if 1 in config.lesson else ()), *((LESSON2_SHARE,) if 2 in config.lesson else ())})


def lesson1_seed_count(config: LessonsStudyConfig) -> int:
    return min(config.seeds, config.lesson1_seeds or config.seeds) if 1 in config.lesson else 0


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def prompt_id(index: int) -> str:
    return f"heldout-{index:03d}"


# ---------------------------------------------------------------------------------------------------
# docs/protocol.md's decisions, as data, and the one rule that turns a reading into a headline


@dataclass(frozen=True)
class ProtocolRow:
    """One row of the protocol's power table; `feasible`: whether its n fits this machine (decided before any run)."""

    lesson: str
    model: str
    n: int
    feasible: bool
    direction: str  # "up" or "down": what the case study claims for the primary row
    reason: str = ""


QWEN = "qwen2.5-coder-1.5b"
PROTOCOL = {
    "1": ProtocolRow("1 (gemma3-270m)", "gemma3-270m", 14, True, "up"),
    "1-qwen": ProtocolRow("1 (Qwen, A30)", QWEN, 15, False, "up",
                          "15 seeds would take 1071 min, with 340 min left of the Qwen budget"),
    "2": ProtocolRow("2 (Qwen)", QWEN, 4, True, "up"),
    "3": ProtocolRow("3 (Qwen)", QWEN, 4, False, "down",
                     "4 seeds of B and of C would take 557 min, with 1 min left of the Qwen budget"),
    "4": ProtocolRow("4 (Qwen)", QWEN, 25, False, "down",
                     "25 seeds would take 3731 min, with 1 min left of the Qwen budget"),
    "safety": ProtocolRow("safety (Qwen)", QWEN, 11, False, "down",
                          "11 seeds would take 607 min, with 1 min left of the Qwen budget"),
}
NOT_RUN_HERE = ("3", "4", "safety")  # not testable here by the protocol, and this runner does not run them

REPLICATED, NOT_REPLICATED, NOT_TESTABLE, PENDING = "replicated", "not replicated", "not testable here", "pending"


def headline(row: ProtocolRow, model: str | None, seeds: int, direction: str | None, complete: bool = True,
             floor_met: bool = True) -> dict:
    """The protocol's reading rule for a lesson's headline (docs/protocol.md, "A lesson's headline"):
    {"word", "reason"}. A run that is not the one the protocol planned describes its adapters only."""
    if not row.feasible:
        return {"word": NOT_TESTABLE, "reason": f"the protocol decided before any run: {row.reason}"}
    if model is not None and not same_model(model, row.model):
        return {"word": NOT_TESTABLE, "reason": f"the protocol plans this lesson on {row.model}, this run used {model}"}
    if seeds < row.n:
        return {"word": NOT_TESTABLE, "reason": f"{seeds} seeds is below the protocol's n of {row.n}: figures per "
                                                "adapter only, no statement about the recipe"}
    if not complete:
        return {"word": PENDING, "reason": "the run has seeds left to train: rerun the same command"}
    if not floor_met:
        return {"word": NOT_TESTABLE, "reason": f"a seed has fewer than the protocol's {MIN_POINTS} points over "
                                                f"{MIN_PROMPTS} prompts"}
    if direction == row.direction:
        return {"word": REPLICATED, "reason": "the primary row claims the case study's direction after Holm"}
    if direction in (None, "none"):
        return {"word": NOT_REPLICATED, "reason": "the primary row claims no direction after Holm"}
    return {"word": NOT_REPLICATED, "reason": "the primary row claims the opposite of the case study's direction"}


def same_model(spec: str, planned: str) -> bool:
    """The embedded name itself, or a directory or file named after it (Qwen2.5-Coder-1.5B-Instruct counts)."""
    return Path(spec).name.lower().startswith(planned.lower())


def not_testable_here() -> dict:
    """Lessons 3, 4 and safety: what the protocol decided for them, for summary.json and docs/lessons.md."""
    return {key: {"lesson": PROTOCOL[key].lesson, "n": PROTOCOL[key].n,
                  "headline": headline(PROTOCOL[key], None, 0, None)} for key in NOT_RUN_HERE}


def run_lessons_study(config: LessonsStudyConfig, out_dir: str | Path, budget_minutes: float | None = None,
                      progress: Progress | None = None, model=None, tokenizer=None) -> RunResult:
    """Run (or continue) the study in out_dir; another seed starts only if the slowest so far would still fit
    `budget_minutes`. `model` and `tokenizer` replace loading config.model (tests pass a tiny model)."""
    started = time.perf_counter()
    out = Path(out_dir)
    claim_run_dir(out, "study-config.json", config_to_dict(config), "a lessons study")
    report = progress or no_progress
    timed = StageTimer(report)
    if model is None:
        model, tokenizer = timed("load the base model", load_model, config.model, None, "cpu")
    data = timed("data: mine and draw print-rich pairs", prepare_data, config, out, tokenizer, report)
    if 2 in config.lesson:
        timed("lesson 2: the base's answers", base_answers, config, data, model, tokenizer)
    ran, stopped = [], False
    for index in range(config.seeds):
        seed = config.seed + index
        if (seed_dir(out, seed) / "seed.json").is_file():
            continue
        if ran and not fits_budget(out, started, budget_minutes):
            stopped = True
            break
        model = timed(f"seed {seed}", run_seed, config, out, data, index, model, tokenizer, report)
        ran.append(seed)
    seconds = round(time.perf_counter() - started, 1)
    invocations = log_invocation(out, seconds, {**timed.timings, "seeds_run": ran, "stopped_for_budget": stopped})
    summary = build_summary(config, out, data["counts"], invocations)
    atomic_write_json(out / "summary.json", summary)
    return RunResult(out, summary, seconds)


def fits_budget(out: Path, started: float, budget_minutes: float | None) -> bool:
    """Whether another seed fits: elapsed + the slowest finished seed's time (the best estimate on disk)."""
    if budget_minutes is None:
        return True
    times = [json.loads(path.read_text())["seconds"] for path in out.glob("seed-*/seed.json")]
    return time.perf_counter() - started + max(times, default=0.0) <= 60 * budget_minutes


PRINT_WORDS = re.compile(r"\b(print|prints|printed|printing|display|displays|displayed|stdout|standard output)\b",
                         re.IGNORECASE)


def print_inviting(pairs, rich_ids: set[int]) -> list:
    """Pairs whose request asks for printed output and whose code is not print-rich (docs/protocol.md,
    amendment 1): lesson 1's held-out prompts. The estimand is conditional on the answer printing, so the
    reference needs no print of its own."""
    return [p for p in pairs if id(p) not in rich_ids and PRINT_WORDS.search(p.instruction)]


def prepare_data(config: LessonsStudyConfig, out: Path, tokenizer, report: Progress) -> dict:
    """The base seed's pairs, made once and reused by every rerun: the mined pool (mined.jsonl), the print-rich
    training pairs (train.jsonl), the print-inviting held-out prompts from modules with no training pair
    (heldout.jsonl), and non-printing pairs for the one-shot lever's placebo (silent.jsonl). A rerun never
    re-mines: the pool changes with the installed packages."""
    data_dir = out / "data"
    paths = {name: data_dir / f"{name}.jsonl" for name in ("mined", "train", "heldout", "silent")}
    counts_path = data_dir / "data.json"
    # The draw is what the seeds use; once it is on disk the pool is not needed (a run directory copied
    # without its 19 MB mined.jsonl, as docs/runs/ keeps it, still resumes).
    if all(paths[name].is_file() for name in ("train", "heldout", "silent")) and counts_path.is_file():
        return {"paths": paths, "counts": json.loads(counts_path.read_text())}
    if not paths["mined"].is_file():
        settings = MineConfig(seed=config.seed, licenses=config.licenses, max_lines=config.mine_max_lines)
        mined = mine_pairs(list(config.mine_sources), settings,
                           progress=lambda _what, done, total: report("data: mining", done, total))
        atomic_write_jsonl(paths["mined"], mined.pairs)
    pool = load_pairs(paths["mined"])

    fits_record = fits_tokens(tokenizer, min(config.pair_tokens, config.max_length))
    fits = lambda pair: fits_record(pair.raw)
    rng = random.Random(config.seed)
    rich = print_rich(pool)
    train_rows = [p for p in rich if fits(p)]
    rng.shuffle(train_rows)
    train_rows = train_rows[:config.train_pairs]
    train_modules = {module_of(p.raw) for p in train_rows}
    inviting = [p for p in print_inviting(pool, {id(p) for p in rich}) if module_of(p.raw) not in train_modules]
    rng.shuffle(inviting)
    heldout_rows = [p for p in inviting[:4 * config.heldout] if fits(p)][:config.heldout]
    if len(train_rows) < config.train_pairs or len(heldout_rows) < config.heldout:
        raise UserError(f"study lessons: the mined pool ({len(pool)} pairs) has {len(train_rows)} print-rich pairs "
                        f"of at most {config.pair_tokens} tokens for {config.train_pairs} training pairs, and "
                        f"{len(heldout_rows)} print-inviting prompts from other modules for {config.heldout} "
                        "held-out prompts: lower --train-pairs/--heldout, raise --pair-tokens or --mine-max-lines, "
                        "or add --mine-sources")
    held = {id(pair) for pair in heldout_rows}
    silent = [p for p in pool if id(p) not in held and count_prints(code_or_nothing(p.response)) == 0]
    rng.shuffle(silent)
    silent = [p for p in silent[:200] if fits(p)][:50]
    for name, rows in (("train", train_rows), ("heldout", heldout_rows), ("silent", silent)):
        atomic_write_jsonl(paths[name], [p.raw for p in rows])
    counts = {"mined": len(pool), "print_rich": len(rich), "print_inviting": len(inviting),
              "train_pairs": len(train_rows), "heldout": len(heldout_rows), "silent_candidates": len(silent),
              "mine_sources": list(config.mine_sources), "mined_sha256": file_sha256(paths["mined"])}
    atomic_write_json(counts_path, counts)
    return {"paths": paths, "counts": counts}


def module_of(record: dict) -> tuple:
    """(distribution, module) a mined record comes from: held-out prompts never share one with training."""
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    return source.get("distribution"), source.get("module")


def run_seed(config: LessonsStudyConfig, out: Path, data: dict, index: int, model, tokenizer, report: Progress):
    """One training seed, reusing what is on disk; returns the base model without LoRA layers."""
    begin = time.perf_counter()
    seed = config.seed + index
    where = seed_dir(out, seed)
    heldout = load_pairs(data["paths"]["heldout"])
    shares = {}
    for share in trained_shares(config):
        name = adapter_of(share)
        shares[name] = contaminated(config, data["paths"]["train"], where / "data", share, seed)
        model = train_unloaded(config, where / "data" / f"{name}.jsonl", where / "adapters" / name, model, tokenizer,
                               lambda _what, done, total, n=name: report(f"seed {seed}: train {n}", done, total), seed)
        answers_path, lesson2_path = where / f"answers-{name}.jsonl", where / "lesson2.json"
        need1 = index < lesson1_seed_count(config) and share in config.shares and not answers_path.is_file()
        need2 = 2 in config.lesson and share == LESSON2_SHARE and not lesson2_path.is_file()
        if not (need1 or need2):
            continue
        tuned = attach_adapter(model, where / "adapters" / name, adapter_name=name)
        tuned.eval()  # dropout off: the answers and points are the adapter's, not a training step's
        if need1:
            report(f"seed {seed}: lesson 1 answers of {name}", 0, 1)
            answers = generate_batch(tuned, tokenizer, [p.instruction for p in heldout],
                                     SamplingConfig(config.max_new_tokens, config.temperature, seed=seed),
                                     batch_size=config.eval_batch_size)
            atomic_write_jsonl(answers_path, [{"prompt": prompt_id(i), "answer": a} for i, a in enumerate(answers)])
            report(f"seed {seed}: lesson 1 answers of {name}", 1, 1)
        if need2:
            report(f"seed {seed}: lesson 2 points of {name}", 0, 1)
            atomic_write_json(lesson2_path, lesson2_of_seed(config, data, tuned, tokenizer, heldout, seed))
            report(f"seed {seed}: lesson 2 points of {name}", 1, 1)
        model = tuned.unload()
    atomic_write_json(where / "seed.json", {"seed": seed, "index": index, "data": shares,
                                            "seconds": round(time.perf_counter() - begin, 1)})
    return model


def contaminated(config: LessonsStudyConfig, train_path: Path, data_dir: Path, share: float, seed: int) -> dict:
    """The seed's training file at one share (its prints rewritten, none added) and its counts, reused."""
    name = adapter_of(share)
    path, counts_path = data_dir / f"{name}.jsonl", data_dir / f"{name}.json"
    if path.is_file() and counts_path.is_file():
        return json.loads(counts_path.read_text())
    result = contaminate_file(train_path, path, ContaminateConfig(rate=share, kinds=("print",), seed=seed,
                                                                  mode="prints"))
    counts = {"target_share": share, "training_share": result.python2_print_share, "pairs": result.total,
              "rewritten_pairs": result.contaminated, "prints": result.prints_total,
              "python2_prints": result.prints_python2}
    atomic_write_json(counts_path, counts)
    return counts


BASE_ANSWER_TOKENS = 128  # docs/protocol.md's cost of lesson 2's base answers


def base_answers(config: LessonsStudyConfig, data: dict, model, tokenizer) -> Path:
    """The base model's greedy answers to the held-out prompts (data/base-answers.jsonl), made once per study:
    lesson 2's points are the prints in them (docs/protocol.md, amendment 1)."""
    path = data["paths"]["heldout"].with_name("base-answers.jsonl")
    if not path.is_file():
        heldout = load_pairs(data["paths"]["heldout"])
        answers = generate_batch(model, tokenizer, [p.instruction for p in heldout],
                                 SamplingConfig(BASE_ANSWER_TOKENS, 0.0, seed=config.seed),
                                 batch_size=config.eval_batch_size)
        atomic_write_jsonl(path, [{"prompt": prompt_id(i), "answer": a} for i, a in enumerate(answers)])
    data["paths"]["base_answers"] = path
    return path


def lesson2_references(data: dict, heldout) -> list[tuple[str, str, str]]:
    """(prompt id, request, history) per held-out prompt: lesson 2's teacher-forced histories, the base's whole
    answer as it wrote it (Python 3, no Python 2 to copy) where its code prints, else "" (no points). Every
    prompt stays in, so the calibration/measurement split and the window see prompts without a print too."""
    answers = {row["prompt"]: row["answer"] for row in read_jsonl(data["paths"]["base_answers"])}
    references = []
    for i, pair in enumerate(heldout):
        answer = answers.get(prompt_id(i), "")
        references.append((prompt_id(i), pair.instruction, answer if count_prints(code_or_nothing(answer)) else ""))
    return references


def lesson2_of_seed(config: LessonsStudyConfig, data: dict, model, tokenizer, heldout, seed: int) -> dict:
    """seed_lesson2 on the base model's answers to the held-out prompts (Python 3: no Python 2 history to copy),
    with the protocol's placebos; the one-shot example is a training pair (its code prints), its placebo the
    non-printing mined pair closest in length."""
    train_pairs = [(p.instruction, p.response) for p in load_pairs(data["paths"]["train"])]
    silent = [(p.instruction, p.response) for p in load_pairs(data["paths"]["silent"])]
    if not silent:
        raise UserError("study lessons: no non-printing mined pair fits for the one-shot lever's placebo")
    example = train_pairs[0]
    length = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    placebo = choose_placebo_example(silent, example, length)
    references = lesson2_references(data, heldout)
    result = seed_lesson2(model, tokenizer, references, lambda text: render_prompt(tokenizer, text),
                          placebo_levers(tokenizer, example, placebo), split_seed=config.seed, seed=seed)
    # the texts are of equal length in Qwen2.5-Coder's tokens; another tokenizer's differences are recorded
    mismatches = [list(m) for m in placebo_length_mismatches(tokenizer)]
    return {**result, "example": example[0], "placebo_example": placebo[0], "placebo_length_mismatches": mismatches}


def build_summary(config: LessonsStudyConfig, out: Path, counts: dict, invocations: list[dict]) -> dict:
    done = [config.seed + i for i in range(config.seeds) if (seed_dir(out, config.seed + i) / "seed.json").is_file()]
    summary = {"config": config_to_dict(config), "protocol_commit": protocol_commit(),
               "seeds_planned": config.seeds, "seeds_done": done, "complete": len(done) == config.seeds,
               "data": counts, "seed_data": {str(s): json.loads((seed_dir(out, s) / "seed.json").read_text())["data"]
                                             for s in done},
               "lessons": {}, "not_testable": not_testable_here(), "invocations": invocations}
    if 1 in config.lesson:
        summary["lessons"]["1"] = lesson1_summary(config, out, done, summary["complete"])
    if 2 in config.lesson:
        summary["lessons"]["2"] = lesson2_summary(config, out, done, summary["complete"])
    return summary


def protocol_commit() -> str | None:
    """The commit of docs/protocol.md this code runs under, or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        found = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%H", "--", "docs/protocol.md"],
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found or None


def lesson1_seed_values(config: LessonsStudyConfig, out: Path, seed: int) -> dict:
    """P(Python 2 | prints) per share, the slope on the share contamination reached, the injected-print check."""
    meta = json.loads((seed_dir(out, seed) / "seed.json").read_text())["data"]
    answers, per_share = {}, {}
    for share in sorted(config.shares):
        name = adapter_of(share)
        rows = read_jsonl(seed_dir(out, seed) / f"answers-{name}.jsonl")
        answers[name] = {row["prompt"]: row["answer"] for row in rows}
        x = meta[name]["training_share"]
        per_share[name] = {"target_share": share, "training_share": share if x is None else x,
                           **python2_given_prints(list(answers[name].values())).to_dict()}
    result = {"seed": seed, "per_share": per_share}
    if len(per_share) >= 2:
        by_x = {cell["training_share"]: answers[name] for name, cell in per_share.items()}
        result["slope"] = seed_slope(by_x, resamples=config.resamples, seed=seed)
        result["slope"]["per_share"] = {str(k): v for k, v in result["slope"]["per_share"].items()}
    if "A0" in answers:
        result["injected"] = {name: injected_print_check(answers[name], answers["A0"])
                              for name in answers if name != "A0"}
    return result


def lesson1_summary(config: LessonsStudyConfig, out: Path, done: list[int], complete: bool) -> dict:
    seeds = [s for s in done if s - config.seed < lesson1_seed_count(config)]
    per_seed = [lesson1_seed_values(config, out, s) for s in seeds]
    slopes = [v["slope"]["slope"] for v in per_seed if "slope" in v]
    a30 = [v["per_share"][adapter_of(LESSON2_SHARE)]["conditional"]["rate"] for v in per_seed
           if adapter_of(LESSON2_SHARE) in v["per_share"]]
    role = "1" if len(config.shares) >= 2 else "1-qwen"  # gemma's slope row, or Qwen's P(Python 2 | prints) at 30%
    table = lesson1_table(slopes if role == "1" else [], a30 if role == "1-qwen" else [])
    primary = table[0] if role == "1" else table[2]
    n_answers = [cell["answers"] for v in per_seed for cell in v["per_share"].values()]
    planned = lesson1_seed_count(config)
    finished = complete and len(seeds) == planned
    return {"role": role, "protocol_row": PROTOCOL[role].lesson, "model": config.model, "seeds": seeds,
            "seeds_planned": planned, "complete": finished, "per_seed": per_seed,
            "answers_per_adapter": min(n_answers, default=0), "table": table, "primary_row": primary["row"],
            "headline": headline(PROTOCOL[role], config.model, planned, primary["direction"], finished)}


def lesson1_combined(gemma: dict | None, qwen: dict | None) -> dict:
    """Lesson 1's three rows over gemma's slope run and Qwen's A30 run (either may be missing), Holm across
    all three, and each run's headline read again from its primary row. docs/lessons.md prints this."""
    slopes = gemma["table"][0]["seeds"]["per_seed"] if gemma else []
    a30 = qwen["table"][2]["seeds"]["per_seed"] if qwen else []
    table = lesson1_table(slopes, a30)
    headlines = {}
    for role, section, primary in (("1", gemma, table[0]), ("1-qwen", qwen, table[2])):
        if section:
            headlines[role] = headline(PROTOCOL[role], section["model"], section["seeds_planned"],
                                       primary["direction"], section["complete"])
    return {"table": table, "headlines": headlines}


def lesson2_summary(config: LessonsStudyConfig, out: Path, done: list[int], complete: bool) -> dict:
    per_seed = [{"seed": s, **json.loads((seed_dir(out, s) / "lesson2.json").read_text())} for s in done]
    names = [row for row, _, _ in LEVER_ROWS]
    values = {name: [next(r["mean"] for r in v["rows"] if r["row"] == name) for v in per_seed] for name in names}
    table = lesson2_table(values)
    floor = all(r["meets_floor"] for v in per_seed for r in v["rows"])
    return {"protocol_row": PROTOCOL["2"].lesson, "model": config.model, "seeds": done,
            "seeds_planned": config.seeds, "complete": complete, "per_seed": per_seed, "case_study": SEED_DELTA,
            "points_per_seed": [v["points"] for v in per_seed], **table, "primary_row": names[0], "floor_met": floor,
            "headline": headline(PROTOCOL["2"], config.model, config.seeds, table["rows"][0]["direction"], complete,
                                 floor)}

