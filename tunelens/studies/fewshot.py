"""`tunelens study few-shot`: does a model copy an injected example when it does not match the request,
and what does that do to its answers?

The run, on one loaded model (optionally with an adapter):
1. data: an example pool and held-out prompts, one per module, from modules that give no example;
2. cases: per held-out prompt, one example at each **similarity** (nearest, middling, least similar by the
   embedder's cosine rank) and of each **quality** (clean; Python 2, its prints rewritten; wrong function,
   an unrelated pool pair's response under the example's instruction), plus the bare prompt (the baseline);
3. free text: greedy answers, scored by the eval's scoring and the copy measures of `fewshot_measures`;
4. teacher-forced: lesson 2's decision-point measure (`tunelens.inspect.levers`) under each example and
   lesson 2's sentence, on every prompt's reference made Python 2 and up to `trace_answers` generated
   answers with a Python 2 print, so words and examples sit on one scale;
5. the context check (`tunelens.inspect.context_check`) on every injected example.
A rerun with the same settings reuses the answers and points.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from tunelens.config import config_to_dict, configclass, option
from tunelens.retrieval.fewshot import Example, render_few_shot
from tunelens.retrieval.embedders import load_embedder, MINILM
from tunelens.io import atomic_write_json, atomic_write_jsonl, read_jsonl
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.studies.fewshot_measures import (BASELINE, condition_name, conditions, copy_measures, function_name,
                                               LEVELS, QUALITIES, QUALITY_LABELS, SENTENCE_LEVER)
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
from tunelens.model.prompts import render_prompt
from tunelens.model.state import has_adapter
from tunelens.pycheck.check import check_python
from tunelens.studies.fewshot_report import build_summary, write_figures
from tunelens.studies.replicates import run_seeds, same_settings
from tunelens.studies.training import fits_tokens


@configclass
class FewShotStudyConfig:
    """The size of the copying study: at the defaults on gemma3-270m and a 2-core CPU, about 8 minutes of
    greedy answers and 2-3 minutes teacher-forced."""

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
    seeds: int = option(1, "Replicates K (seed ... seed+K-1, each redrawing the pool and held-out prompts), one "
                           "run each under <out>/seed-<s>/; summary.json then holds across-seed means.", min=1)


def run_fewshot_study(config: FewShotStudyConfig, out: str | Path, model=None, tokenizer=None,
                      progress: Progress | None = None) -> RunResult:
    """Run (or resume) the study in `out`; `model` and `tokenizer` replace loading config.model. With
    config.seeds > 1, one run per seed under out/seed-<s>/ and an across-seed summary (studies.replicates)."""
    started = time.perf_counter()
    out = Path(out)
    if config.seeds > 1:
        if model is None:  # answering leaves the model as it was: one load serves every seed
            model, tokenizer = load_model(config.model, config.adapter, "cpu")
        return run_seeds(partial(run_fewshot_study, progress=progress), config, out, "a few-shot study",
                         lambda _seed: (model, tokenizer))
    claim_run_dir(out, "study-config.json", config_to_dict(config), "a few-shot study", same_settings)
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

    label = getattr(getattr(model, "config", None), "tunelens_spec", None) or config.model
    summary = build_summary(config, data["counts"], rows, points, model_label=label)
    finish_run(out, summary, timed, started)
    write_figures(out, summary)
    return RunResult(out, summary, time.perf_counter() - started)


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
    response = record["messages"][-1]["content"]
    if not fits_tokens(tokenizer, pair_tokens, room=8)(record) or function_name(response) is None:
        return False
    try:
        return not check_python(response) and python2_version(response) is not None
    except (SyntaxError, ValueError):
        return False


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
    """One case per held-out prompt and condition (the baseline first), each with its example. Similarity
    levels are cosine ranks within the pool (the nearest, the median, the last); the wrong function is the
    pool response whose instruction is least similar to the example's and the prompt's together."""
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
            similarity = round(float(to_query[index, chosen]), 6)
            for quality in QUALITIES:
                example = _example(pool_pairs, chosen, quality, between[chosen] + to_query[index])
                cases.append({**base, "condition": condition_name(level, quality), "level": level,
                              "quality": quality, "similarity": similarity,
                              "example": Example(*example, similarity).to_dict()})
    return cases


def _example(pool_pairs: list, chosen: int, quality: str, unrelatedness) -> tuple[str, str, str]:
    instruction, response, pair_id = pool_pairs[chosen]
    if quality == "python2":
        return instruction, python2_version(response), f"{pair_id}+python2"
    if quality == "wrong_function":
        other = min((j for j in range(len(pool_pairs)) if j != chosen), key=lambda j: (float(unrelatedness[j]), j))
        return instruction, pool_pairs[other][1], f"{pair_id}+response-of-{pool_pairs[other][2]}"
    return instruction, response, pair_id


def case_key(case: dict) -> str:
    return f"{case['prompt_id']}/{case['condition']}"


def case_prompt(tokenizer, case: dict) -> str:
    examples = [Example.from_dict(case["example"])] if case["example"] else []
    return render_few_shot(tokenizer, examples, case["query"])


def _generate(config: FewShotStudyConfig, out: Path, cases: list[dict], model, tokenizer,
              report: Progress) -> dict[str, str]:
    """Greedy answers by case key; answers.jsonl is rewritten after every batch, so a rerun resumes."""
    path = out / "answers.jsonl"
    done = {row["key"]: row["answer"] for row in read_jsonl(path)} if path.is_file() else {}
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
    """Per injected example: its measures with it and on the baseline answer, and the context check's verdict."""
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
        alone, answered = scored[f"{case['prompt_id']}/{BASELINE}"], scored[case_key(case)]
        verdict = check_context(case["query"], [example], check_config, embedder=embedder).examples[0]
        rows.append({
            "prompt_id": case["prompt_id"], "condition": case["condition"], "level": case["level"],
            "quality": case["quality"], "similarity": case["similarity"], "example_id": example.id,
            "with": copy_measures(answered.answer, example.response, case["reference"], answered.python2, answered.bad),
            "without": copy_measures(alone.answer, example.response, case["reference"], alone.python2, alone.bad),
            "check": {"risk": verdict.risk, "risks": verdict.risks, "lint": list(verdict.lint_findings)},
        })
    return rows


def make_levers(tokenizer, cases: list[dict]):
    """levers(instruction): each of that prompt's nine examples in the context, and lesson 2's sentence."""
    by_query: dict[str, dict[str, Example]] = {}
    for case in cases:
        if case["example"] is not None:
            by_query.setdefault(case["query"], {})[case["condition"]] = Example.from_dict(case["example"])

    def levers(instruction: str) -> list:
        examples = by_query[instruction]
        found = [Lever(f"{level} {QUALITY_LABELS[quality]} example",
                       render_few_shot(tokenizer, [examples[condition_name(level, quality)]], instruction))
                 for level, quality in conditions()]
        return found + [Lever(SENTENCE_LEVER, render_prompt(tokenizer, f"{instruction}\n\n{NUDGE}"))]

    return levers


def answers_to_trace(cases: list[dict], answers: dict[str, str], tokenizer, limit: int) -> dict[str, list]:
    """Every prompt's reference made Python 2, and up to `limit` distinct generated answers with a Python 2 print."""
    reference = [(c["query"], python2_version(c["reference"])) for c in cases if c["condition"] == BASELINE]
    generated = []
    for case in cases:
        pair = (case["query"], answers[case_key(case)])
        if len(generated) < limit and pair not in generated and python2_points(
                tokenizer.convert_ids_to_tokens(tokenizer(pair[1], add_special_tokens=False)["input_ids"])):
            generated.append(pair)
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
            done += 1
            result[source] += [{"answer": index, "position": p.position, "token": p.python2_token,
                                "baseline": p.baseline, "by_lever": p.by_lever}
                               for p in score_points(model, tokenizer, [pair], levers,
                                                     lambda text: render_prompt(tokenizer, text))]
    atomic_write_json(path, result)
    return result
