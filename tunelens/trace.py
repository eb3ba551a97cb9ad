"""Generation with the model's raw top-K distribution recorded at every step, and its decision points.

`trace_generate` runs its own decoding loop with a KV cache. At each step it keeps only the top-K of
softmax(logits) (the model's raw distribution, before temperature and top-p), the chosen token's
probability and rank, the entropy and the top-1 minus top-2 margin, so what it holds grows with
steps x K, never steps x vocabulary (unlike `generate(output_scores=True)`).

Plain equivalent: with temperature 0, the tokens equal `model.generate(do_sample=False)`'s, and each
step's probabilities equal softmax(model(prompt + tokens so far).logits[-1]) (tests check both).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tunelens.errors import UserError

TRACE_FORMAT = "tunelens.trace"
TRACE_VERSION = 1
# Stored probabilities keep 6 significant digits: enough for any display, and files stay small.
_DIGITS = 6


def _round(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


@dataclass(frozen=True)
class TraceConfig:
    """How to generate and what to record."""

    max_new_tokens: int = 128  # most tokens to generate
    top_k: int = 10  # alternatives recorded per step
    temperature: float = 0.0  # 0 is greedy; otherwise sample from softmax(logits / temperature)
    top_p: float = 1.0  # nucleus mass when sampling
    seed: int | None = None  # sampling seed
    margin_threshold: float = 0.1  # a step whose top-1 minus top-2 probability is below this is a decision point
    raw: bool = False  # continue the prompt as plain text instead of rendering it in the chat/turn format
    check_adapter: bool = True  # run the adapter canary first when the model carries an adapter

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 1 <= self.top_k <= 100:
            raise UserError(f"top_k must be between 1 and 100, got {self.top_k}")
        if self.temperature < 0:
            raise UserError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.margin_threshold <= 1:
            raise UserError(f"margin_threshold must be in [0, 1], got {self.margin_threshold}")


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

    @property
    def decision_points(self) -> list[TraceStep]:
        return [step for step in self.steps if step.is_decision]

    def to_json(self) -> dict:
        from tunelens import __version__

        return {
            "format": TRACE_FORMAT, "version": TRACE_VERSION, "tunelens_version": __version__,
            "model": self.model, "adapter": self.adapter, "prompt": self.prompt,
            "rendered_prompt": self.rendered_prompt, "prompt_tokens": self.prompt_tokens,
            "config": asdict(self.config), "stop_reason": self.stop_reason, "text": self.text,
            "adapter_canary": self.adapter_canary,
            "decision_points": [step.step for step in self.decision_points],
            "steps": [_step_json(step) for step in self.steps],
        }

    def save(self, path: str | Path) -> Path:
        from tunelens.io import atomic_write_json

        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: no such trace file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: dict, source: str = "trace") -> "Trace":
        return _trace_from_json(data, source)


def _step_json(step: TraceStep) -> dict:
    return {"step": step.step, "token_id": step.token_id, "token": step.token, "prob": step.prob,
            "rank": step.rank, "entropy": step.entropy, "margin": step.margin,
            "decision": step.is_decision, "reasons": list(step.reasons),
            "top": [{"token_id": alt.token_id, "token": alt.token, "prob": alt.prob} for alt in step.top]}


# ---------------------------------------------------------------- loading a saved trace


def _field(obj, name: str, kind, where: str):
    if not isinstance(obj, dict) or name not in obj:
        raise UserError(f"{where}: missing field '{name}'")
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise UserError(f"{where}: field '{name}' should be {names}, got {type(value).__name__}")
    return value


def _step_from_json(raw: dict, where: str) -> TraceStep:
    top_list = _field(raw, "top", list, where)
    top = [Alternative(_field(alt, "token_id", int, f"{where}.top[{i}]"), _field(alt, "token", str, f"{where}.top[{i}]"),
                       _field(alt, "prob", float, f"{where}.top[{i}]")) for i, alt in enumerate(top_list)]
    return TraceStep(step=_field(raw, "step", int, where), token_id=_field(raw, "token_id", int, where),
                     token=_field(raw, "token", str, where), prob=_field(raw, "prob", float, where),
                     rank=_field(raw, "rank", int, where), entropy=_field(raw, "entropy", float, where),
                     margin=_field(raw, "margin", float, where), top=top,
                     reasons=list(_field(raw, "reasons", list, where)))


def _trace_from_json(data, source: str) -> Trace:
    if not isinstance(data, dict) or data.get("format") != TRACE_FORMAT:
        raise UserError(f"{source}: not a tunelens trace (field 'format' should be {TRACE_FORMAT!r})")
    if data.get("version") != TRACE_VERSION:
        raise UserError(f"{source}: trace version {data.get('version')!r} is not supported (expected {TRACE_VERSION})")
    config_raw = _field(data, "config", dict, source)
    known = TraceConfig.__dataclass_fields__
    unknown = sorted(set(config_raw) - set(known))
    if unknown:
        raise UserError(f"{source}: config: unknown field(s) {', '.join(unknown)}")
    steps = [_step_from_json(raw, f"{source}: steps[{i}]") for i, raw in enumerate(_field(data, "steps", list, source))]
    return Trace(model=_field(data, "model", str, source), adapter=_field(data, "adapter", (str, type(None)), source),
                 prompt=_field(data, "prompt", str, source),
                 rendered_prompt=_field(data, "rendered_prompt", str, source),
                 prompt_tokens=_field(data, "prompt_tokens", int, source), config=TraceConfig(**config_raw),
                 steps=steps, stop_reason=_field(data, "stop_reason", str, source),
                 text=_field(data, "text", str, source),
                 adapter_canary=_field(data, "adapter_canary", (dict, type(None)), source))


# ---------------------------------------------------------------- the adapter canary


def has_adapter(model) -> bool:
    return hasattr(model, "disable_adapter")


def adapter_canary(model, tokenizer, prompt: str, raw: bool = False, positions: int = 16) -> dict:
    """Check that the attached adapter changes the logits on this prompt; raise UserError if it does not.

    A silently inactive adapter (never trained, zero-initialised B, wrong target modules, disabled) gives
    exactly the base model's logits, and every comparison against the base would then show nothing.
    Returns {"max_abs_logit_diff", "positions"} measured over the prompt's last `positions` positions.
    """
    import torch

    from tunelens.models import adapter_disabled

    if not has_adapter(model):
        raise UserError("adapter canary: the model carries no adapter to check")
    ids = torch.tensor([prompt_token_ids(tokenizer, prompt, raw)], device=_device_of(model))
    keep = min(positions, ids.shape[1])
    with torch.inference_mode():
        tuned = model(input_ids=ids, logits_to_keep=keep).logits.float()
        with adapter_disabled(model):
            base = model(input_ids=ids, logits_to_keep=keep).logits.float()
    diff = float((tuned - base).abs().max())
    if diff <= 1e-6:
        raise UserError(
            f"adapter canary: the adapter does not change the model's logits on this prompt (max difference "
            f"{diff:.1e} over {keep} positions); it is inactive (untrained or zero-initialised LoRA B, or "
            "targets modules the prompt never reaches), so base and tuned would be identical"
        )
    return {"max_abs_logit_diff": _round(diff), "positions": keep}


# ---------------------------------------------------------------- generation with top-K capture


def prompt_token_ids(tokenizer, prompt: str, raw: bool) -> list[int]:
    """Rendered through tunelens.prompts unless raw; raw text gets the tokenizer's own special tokens (bos)."""
    from tunelens.generation import prompt_ids_for

    if not prompt:
        raise UserError("the prompt is empty")
    return prompt_ids_for(tokenizer, prompt, raw)


def rendered_prompt_text(tokenizer, prompt: str, raw: bool) -> str:
    from tunelens.prompts import render_prompt

    return prompt if raw else render_prompt(tokenizer, prompt)


def _device_of(model):
    return next(model.parameters()).device


def _pick_token(logits, config: TraceConfig, generator):
    """Greedy, or a sample from the temperature/top-p distribution (recording always uses the raw one)."""
    import torch

    if config.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= config.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _step_record(logits, chosen, top_k: int, greedy: bool):
    """Per-step statistics of the raw distribution, as small device tensors (no host sync here).

    Four passes over the vocabulary (softmax, entropy, top-K, and the rank only when sampling: a greedy
    choice is the argmax, rank 1), so recording costs a few percent of a forward pass.
    """
    import torch

    probs = torch.softmax(logits, dim=-1)
    top_values, top_ids = probs.topk(max(top_k, 2), dim=-1)
    entropy = torch.special.entr(probs).sum(dim=-1)
    chosen_prob = probs.gather(-1, chosen[:, None]).squeeze(-1)
    if greedy:
        rank = torch.ones_like(chosen_prob)
    else:
        rank = ((logits > logits.gather(-1, chosen[:, None])).sum(dim=-1) + 1).float()
    return torch.cat([top_values[0], entropy, chosen_prob, rank]), top_ids[0]


def _cache_argument(model) -> str:
    """transformers 5.2x names the KV cache `cache`; earlier 5.x releases call it `past_key_values`."""
    import inspect

    from tunelens.models import base_model_of

    return "cache" if "cache" in inspect.signature(base_model_of(model).forward).parameters else "past_key_values"


def _run_loop(model, ids, config: TraceConfig, stop_ids: set[int], on_step: Callable[[int], None] | None):
    """Decode with a KV cache; return the chosen token ids and the stacked per-step records."""
    import torch

    device = ids.device
    generator = None
    if config.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(config.seed if config.seed is not None else torch.seed())
    chosen_ids, stats, top_ids = [], [], []
    cache_name, past, step_input = _cache_argument(model), None, ids
    with torch.inference_mode():
        for step in range(config.max_new_tokens):
            out = model(input_ids=step_input, use_cache=True, logits_to_keep=1, **{cache_name: past})
            past = getattr(out, cache_name)
            logits = out.logits[:, -1, :].float()
            chosen = _pick_token(logits, config, generator)
            record, top = _step_record(logits, chosen, config.top_k, greedy=config.temperature <= 0)
            stats.append(record)
            top_ids.append(top)
            token_id = int(chosen)  # the one host sync per step, as in generate's stopping check
            chosen_ids.append(token_id)
            if on_step is not None:
                on_step(step)
            if token_id in stop_ids:
                return chosen_ids, torch.stack(stats).cpu(), torch.stack(top_ids).cpu(), "stop_token"
            step_input = chosen[:, None]
    return chosen_ids, torch.stack(stats).cpu(), torch.stack(top_ids).cpu(), "max_new_tokens"


def token_pieces(tokenizer, ids: list[int], context: int = 4) -> list[str]:
    """The text each token adds, so that the pieces join to the decoded sequence.

    Decoding a token alone can differ from its contribution in context (a leading-space marker, a
    multi-byte character split over tokens), so a piece is the difference of two decodings that start
    `context` tokens earlier. A token that ends inside a character adds "" and the token completing the
    character carries it. Plain equivalent: decode(ids[:i+1])[len(decode(ids[:i])):], which is quadratic.
    """
    pieces, emitted = [], 0  # tokens before `emitted` have had their text handed out
    for end in range(1, len(ids) + 1):
        start = max(0, emitted - context)
        before = tokenizer.decode(ids[start:emitted], skip_special_tokens=False)
        now = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        if now.endswith("\ufffd") and end < len(ids):
            pieces.append("")
            continue
        # A decoder that rewrites earlier text (space clean-up) still advances by what is new.
        pieces.append(now[len(os.path.commonprefix([before, now])):])
        emitted = end
    return pieces


def _decoded_tokens(tokenizer, ids) -> dict[int, str]:
    unique = sorted(set(int(i) for i in ids))
    return dict(zip(unique, tokenizer.batch_decode([[i] for i in unique], skip_special_tokens=False)))


def _decision_reasons(prob_top1: float, prob_top2: float, rank: int, threshold: float) -> list[str]:
    reasons = []
    if prob_top1 - prob_top2 < threshold:
        reasons.append("low_margin")
    if rank != 1:
        reasons.append("not_argmax")
    return reasons


def _build_steps(tokenizer, chosen_ids, stats, top_ids, config: TraceConfig) -> list[TraceStep]:
    k = max(config.top_k, 2)
    pieces = token_pieces(tokenizer, chosen_ids)
    names = _decoded_tokens(tokenizer, top_ids.flatten().tolist())
    steps = []
    for index, token_id in enumerate(chosen_ids):
        row = stats[index].tolist()
        top_probs, entropy, chosen_prob, rank = row[:k], row[k], row[k + 1], int(row[k + 2])
        alternatives = [Alternative(int(tid), names[int(tid)], _round(p))
                        for tid, p in zip(top_ids[index].tolist()[:config.top_k], top_probs[:config.top_k])]
        steps.append(TraceStep(step=index, token_id=token_id, token=pieces[index], prob=_round(chosen_prob),
                               rank=rank, entropy=_round(max(entropy, 0.0)),
                               margin=_round(top_probs[0] - top_probs[1]), top=alternatives,
                               reasons=_decision_reasons(top_probs[0], top_probs[1], rank, config.margin_threshold)))
    return steps


def trace_generate(model, tokenizer, prompt: str, config: TraceConfig | None = None,
                   on_step: Callable[[int], None] | None = None) -> Trace:
    """Generate from `prompt`, recording the raw top-K distribution at every step (see module docstring)."""
    import torch

    from tunelens.prompts import stop_token_ids, strip_stop_text

    config = config or TraceConfig()
    canary = adapter_canary(model, tokenizer, prompt, config.raw) if config.check_adapter and has_adapter(model) else None
    prompt_ids = prompt_token_ids(tokenizer, prompt, config.raw)
    ids = torch.tensor([prompt_ids], device=_device_of(model))
    stop_ids = set(stop_token_ids(tokenizer))
    chosen_ids, stats, top_ids, stop_reason = _run_loop(model, ids, config, stop_ids, on_step)
    steps = _build_steps(tokenizer, chosen_ids, stats, top_ids, config)
    body = chosen_ids[:-1] if stop_reason == "stop_token" else chosen_ids
    text = strip_stop_text(tokenizer, tokenizer.decode(body, skip_special_tokens=False))
    return Trace(model=str(getattr(getattr(model, "config", None), "tunelens_spec", "") or type(model).__name__),
                 adapter=adapter_name(model), prompt=prompt,
                 rendered_prompt=rendered_prompt_text(tokenizer, prompt, config.raw), prompt_tokens=len(prompt_ids),
                 config=config, steps=steps, stop_reason=stop_reason, text=text, adapter_canary=canary)


def adapter_name(model) -> str | None:
    # load_inspected_model records the directory the user gave; a model built in code just says "adapter".
    return (getattr(model, "tunelens_adapter_dir", None) or "adapter") if has_adapter(model) else None


def load_inspected_model(spec: str, adapter: str | None, device: str, on_loaded: Callable[[], None] | None = None):
    """(model, tokenizer) for `trace` and `compare`, remembering the adapter directory for their reports."""
    from tunelens.models import load_model

    model, tokenizer = load_model(spec, adapter=adapter, device=device)
    if adapter is not None:
        model.tunelens_adapter_dir = str(adapter)
    if on_loaded is not None:
        on_loaded()
    return model, tokenizer


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


def run_trace(run: TraceRun, on_step: Callable[[int], None] | None = None,
              on_loaded: Callable[[], None] | None = None) -> Trace:
    model, tokenizer = load_inspected_model(run.model, run.adapter, run.device, on_loaded)
    trace = trace_generate(model, tokenizer, run.prompt, run.config, on_step=on_step)
    trace.model = run.model
    trace.save(run.out)
    if run.html is not None:
        write_trace_html(trace, run.html)
    return trace


def write_trace_html(trace: Trace, path: str | Path) -> Path:
    from tunelens.io import atomic_write_text
    from tunelens.report import render_html

    data = trace.to_json()
    return atomic_write_text(path, render_html("trace.html.j2", trace=data, steps=data["steps"], color=prob_color,
                                             show=show_token))


def prob_color(prob: float) -> str:
    """Background colour of a token by its probability: red (unlikely) through yellow to green (sure)."""
    hue = 120 * max(0.0, min(1.0, prob))
    return f"hsl({hue:.0f}, 75%, 82%)"


def show_token(text: str) -> str:
    """A token as it reads in a table: newlines, tabs and other invisible characters escaped."""
    if text == "":
        return "∅"
    escapes = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(escapes.get(ch, ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in text)


def pct(prob: float) -> str:
    """55%, 3.2%, 0.041%, <0.001%: whole percents when large, two significant digits when small."""
    value = 100 * prob
    if value >= 10 or value == 0:
        return f"{value:.0f}%"
    if value >= 1:
        return f"{value:.1f}%"
    return f"{value:.2g}%" if value >= 0.001 else "<0.001%"
