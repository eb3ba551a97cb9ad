"""The one prompt format every stage uses: training, generation, tracing, evaluation and serving.

The rendered prompt is always a string prefix of the rendered pair, and the two are tokenized separately,
so the prompt tokens a model is trained on are exactly those it is later prompted with. Chat templates do
not promise this (Gemma 4's renders an assistant turn differently once content follows it), so a pair is
prompt + response + the template's end-of-turn text; a conversation is built the same way, one assistant
turn at a time (`conversation_segments`).
"""

from __future__ import annotations

from dataclasses import dataclass

GEMMA_START, GEMMA_END = "<start_of_turn>", "<end_of_turn>"
# Placeholder used to find where the template puts the assistant's text; never in real data.
_SENTINEL = "\u2063TUNELENS_RESPONSE\u2063"


@dataclass(frozen=True)
class PromptStyle:
    """How a tokenizer's prompts look: `chat_template`, `gemma_turns` or `plain`."""

    kind: str
    end_of_turn: str  # text that closes the assistant's turn in a rendered pair
    stop_strings: tuple[str, ...]  # text at which generation stops


def _has_token(tokenizer, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def prompt_style(tokenizer) -> PromptStyle:
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        end = full.split(_SENTINEL, 1)[1] if _SENTINEL in full else eos
        return PromptStyle("chat_template", end, tuple(s for s in {end.strip(), eos} if s))
    if _has_token(tokenizer, GEMMA_START) and _has_token(tokenizer, GEMMA_END):
        return PromptStyle("gemma_turns", GEMMA_END + "\n", (GEMMA_END, eos or GEMMA_END))
    return PromptStyle("plain", eos, (eos,) if eos else ())


def render_prompt(tokenizer, instruction: str, system: str | None = None) -> str:
    """The text a model is prompted with for one instruction, ending where its answer begins."""
    return render_context(tokenizer, [("user", instruction)], system)


def render_context(tokenizer, turns, system: str | None = None) -> str:
    """The prompt for a conversation so far (`turns`: (role, content) pairs), ending where the next
    assistant turn begins. Without a chat template the system text opens the first user turn."""
    style = prompt_style(tokenizer)
    if style.kind == "chat_template":
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": role, "content": content} for role, content in turns
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [tokenizer.bos_token or ""]
    for role, content in turns:
        if role == "user":
            parts.append(_user_block(style, f"{system}\n\n{content}" if system else content))
            system = None  # only the first user turn carries it
        else:
            parts.append(_assistant_opener(style) + content + style.end_of_turn)
    return "".join(parts) + _assistant_opener(style)


def _user_block(style: PromptStyle, text: str) -> str:
    if style.kind == "gemma_turns":
        return f"{GEMMA_START}user\n{text}{GEMMA_END}\n"
    return f"### Instruction:\n{text}\n\n"


def _assistant_opener(style: PromptStyle) -> str:
    return f"{GEMMA_START}model\n" if style.kind == "gemma_turns" else "### Response:\n"


class TemplateMismatch(ValueError):
    """The chat template renders an earlier turn differently once the conversation goes on."""


def conversation_segments(tokenizer, turns, system: str | None = None) -> list[tuple[str, bool]]:
    """The training text of a conversation (turns with role, content, trained) as (text, trained) pieces:
    before each assistant turn the prompt a model would get (masked), then its content and end-of-turn."""
    end = prompt_style(tokenizer).end_of_turn
    segments: list[tuple[str, bool]] = []
    so_far, history = "", []
    for turn in turns:
        if turn.role == "assistant":
            context = render_context(tokenizer, history, system)
            if not context.startswith(so_far):
                raise TemplateMismatch("the chat template renders earlier turns differently later in the "
                                       "conversation; multi-turn records cannot be trained exactly with it")
            segments.append((context[len(so_far):], False))
            segments.append((turn.content + end, getattr(turn, "trained", True)))
            so_far = context + turn.content + end
        history.append((turn.role, turn.content))
    return [(text, trained) for text, trained in segments if text]


def text_segments(tokenizer, text: str) -> list[tuple[str, bool]]:
    """Plain completion data: bos (nothing predicts it) then the text and eos, all trained."""
    return [(piece, trained) for piece, trained in ((tokenizer.bos_token or "", False),
                                                    (text + (tokenizer.eos_token or ""), True)) if piece]


def encode_segments(tokenizer, segments) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the joined segments, each tokenized on its own, and the [start, end) spans of the trained."""
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for text, trained in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        if trained and piece:
            spans.append((len(ids), len(ids) + len(piece)))
        ids.extend(piece)
    return ids, spans


def render_pair(tokenizer, instruction: str, response: str, system: str | None = None) -> str:
    """The training text for one pair: the rendered prompt, the response, the end-of-turn text."""
    return render_prompt(tokenizer, instruction, system) + response + prompt_style(tokenizer).end_of_turn


def encode_prompt(tokenizer, instruction: str, system: str | None = None) -> list[int]:
    # Special tokens are part of the rendered text already (bos, turn markers), so none are added.
    return tokenizer(render_prompt(tokenizer, instruction, system), add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, instruction: str, response: str, system: str | None = None) -> tuple[list[int], int]:
    """Token ids of the rendered pair and how many at its start are `encode_prompt(...)`'s (tokenized apart)."""
    prompt_ids = encode_prompt(tokenizer, instruction, system)
    completion = response + prompt_style(tokenizer).end_of_turn
    return prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"], len(prompt_ids)


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: eos and the style's end-of-turn token when it is one token."""
    texts = prompt_style(tokenizer).stop_strings + ((tokenizer.eos_token,) if tokenizer.eos_token else ())
    ids = {tokenizer.eos_token_id} - {None}
    for token_ids in (tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts):
        ids.update(token_ids if len(token_ids) == 1 else ())
    return sorted(ids)


def strip_stop_text(tokenizer, text: str) -> str:
    """Cut a decoded answer at the first stop string (the end-of-turn marker the model emitted)."""
    for stop in prompt_style(tokenizer).stop_strings:
        text = text.split(stop, 1)[0] if stop else text
    return text
