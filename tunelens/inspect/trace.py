"""Generation with the model's raw top-K distribution recorded at every step, and its decision points.

`trace_generate` consumes the shared decode loop (tunelens.engine.decode.decode) and keeps per step only the
top-K of softmax(logits) (raw: before temperature and top-p), the chosen token's probability and rank, the
entropy and the top-1 minus top-2 margin: memory grows with steps x K, never steps x vocabulary.

Plain equivalent: at temperature 0 the tokens equal `model.generate(do_sample=False)`'s and each step's
probabilities equal softmax(model(prompt + tokens so far).logits[-1]) (tests check both): exactly with
`exact_probs`; by default a greedy CPU trace reads the certified greedy head's fp16 copy
(tunelens.engine.decode.HeadScan) with every possible top-K row recomputed in fp32, so tokens, top-K and
ranks are the same and probabilities differ by rounding only (a test bounds |dp| by 1e-3;
`bench/trace_overhead.py` prints the largest seen on the real model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import Example, FewShot, check_few_shot, few_shot_index_option, few_shot_option, render_few_shot
from tunelens.engine.decode import SEED_MAX, SEED_MIN, TEMPERATURE_MAX, Sampler, decode
from tunelens.model.load import LoadedModel, as_loaded
from tunelens.model.state import adapter_off, device_of, has_adapter
from tunelens.runtime import Progress, no_progress
from tunelens.engine.tokens import decoded_tokens, prob_color, round_prob, show_token, token_pieces
from tunelens import __version__
from tunelens.engine.generate import prompt_ids_for
from tunelens.io import atomic_write_json, atomic_write_text, read_json
from tunelens.model.prompts import stop_token_ids, strip_stop_text
from tunelens.report import render_html

TRACE_FORMAT = "tunelens.trace"
TRACE_VERSION = 1
CANARY_HELP = ("With an adapter, first check that it changes the model's logits (the adapter canary): an "
               "inactive adapter is an error, not a null result.")


@configclass
class TraceConfig:
    """How to generate and what to record: each field is a flag of `tunelens trace` and a key of its --config."""

    max_new_tokens: int = option(128, "Most tokens to generate.", min=1, max=8192)
    top_k: int = option(10, "Alternatives recorded per step.", min=1, max=100)
    # Sampling draws from softmax(logits / temperature); the recorded top-K is always the raw distribution.
    temperature: float = option(0.0, "0 is greedy.", min=0.0, max=TEMPERATURE_MAX)
    top_p: float = option(1.0, "Nucleus sampling mass (above 0).", min=0.0, max=1.0)
    seed: int | None = option(None, "Random seed for sampling.", min=SEED_MIN, max=SEED_MAX)
    margin_threshold: float = option(0.1, "A step whose top-1 minus top-2 probability is below this is a decision "
                                          "point.", min=0.0, max=1.0, flag="--margin")
    raw: bool = option(False, "Continue the prompt as plain text, without the chat/turn format.")
    check_adapter: bool = option(True, CANARY_HELP)
    few_shot: int = few_shot_option()
    few_shot_index: str | None = few_shot_index_option()
    exact_probs: bool = option(False, "Compute every probability from the fp32 vocabulary head. By default a greedy "
                                      "trace on the CPU reads an fp16 copy of the head and recomputes the top-K "
                                      "rows in fp32: the same tokens and top-K, probabilities within fp16 "
                                      "rounding, and faster.")

    def validate(self) -> None:
        # A nucleus of mass 0 holds no token; the field's bounds are inclusive, so this end is checked here.
        if self.top_p == 0:
            raise UserError("top_p must be in (0, 1], got 0")
        check_few_shot(self.few_shot, self.few_shot_index, self.raw)


@dataclass(frozen=True)
class Alternative:
    token_id: int
    token: str  # the token decoded on its own
    prob: float  # under the raw distribution


@dataclass(frozen=True)
class TraceStep:
    step: int
    token_id: int
    token: str  # the text this token adds to the output
    prob: float  # raw probability of the chosen token
    rank: int  # 1 = the argmax
    entropy: float  # of the raw distribution, in nats
    margin: float  # top-1 probability minus top-2 probability
    top: list[Alternative]
    reasons: list[str] = field(default_factory=list)  # why it is a decision point: low_margin, not_argmax

    @property
    def is_decision(self) -> bool:
        return bool(self.reasons)


@dataclass
class Trace:
    model: str
    adapter: str | None
    prompt: str
    rendered_prompt: str
    prompt_tokens: int
    config: TraceConfig
    steps: list[TraceStep]
    stop_reason: str  # "stop_token" or "max_new_tokens"
    text: str  # the generated text, without the stop token
    adapter_canary: dict | None = None
    few_shot: list[Example] = field(default_factory=list)  # examples shown before the prompt, in order

    @property
    def decision_points(self) -> list[TraceStep]:
        return [step for step in self.steps if step.is_decision]

    def to_json(self) -> dict:
        steps = [{**asdict(step), "decision": step.is_decision} for step in self.steps]
        return {
            "format": TRACE_FORMAT, "version": TRACE_VERSION, "tunelens_version": __version__,
            "model": self.model, "adapter": self.adapter, "prompt": self.prompt,
            "rendered_prompt": self.rendered_prompt, "prompt_tokens": self.prompt_tokens,
            "config": asdict(self.config), "stop_reason": self.stop_reason, "text": self.text,
            "adapter_canary": self.adapter_canary, "few_shot": [e.to_dict() for e in self.few_shot],
            "decision_points": [step.step for step in self.decision_points], "steps": steps,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        return cls.from_json(read_json(path, "trace"), source=str(path))

    @classmethod
    def from_json(cls, data: dict, source: str = "trace") -> "Trace":
        return _trace_from_json(data, source)


# ---------------------------------------------------------------- loading a saved trace

_NONE = type(None)
_TRACE_FIELDS = {"model": str, "adapter": (str, _NONE), "prompt": str, "rendered_prompt": str, "prompt_tokens": int,
                 "stop_reason": str, "text": str, "adapter_canary": (dict, _NONE)}
_STEP_FIELDS = {"step": int, "token_id": int, "token": str, "prob": float, "rank": int, "entropy": float,
                "margin": float}
_ALTERNATIVE_FIELDS = {"token_id": int, "token": str, "prob": float}
_EXAMPLE_FIELDS = {"instruction": str, "response": str, "id": str, "similarity": (float, _NONE)}


def _field(obj, name: str, kind, where: str):
    if not isinstance(obj, dict) or name not in obj:
        raise UserError(f"{where}: missing field '{name}'")
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join("null" if k is _NONE else k.__name__ for k in kinds)
        raise UserError(f"{where}: field '{name}' should be {names}, got {type(value).__name__}")
    return value


def _fields(obj, kinds: dict, where: str) -> dict:
    return {name: _field(obj, name, kind, where) for name, kind in kinds.items()}


def _step_from_json(raw: dict, where: str) -> TraceStep:
    top = [Alternative(**_fields(alt, _ALTERNATIVE_FIELDS, f"{where}.top[{i}]"))
           for i, alt in enumerate(_field(raw, "top", list, where))]
    return TraceStep(**_fields(raw, _STEP_FIELDS, where), top=top, reasons=list(_field(raw, "reasons", list, where)))


def _trace_from_json(data, source: str) -> Trace:
    if not isinstance(data, dict) or data.get("format") != TRACE_FORMAT:
        raise UserError(f"{source}: not a tunelens trace (field 'format' should be {TRACE_FORMAT!r})")
    if data.get("version") != TRACE_VERSION:
        raise UserError(f"{source}: trace version {data.get('version')!r} is not supported (expected {TRACE_VERSION})")
    config_raw = _field(data, "config", dict, source)
    unknown = sorted(set(config_raw) - set(TraceConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"{source}: config: unknown field(s) {', '.join(unknown)}")
    steps = [_step_from_json(raw, f"{source}: steps[{i}]") for i, raw in enumerate(_field(data, "steps", list, source))]
    # traces written before few-shot have no 'few_shot': none were shown
    few_shot = data.get("few_shot", [])
    if not isinstance(few_shot, list):
        raise UserError(f"{source}: field 'few_shot' should be a list")
    examples = [Example(**_fields(item, _EXAMPLE_FIELDS, f"{source}: few_shot[{i}]")) for i, item in enumerate(few_shot)]
    return Trace(**_fields(data, _TRACE_FIELDS, source), config=TraceConfig(**config_raw), steps=steps,
                 few_shot=examples)


# ---------------------------------------------------------------- the adapter canary


def adapter_canary(model, tokenizer, prompt: str, raw: bool = False, positions: int = 16) -> dict:
    """Raise UserError unless the attached adapter changes the logits over the prompt's last `positions`
    positions; else {"max_abs_logit_diff", "positions"}. A silently inactive adapter (untrained, zero B, wrong
    target modules, disabled) gives the base's logits, and every comparison against the base would show nothing."""
    import torch

    if not has_adapter(model):
        raise UserError("adapter canary: the model carries no adapter to check")
    ids = torch.tensor([prompt_token_ids(tokenizer, prompt, raw)], device=device_of(model))
    keep = min(positions, ids.shape[1])
    with torch.inference_mode():
        tuned = model(input_ids=ids, logits_to_keep=keep).logits.float()
        with adapter_off(model):
            base = model(input_ids=ids, logits_to_keep=keep).logits.float()
    diff = float((tuned - base).abs().max())
    if diff <= 1e-6:
        raise UserError(
            f"adapter canary: the adapter does not change the model's logits on this prompt (max difference "
            f"{diff:.1e} over {keep} positions); it is inactive (untrained or zero-initialised LoRA B, or "
            "targets modules the prompt never reaches), so base and tuned would be identical"
        )
    return {"max_abs_logit_diff": round_prob(diff), "positions": keep}


# ---------------------------------------------------------------- generation with top-K capture


def prompt_token_ids(tokenizer, prompt: str, raw: bool, examples: Sequence[Example] = ()) -> list[int]:
    """Rendered through tunelens.model.prompts unless raw (few-shot `examples` first); raw text gets the
    tokenizer's own special tokens (bos)."""
    if not prompt:
        raise UserError("the prompt is empty")
    return prompt_ids_for(tokenizer, prompt, raw, examples)


def rendered_prompt_text(tokenizer, prompt: str, raw: bool, examples: Sequence[Example] = ()) -> str:
    return prompt if raw else render_few_shot(tokenizer, examples, prompt)


def _step_record(logits, chosen, top_k: int, greedy: bool):
    """One step's statistics as small device tensors (no host sync here): four passes over the vocabulary
    (the rank only when sampling: a greedy choice is rank 1), a few percent of a forward pass. The entropy is
    -sum(xlogy(p, p)), the same sum as torch.special.entr, whose CPU kernel took 16 ms per step here."""
    import torch

    probs = torch.softmax(logits, dim=-1)
    top_values, top_ids = probs.topk(max(top_k, 2), dim=-1)
    entropy = -torch.xlogy(probs, probs).sum(dim=-1)
    chosen_prob = probs.gather(-1, chosen[:, None]).squeeze(-1)
    if greedy:
        rank = torch.ones_like(chosen_prob)
    else:
        rank = ((logits > logits.gather(-1, chosen[:, None])).sum(dim=-1) + 1).float()
    return torch.cat([top_values[0], entropy, chosen_prob, rank]), top_ids[0]


def _run_loop(model, prompt_ids: list[int], config: TraceConfig, stop_ids: set[int], progress: Progress | None):
    """The chosen token ids, the stacked per-step records and top-K ids, and the stop reason."""
    import torch

    sampler = Sampler(config.temperature, config.top_p, config.seed)
    chosen_ids, stats, top_ids = [], [], []
    stop_reason = "max_new_tokens"
    # Greedy steps may come from the certified fp16 head (step.logits None); sampling always sees fp32 logits.
    steps = decode(model, prompt_ids, sampler, config.max_new_tokens, stop_ids, need_logits=config.exact_probs)
    with torch.inference_mode():
        for index, step in enumerate(steps):
            logits = step.logits if step.logits is not None else step.head.logits(max(config.top_k, 2))
            record, top = _step_record(logits[None], step.chosen, config.top_k, greedy=sampler.greedy)
            stats.append(record)
            top_ids.append(top)
            chosen_ids.append(step.token)
            if progress is not None:
                progress("generating", index + 1, config.max_new_tokens)
            if step.token in stop_ids:
                stop_reason = "stop_token"
    return chosen_ids, torch.stack(stats).cpu(), torch.stack(top_ids).cpu(), stop_reason


def _decision_reasons(prob_top1: float, prob_top2: float, rank: int, threshold: float) -> list[str]:
    return ["low_margin"] * (prob_top1 - prob_top2 < threshold) + ["not_argmax"] * (rank != 1)


def _build_steps(tokenizer, chosen_ids, stats, top_ids, config: TraceConfig) -> list[TraceStep]:
    k = max(config.top_k, 2)
    pieces = token_pieces(tokenizer, chosen_ids)
    names = decoded_tokens(tokenizer, top_ids.flatten().tolist())
    steps = []
    for index, token_id in enumerate(chosen_ids):
        row = stats[index].tolist()
        top_probs, entropy, chosen_prob, rank = row[:k], row[k], row[k + 1], int(row[k + 2])
        alternatives = [Alternative(int(tid), names[int(tid)], round_prob(p))
                        for tid, p in zip(top_ids[index].tolist()[:config.top_k], top_probs[:config.top_k])]
        steps.append(TraceStep(step=index, token_id=token_id, token=pieces[index], prob=round_prob(chosen_prob),
                               rank=rank, entropy=round_prob(max(entropy, 0.0)),
                               margin=round_prob(top_probs[0] - top_probs[1]), top=alternatives,
                               reasons=_decision_reasons(top_probs[0], top_probs[1], rank, config.margin_threshold)))
    return steps


def trace_generate(model: LoadedModel | object, tokenizer=None, prompt: str = "", config: TraceConfig | None = None,
                   progress: Progress | None = None, examples: Sequence[Example] = ()) -> Trace:
    """Generate from `prompt`, recording the raw top-K distribution at every step (see the module docstring).
    `model` is a LoadedModel, or a bare model with its `tokenizer`; `examples` (tunelens.retrieval.fewshot)
    are shown before the prompt as earlier exchanges, and the trace records them."""
    loaded = as_loaded(model, tokenizer)
    model, tokenizer = loaded.model, loaded.tokenizer
    config = config or TraceConfig()
    canary = adapter_canary(model, tokenizer, prompt, config.raw) if config.check_adapter and loaded.has_adapter else None
    prompt_ids = prompt_token_ids(tokenizer, prompt, config.raw, examples)
    stop_ids = set(stop_token_ids(tokenizer))
    chosen_ids, stats, top_ids, stop_reason = _run_loop(model, prompt_ids, config, stop_ids, progress)
    steps = _build_steps(tokenizer, chosen_ids, stats, top_ids, config)
    body = chosen_ids[:-1] if stop_reason == "stop_token" else chosen_ids
    text = strip_stop_text(tokenizer, tokenizer.decode(body, skip_special_tokens=False))
    return Trace(model=loaded.spec, adapter=loaded.adapter_label, prompt=prompt,
                 rendered_prompt=rendered_prompt_text(tokenizer, prompt, config.raw, examples),
                 prompt_tokens=len(prompt_ids), config=config, steps=steps, stop_reason=stop_reason, text=text,
                 adapter_canary=canary, few_shot=list(examples))


def load_inspected_model(spec: str, adapter: str | None, device: str,
                         progress: Progress | None = None) -> LoadedModel:
    """The model `trace` and `compare` inspect, knowing its adapter directory for their reports."""
    report = progress or no_progress
    report(f"loading {spec}", 0, 1)
    loaded = LoadedModel.load(spec, adapter=adapter, device=device)
    report(f"loading {spec}", 1, 1)
    return loaded


def run_inspection(run, inspect: Callable[[LoadedModel, list[Example]], Any], write_html, progress: Progress | None):
    """`tunelens trace` or `compare` whole: the few-shot examples, the model, `inspect`, the JSON and the HTML."""
    examples = FewShot.load(run.config.few_shot, run.config.few_shot_index).for_one(run.prompt)
    result = inspect(load_inspected_model(run.model, run.adapter, run.device, progress), examples)
    result.save(run.out)
    if run.html is not None:
        write_html(result, run.html)
    return result


# ---------------------------------------------------------------- one command, one call


@dataclass(frozen=True)
class TraceRun:
    """What `tunelens trace` does: load, trace, write the JSON (and HTML)."""

    model: str
    prompt: str
    out: Path
    adapter: str | None = None
    html: Path | None = None
    device: str = "auto"
    config: TraceConfig = field(default_factory=TraceConfig)


def run_trace(run: TraceRun, progress: Progress | None = None) -> Trace:
    return run_inspection(run, lambda loaded, examples: trace_generate(
        loaded, prompt=run.prompt, config=run.config, progress=progress, examples=examples), write_trace_html, progress)


def write_trace_html(trace: Trace, path: str | Path) -> Path:
    data = trace.to_json()
    return atomic_write_text(path, render_html("trace.html.j2", trace=data, steps=data["steps"], color=prob_color,
                                             show=show_token))
