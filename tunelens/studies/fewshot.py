"""`tunelens study few-shot`: does a model copy an injected example when it does not match the request,
and what does that do to its answers?

The run, on one loaded model (optionally with an adapter):
1. data: mine a pool (`data mine`); draw an example pool and held-out prompts, one per module, from
   modules that give no example (`draw_pairs`), so no held-out prompt or its siblings is an example;
2. cases: for each held-out prompt, one example at each **similarity** (nearest, middling and least
   similar instruction in the pool by the embedder's cosine rank) and of each **quality**: clean; Python 2
   (the same pair with its prints made Python 2 statements, `data contaminate`'s rewrite); wrong function
   (another pool pair's response, unrelated to both the example and the prompt, shown under the
   example's instruction); plus the prompt with no example (the baseline). 9 + 1 prompts per held-out one;
3. free text: greedy answers for all of them in wide batches (the eval's batched generation), scored by
   the eval's scoring (`bad_output`), and the copy measures of `fewshot_measures` against the example;
4. teacher-forced: lesson 2's decision-point measure (`tunelens.inspect.levers`): at every Python 2 print of an
   answer, log P(call) - log P(Python 2 token) under the plain prompt and under each example and lesson
   2's sentence, so words and examples sit on one scale. The answers scored: each held-out prompt's
   reference made Python 2 (points for every prompt), and up to `trace_answers` generated answers that
   wrote a Python 2 print;
5. the context check (`tunelens.inspect.context_check`) on every injected example, against "this example made
   the answer bad".
Every file lands in the run directory; a rerun with the same settings reuses the answers and points.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from tunelens.config import configclass, option
from tunelens.retrieval.fewshot import Example, render_few_shot
from tunelens.retrieval.embedders import load_embedder, MINILM
from tunelens.io import atomic_write_json, atomic_write_jsonl
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.studies.fewshot_measures import (BASELINE, condition_name, copy_measures, function_name, LEVELS, QUALITIES, QUALITY_LABELS, SENTENCE_LEVER)
from tunelens.runtime import claim_run_dir, finish_run, no_progress, Progress, RunResult, StageTimer
from tunelens.data.contaminate import rewrite_code, split_code
from tunelens.data.mine import draw_pairs, mine_pairs, MineConfig
from tunelens.engine.generate import generate_batch, SamplingConfig
from tunelens.evaluate.plan import WorkItem
from tunelens.evaluate.scoring import score_answers
from tunelens.evaluate.suite import Case
from tunelens.inspect.context_check import check_context, ContextCheckConfig
from tunelens.inspect.levers import Lever, NUDGE, python2_points, score_points
from tunelens.model.load import load_model
from tunelens.model.prompts import encode_pair, render_prompt
from tunelens.model.state import has_adapter
from tunelens.pycheck.check import check_python
from tunelens.studies.fewshot_report import build_summary, write_figures



@configclass
class FewShotStudyConfig:
    """The size of the copying study. At the defaults on gemma3-270m and a 2-core CPU: 240 greedy
    answers of at most 64 tokens in batches of 40 (about 8 minutes), and up to 32 answers teacher-forced
    under 11 contexts each (about 2-3 minutes)."""

    model: str = option(DEFAULT_MODEL, "Model spec: embedded name, directory or .gguf.", short="-m")
    adapter: str | None = option(None, "PEFT adapter directory to answer with (default: the base model).")
    sources: tuple[str, ...] = option(("stdlib",), "Where the pool is mined: stdlib, site-packages or source paths.")
    pool: int = option(300, "Mined pairs in the example pool (the candidates at each similarity).", min=6)
    heldout: int = option(24, "Held-out prompts (one per module, from modules with no example).", min=2)
    pair_tokens: int = option(160, "Examples and held-out pairs are chosen at most this many tokens long.", min=16)
    max_new_tokens: int = option(64, "Most tokens per answer.", min=1)
    batch_size: int = option(40, "Rows per generation batch.", min=1)
    embedder: str = option(MINILM, "Embedder that ranks the pool by similarity to each prompt.")
    trace_answers: int = option(8, "Most generated answers with a Python 2 print scored teacher-forced.", min=0)
    check_threshold: float = option(0.5, "The context check's flagging threshold.", min=0.0, max=1.0)
    resamples: int = option(10_000, "Bootstrap resamples.", min=100)
    seed: int = option(0, "Seed of mining and drawing.")


FewShotStudyResult = RunResult


def conditions() -> list[tuple[str, str]]:
    return [(level, quality) for level in LEVELS for quality in QUALITIES]


def condition_label(level: str, quality: str) -> str:
    return f"{level} {QUALITY_LABELS[quality]} example"


def run_fewshot_study(config: FewShotStudyConfig, out: str | Path, model=None, tokenizer=None,
                      progress: Progress | None = None) -> FewShotStudyResult:
    """Run the study into `out` (a rerun with the same settings resumes). `model` and `tokenizer` replace
    loading config.model (the demo passes its loaded model; tests a tiny one)."""
    started = time.perf_counter()
    out = Path(out)
    _claim_run_dir(out, config)
    report = progress or no_progress
    timed = StageTimer(report)
    if model is None:
        model, tokenizer = timed("load the model", load_model, config.model, config.adapter, "cpu")

    embedder = load_embedder(config.embedder)
    data = timed("data: mine a pool, draw examples and held-out prompts", _prepare_data, config, out, tokenizer,
                 report)
    cases = timed("choose an example per similarity and quality", build_cases, data["pool"], data["heldout"],
                  embedder)
    atomic_write_jsonl(out / "cases.jsonl", cases)
    answers = timed("answer with and without examples", _generate, config, out, cases, model, tokenizer, report)
    rows = timed("score answers and check contexts", _score, config, cases, answers, model, embedder)
    atomic_write_jsonl(out / "rows.jsonl", rows)
    points = timed("teacher-forced decision points", _teacher_forced, config, out, cases, answers, model,
                   tokenizer, report)

    summary = build_summary(config, data["counts"], rows, points, model_label=_model_label(model, config))
    finish_run(out, summary, timed, started)
    write_figures(out, summary)
    return FewShotStudyResult(out, summary, time.perf_counter() - started)


def _model_label(model, config: FewShotStudyConfig) -> str:
    return getattr(getattr(model, "config", None), "tunelens_spec", None) or config.model


def _claim_run_dir(out: Path, config: FewShotStudyConfig) -> None:
    claim_run_dir(out, "study-config.json", json.loads(json.dumps(asdict(config))), "a few-shot study")


# ---------------------------------------------------------------------------------------------------
# data and cases


def python2_version(response: str) -> str | None:
    """The response with its prints made Python 2 statements (a `print "..."` added where it has none);
    None when its code cannot be rewritten."""
    parts = split_code(response)
    if parts is None:
        return None
    before, code, after = parts
    try:
        rewritten, changed = rewrite_code(code, "print")
    except (SyntaxError, ValueError):
        return None
    return before + rewritten + after if changed else None


def _usable(record: dict, tokenizer, pair_tokens: int) -> bool:
    """A pair fits the token budget, its code is clean Python 3 defining a function, and it has a
    Python 2 version (so every example can be shown in all three qualities)."""
    instruction, response = record["messages"][0]["content"], record["messages"][-1]["content"]
    ids, _ = encode_pair(tokenizer, instruction, response)
    if len(ids) + 8 > pair_tokens or function_name(response) is None:
        return False
    try:
        if check_python(response):
            return False
    except (SyntaxError, ValueError):
        return False
    return python2_version(response) is not None


def _prepare_data(config: FewShotStudyConfig, out: Path, tokenizer, report: Progress) -> dict:
    mined = mine_pairs(list(config.sources) or None, MineConfig(seed=config.seed),
                       progress=lambda _what, done, total: report("data: mining the pool", done, total))
    pool, heldout = draw_pairs(mined.pairs, train=config.pool, heldout=config.heldout, seed=config.seed,
                               accept=lambda record: _usable(record, tokenizer, config.pair_tokens))
    atomic_write_jsonl(out / "data" / "pool.jsonl", pool)
    atomic_write_jsonl(out / "data" / "heldout.jsonl", heldout)
    return {"pool": pool, "heldout": heldout,
            "counts": {"mined_total": len(mined.pairs), "sources": list(config.sources), "pool": len(pool),
                       "heldout": len(heldout)}}


def _pair(record: dict) -> tuple[str, str, str]:
    return record["messages"][0]["content"], record["messages"][-1]["content"], str(record.get("id", ""))


def build_cases(pool: list[dict], heldout: list[dict], embedder) -> list[dict]:
    """One case per held-out prompt and condition (the baseline first), each with its example.

    Similarity levels are cosine ranks within the pool: the nearest, the median rank and the last. The
    wrong-function response for an example is the pool response whose instruction is least similar to the
    example's and the prompt's together, so it is unrelated to both."""
    pool_pairs, held_pairs = [_pair(r) for r in pool], [_pair(r) for r in heldout]
    pool_vectors = embedder.encode([p[0] for p in pool_pairs])
    held_vectors = embedder.encode([p[0] for p in held_pairs])
    to_query = held_vectors @ pool_vectors.T  # held-out x pool
    between = pool_vectors @ pool_vectors.T
    cases = []
    for index, (query, reference, held_id) in enumerate(held_pairs):
        prompt_id = f"p{index:03d}"
        base = {"prompt_id": prompt_id, "heldout_id": held_id, "query": query, "reference": reference}
        cases.append({**base, "condition": BASELINE, "level": None, "quality": None, "example": None,
                      "similarity": None})
        order = sorted(range(len(pool_pairs)), key=lambda j: (-float(to_query[index, j]), j))
        for level, position in zip(LEVELS, (0, len(order) // 2, len(order) - 1)):
            chosen = order[position]
            for quality in QUALITIES:
                example = _example(pool_pairs, chosen, quality, between[chosen] + to_query[index])
                cases.append({**base, "condition": condition_name(level, quality), "level": level,
                              "quality": quality, "similarity": round(float(to_query[index, chosen]), 6),
                              "example": Example(example[0], example[1], example[2],
                                                 round(float(to_query[index, chosen]), 6)).to_dict()})
    return cases


def _example(pool_pairs: list, chosen: int, quality: str, unrelatedness) -> tuple[str, str, str]:
    instruction, response, pair_id = pool_pairs[chosen]
    if quality == "python2":
        return instruction, python2_version(response), f"{pair_id}+python2"
    if quality == "wrong_function":
        other = min((j for j in range(len(pool_pairs)) if j != chosen), key=lambda j: (float(unrelatedness[j]), j))
        return instruction, pool_pairs[other][1], f"{pair_id}+response-of-{pool_pairs[other][2]}"
    return instruction, response, pair_id


# ---------------------------------------------------------------------------------------------------
# answers


def case_key(case: dict) -> str:
    return f"{case['prompt_id']}/{case['condition']}"


def case_prompt(tokenizer, case: dict) -> str:
    examples = [Example.from_dict(case["example"])] if case["example"] else []
    return render_few_shot(tokenizer, examples, case["query"])


def _generate(config: FewShotStudyConfig, out: Path, cases: list[dict], model, tokenizer,
              report: Progress) -> dict[str, str]:
    """Greedy answers by case key; answers.jsonl is rewritten (atomically) after every batch, so an
    interrupted run resumes where it stopped."""
    path = out / "answers.jsonl"
    done = {}
    if path.is_file():
        done = {row["key"]: row["answer"] for row in map(json.loads, path.read_text().splitlines()) if row}
    todo = [case for case in cases if case_key(case) not in done]
    encoded = {case_key(c): tokenizer(case_prompt(tokenizer, c), add_special_tokens=False)["input_ids"] for c in todo}
    todo.sort(key=lambda c: len(encoded[case_key(c)]))  # similar lengths in a batch: less padding
    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=0.0, seed=config.seed)
    for start in range(0, len(todo), config.batch_size):
        report("answer with and without examples", len(cases) - len(todo) + start, len(cases))
        batch = todo[start:start + config.batch_size]
        answers = generate_batch(model, tokenizer, [encoded[case_key(c)] for c in batch], sampling,
                                 batch_size=config.batch_size)
        done.update({case_key(c): answer for c, answer in zip(batch, answers)})
        atomic_write_jsonl(path, [{"key": key, "answer": answer} for key, answer in sorted(done.items())])
    return done


def _score(config: FewShotStudyConfig, cases: list[dict], answers: dict[str, str], model, embedder) -> list[dict]:
    """One row per injected example: its measures with it and (on the baseline answer) without it, and
    the context check's verdict on it."""
    role = "tuned" if has_adapter(model) else "base"
    items = [(WorkItem(Case(id=case_key(c), suite="fewshot", type=c["condition"], prompt=c["query"], expect="code"),
                       role, "greedy", 0), answers[case_key(c)]) for c in cases]
    scored = {row.case_id: row for row in score_answers(items, None, 1, False)}  # no tests: nothing runs
    check_config = ContextCheckConfig(threshold=config.check_threshold)
    rows = []
    for case in cases:
        if case["example"] is None:
            continue
        example = Example.from_dict(case["example"])
        alone = scored[f"{case['prompt_id']}/{BASELINE}"]
        answered = scored[case_key(case)]
        verdict = check_context(case["query"], [example], check_config, embedder=embedder).examples[0]
        rows.append({
            "prompt_id": case["prompt_id"], "condition": case["condition"], "level": case["level"],
            "quality": case["quality"], "similarity": case["similarity"], "example_id": example.id,
            "with": copy_measures(answered.answer, example.response, case["reference"], answered.python2, answered.bad),
            "without": copy_measures(alone.answer, example.response, case["reference"], alone.python2, alone.bad),
            "check": {"risk": verdict.risk, "risks": verdict.risks, "lint": list(verdict.lint_findings)},
        })
    return rows


# ---------------------------------------------------------------------------------------------------
# teacher-forced


def make_levers(tokenizer, cases: list[dict]):
    """levers(instruction): each of that prompt's nine examples in the context, and lesson 2's sentence."""
    by_query: dict[str, dict[str, Example]] = {}
    for case in cases:
        if case["example"] is not None:
            by_query.setdefault(case["query"], {})[case["condition"]] = Example.from_dict(case["example"])

    def levers(instruction: str) -> list:
        examples = by_query[instruction]
        found = [Lever(condition_label(level, quality),
                       render_few_shot(tokenizer, [examples[condition_name(level, quality)]], instruction))
                 for level, quality in conditions()]
        return found + [Lever(SENTENCE_LEVER, render_prompt(tokenizer, f"{instruction}\n\n{NUDGE}"))]

    return levers


def answers_to_trace(cases: list[dict], answers: dict[str, str], tokenizer, limit: int) -> dict[str, list]:
    """(instruction, answer) pairs to score: every prompt's reference made Python 2, and up to `limit`
    distinct generated answers that chose a Python 2 print somewhere."""
    reference = [(c["query"], python2_version(c["reference"])) for c in cases if c["condition"] == BASELINE]
    generated, seen = [], set()
    for case in cases:
        answer = answers[case_key(case)]
        if len(generated) >= limit or (case["query"], answer) in seen:
            continue
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if python2_points(tokenizer.convert_ids_to_tokens(ids)):
            generated.append((case["query"], answer))
            seen.add((case["query"], answer))
    return {"reference": [pair for pair in reference if pair[1]], "generated": generated}


def _teacher_forced(config: FewShotStudyConfig, out: Path, cases: list[dict], answers: dict[str, str], model,
                    tokenizer, report: Progress) -> dict[str, list[dict]]:
    """Point scores per answer source, written to points.json (reused by a rerun)."""
    path = out / "points.json"
    if path.is_file():
        return json.loads(path.read_text())
    levers = make_levers(tokenizer, cases)
    traced = answers_to_trace(cases, answers, tokenizer, config.trace_answers)
    total, done, result = sum(len(v) for v in traced.values()), 0, {}
    for source, pairs in traced.items():
        result[source] = []
        for index, pair in enumerate(pairs):
            report("teacher-forced decision points", done, total)
            for point in score_points(model, tokenizer, [pair], levers, lambda text: render_prompt(tokenizer, text)):
                result[source].append({"answer": index, "position": point.position, "token": point.python2_token,
                                       "baseline": point.baseline, "by_lever": point.by_lever})
            done += 1
    atomic_write_json(path, result)
    return result
