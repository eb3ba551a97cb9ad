"""The one prompt format every stage uses: training, generation, tracing, evaluation and serving.

The rendered prompt (instruction only) is always a string prefix of the rendered pair (instruction
plus response), and `encode_pair` tokenizes the two parts separately, so the prompt tokens a model
is trained on are exactly the tokens it is later prompted with. Chat templates do not promise this
on their own: some (Gemma 4's among them) render an assistant turn differently once it is followed
by content, so the pair is built as prompt + response + the template's own end-of-turn text.

A multi-turn conversation is rendered the same way, one assistant turn at a time: the text before
assistant turn k is exactly the prompt a model would get for the conversation up to turn k, and each
assistant turn is its content plus the end-of-turn text. `conversation_segments` returns those pieces
(masked context, trained answer, ...); a one-exchange conversation gives [render_prompt, response + end].
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
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        end = full.split(_SENTINEL, 1)[1] if _SENTINEL in full else (tokenizer.eos_token or "")
        stops = tuple(s for s in {end.strip(), tokenizer.eos_token or ""} if s)
        return PromptStyle("chat_template", end, stops)
    if _has_token(tokenizer, GEMMA_START) and _has_token(tokenizer, GEMMA_END):
        return PromptStyle("gemma_turns", GEMMA_END + "\n", (GEMMA_END, tokenizer.eos_token or GEMMA_END))
    eos = tokenizer.eos_token or ""
    return PromptStyle("plain", eos, (eos,) if eos else ())


def render_prompt(tokenizer, instruction: str, system: str | None = None) -> str:
    """The text a model is prompted with for one instruction, ending where its answer begins."""
    return render_context(tokenizer, [("user", instruction)], system)


def render_context(tokenizer, turns, system: str | None = None) -> str:
    """The prompt for a conversation so far (`turns`: (role, content) pairs, roles user/assistant),
    ending where the next assistant turn begins. Without a chat template the system text opens the
    first user turn, as Gemma's own format has no system role."""
    style = prompt_style(tokenizer)
    if style.kind == "chat_template":
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": role, "content": content} for role, content in turns
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [tokenizer.bos_token or ""]
    first_user = True
    for role, content in turns:
        if role == "user":
            text = f"{system}\n\n{content}" if (system and first_user) else content
            first_user = False
            parts.append(_user_block(style, text))
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
    """The chat template renders an earlier turn differently once the conversation goes on, so no
    token sequence is both the trained text and the prompt of every later turn."""


def conversation_segments(tokenizer, turns, system: str | None = None) -> list[tuple[str, bool]]:
    """The training text of a conversation as (text, trained) pieces: before each assistant turn the
    context a model would be prompted with (masked), then the turn's content and end-of-turn text
    (trained unless the turn says otherwise). `turns` holds objects with role, content and trained.
    Joining the texts gives the whole rendered conversation."""
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
    """Token ids of the joined segments and the [start, end) token spans of the trained ones. Each
    segment is tokenized on its own, so every context is exactly the tokens it is prompted with."""
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
    """Token ids of the rendered pair and the number of prompt tokens at its start.

    The prompt and the completion are tokenized separately and concatenated, so the first
    `prompt_len` ids are exactly `encode_prompt(...)` whatever the tokenizer merges at the seam.
    """
    prompt_ids = encode_prompt(tokenizer, instruction, system)
    completion = response + prompt_style(tokenizer).end_of_turn
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: eos and the style's end-of-turn token when it is one token."""
    ids = set()
    for text in prompt_style(tokenizer).stop_strings + ((tokenizer.eos_token,) if tokenizer.eos_token else ()):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(token_ids) == 1:
            ids.add(token_ids[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def strip_stop_text(tokenizer, text: str) -> str:
    """Cut a decoded answer at the first stop string (the end-of-turn marker the model emitted)."""
    for stop in prompt_style(tokenizer).stop_strings:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text
