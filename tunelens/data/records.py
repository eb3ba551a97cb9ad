"""Training records: read chat (incl. multi-turn), ShareGPT, prompt/completion (strings or TRL message
lists), alpaca and plain `text` records from JSONL, parquet, CSV, saved dataset directories or a dataset
id in the local Hugging Face cache; write the one format tunelens itself produces (chat `messages`).

A record is a conversation: an optional system text and user/assistant turns, every assistant turn
trained; `Pair.instruction`/`Pair.response` are its last user/assistant turn. A `text` record is plain
completion data: every token is trained.

Reading never raises on a bad record: `read_pairs` yields a `Malformed` (line number and reason) in its
place, so lint can quarantine it and counts reconcile; a conversation the trainer could not use whole (an
unknown role, a trailing unanswered user turn) is Malformed too, never cut silently. `load_pairs` stops
at the first bad record with an error naming file, line and field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tunelens.errors import UserError
from tunelens.data.record_files import (Malformed, cached_dataset_dir, cached_dataset_rows, json_type, looks_like_dataset_id, rows)

__all__ = ["FORMATS", "MAX_RECORD_BYTES", "Malformed", "Pair", "Turn", "content_id", "detect_format",
           "load_pairs", "pair_to_record", "read_pairs", "record_text", "source_path"]

FORMATS = ("chat", "sharegpt", "prompt-completion", "alpaca", "text")
# A record over this size is quarantined instead of parsed: no real pair is megabytes long, and one
# runaway line must not slow everything after it.
MAX_RECORD_BYTES = 1_000_000

# ShareGPT speaker names (and the chat names some exports use there) -> tunelens roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}
CHAT_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation. `trained` is False only for an assistant turn given as context, as in
    the `prompt` list of TRL's conversational prompt-completion format."""

    role: str  # "user" or "assistant"
    content: str
    trained: bool = True


@dataclass(frozen=True)
class Pair:
    """One usable training record: `raw` as read, `source_text` its line, `turns` the conversation (empty
    for a `text` record, whose `response` is the text and `instruction` empty)."""

    id: str
    instruction: str
    response: str
    line: int
    raw: dict
    system: str | None = None
    source_text: str = field(default="", repr=False, compare=False)
    turns: tuple[Turn, ...] = ()
    kind: str = "chat"  # "chat" (masked prompt, trained answers) or "text" (every token trained)

    @property
    def conversation(self) -> tuple[Turn, ...]:
        """The turns; a Pair built by hand with only instruction/response is one exchange."""
        if self.turns or self.kind == "text":
            return self.turns
        return (Turn("user", self.instruction), Turn("assistant", self.response))

    @property
    def assistant_texts(self) -> list[str]:
        """Every text the model is trained to write: each trained assistant turn, or the whole text."""
        if self.kind == "text":
            return [self.response]
        return [turn.content for turn in self.conversation if turn.role == "assistant" and turn.trained]

    @property
    def user_texts(self) -> list[str]:
        return [turn.content for turn in self.conversation if turn.role == "user"]


def content_id(instruction: str, response: str) -> str:
    """A stable id for a record without one: the same pair always gets the same id, whatever its format."""
    return _hash_id(f"{instruction}\x00{response}")


def _hash_id(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def conversation_id(turns: tuple[Turn, ...], text: str | None = None) -> str:
    """content_id of a one-exchange conversation (so single-turn ids never change); for longer ones and
    plain text, a hash over every turn, so two conversations that share their last exchange differ."""
    if text is None and len(turns) == 2 and turns[0].role == "user" and turns[1].role == "assistant":
        return content_id(turns[0].content, turns[1].content)
    parts = [text] if text is not None else [f"{t.role}\x00{t.content}" for t in turns]
    return _hash_id("\x01".join(parts))


def pair_to_record(instruction: str, response: str, system: str | None = None, **extra) -> dict:
    """A record in the chat `messages` format, the one tunelens writes; `extra` keys (id, tags...) are
    kept beside `messages`, with `id` first."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    record = {"id": extra.pop("id")} if "id" in extra else {}
    return {**record, "messages": messages, **extra}


def record_text(pair: Pair) -> str:
    """The record as one JSONL line: its original text when read from a file, else re-serialized."""
    return pair.source_text or json_line(pair.raw)


def json_line(value) -> str:
    """One JSON line that always encodes as UTF-8: a lone surrogate anywhere (possible in a parsed
    `"\\ud800"` escape) is written as an escape again instead of failing the whole output file."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, default=str)
    return text


# Reading
def read_pairs(path: str | Path, fmt: str = "auto", max_record_bytes: int = MAX_RECORD_BYTES
               ) -> Iterator[Pair | Malformed]:
    """Every record of a source (see the module docstring) as a Pair or a Malformed, in order; blank lines
    skipped. `fmt` is one of FORMATS or "auto" (detected from the first recognisable record). Raises
    UserError for a missing or unreadable source."""
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use auto, {', '.join(FORMATS)}")
    detected, detected_at = (None if fmt == "auto" else fmt), None
    for line, value, raw_text in _open_rows(path, max_record_bytes):
        if isinstance(value, Malformed):
            yield value
            continue
        if detected is None and isinstance(value, dict):
            detected, detected_at = detect_format(value), line
        item = _to_pair(value, line, raw_text, detected)
        if isinstance(item, Malformed) and detected_at is not None and item.message.startswith("missing field"):
            # a mixed-format file: say where the format came from and how to choose another
            item = Malformed(item.line, item.raw_text, f"{item.message} (format {detected} detected from line "
                                                       f"{detected_at}; use --format to choose another)")
        yield item


def _open_rows(path: str | Path, max_record_bytes: int):
    if Path(path).exists():
        return rows(Path(path), max_record_bytes)
    if looks_like_dataset_id(str(path)):
        return cached_dataset_rows(str(path))
    raise UserError(f"{path}: no such file or directory")


def source_path(path: str | Path) -> Path:
    """The file or directory whose bytes are the data: `path`, or a cached dataset id's cache directory."""
    if Path(path).exists() or not looks_like_dataset_id(str(path)):
        return Path(path)
    return cached_dataset_dir(str(path))


def load_pairs(path: str | Path, fmt: str = "auto") -> list[Pair]:
    """All pairs of a file; raises UserError naming file, line and field at the first bad record."""
    pairs = []
    for item in read_pairs(path, fmt):
        if isinstance(item, Malformed):
            raise UserError(f"{path}:{item.line}: {item.message} (run `tunelens data lint` to quarantine bad records)")
        pairs.append(item)
    return pairs


# The fields that mark each format, in the order they are tried.
_FORMAT_FIELDS = (("chat", ("messages",)), ("sharegpt", ("conversations",)),
                  ("prompt-completion", ("prompt", "completion")), ("alpaca", ("instruction", "output")),
                  ("text", ("text",)))


def detect_format(record: dict) -> str | None:
    return next((fmt for fmt, fields in _FORMAT_FIELDS if all(name in record for name in fields)), None)


# One record -> Pair
class _BadField(Exception):
    pass


@dataclass(frozen=True)
class _Parsed:
    turns: tuple[Turn, ...]
    system: str | None = None
    text: str | None = None  # set for a `text` record


def _to_pair(record: dict, line: int, raw_text: str, fmt: str | None) -> Pair | Malformed:
    try:
        if fmt is None:
            raise _BadField("unknown record format: expected `messages`, `conversations`, `prompt`/`completion`, "
                            "`instruction`/`output` or `text` fields")
        parsed = _READERS[fmt](record)
        record_id = _record_id(record, parsed)
    except _BadField as err:
        return Malformed(line, raw_text or json_line(record), str(err))
    if parsed.text is not None:
        return Pair(record_id, "", parsed.text, line, record, None, raw_text, (), "text")
    instruction = next(t.content for t in reversed(parsed.turns) if t.role == "user")
    response = next(t.content for t in reversed(parsed.turns) if t.role == "assistant")
    return Pair(record_id, instruction, response, line, record, parsed.system, raw_text, parsed.turns)


def _record_id(record: dict, parsed: _Parsed) -> str:
    value = record.get("id")
    if value is None:
        return conversation_id(parsed.turns, parsed.text)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadField(f"field 'id' must be a string or integer, got {json_type(value)}")
    if isinstance(value, str):
        if not value.strip():
            raise _BadField("field 'id' is empty")
        _check_encodable(value, "id")
    return str(value)


def _text_field(record: dict, name: str, required: bool = True, where: str = "") -> str:
    label = f"{where}{name}"
    if name not in record or record[name] is None:
        if required:
            raise _BadField(f"missing field '{label}'")
        return ""
    value = record[name]
    if isinstance(value, list):  # OpenAI-style content parts: [{"type": "text", "text": ...}]
        value = _join_content_parts(value, label)
    if not isinstance(value, str):
        raise _BadField(f"field '{label}' must be a string, got {json_type(value)}")
    if required and not value.strip():
        raise _BadField(f"field '{label}' is empty")
    _check_encodable(value, label)
    return value


def _check_encodable(value: str, label: str) -> None:
    """A lone surrogate (JSON allows the escape "\\ud800") is not text: no tokenizer or UTF-8 file can hold it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _BadField(f"field '{label}' holds a lone surrogate U+{ord(value[err.start]):04X} at character "
                        f"{err.start}, which is not encodable text") from None


def _join_content_parts(parts: list, label: str) -> str:
    if not all(isinstance(part, dict) and isinstance(part.get("text"), str) for part in parts):
        raise _BadField(f"field '{label}' must be a string or a list of text parts")
    return "".join(part["text"] for part in parts)


def _message_list(record: dict, name: str) -> list:
    messages = record.get(name)
    if messages is None:
        raise _BadField(f"missing field '{name}'")
    if not isinstance(messages, list):
        raise _BadField(f"field '{name}' must be a list, got {json_type(messages)}")
    return messages


def _turns(messages: list, name: str, role_key: str, content_key: str, role_map: dict,
           trained: bool = True) -> tuple[list[str], list[Turn]]:
    """(leading system texts, turns) of one message list; field names in errors are `name[i].key`."""
    systems, turns = [], []
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if not isinstance(message, dict):
            raise _BadField(f"field '{where}' must be an object, got {json_type(message)}")
        role = message.get(role_key)
        if not isinstance(role, str):
            raise _BadField(f"field '{where}.{role_key}' must be a string, got {json_type(role)}")
        mapped = role_map.get(role.strip().lower())
        if mapped is None:
            known = ", ".join(sorted(role_map))
            raise _BadField(f"field '{where}.{role_key}' is {role!r}: supported roles are {known}")
        if mapped == "system":
            if turns:
                raise _BadField(f"field '{where}' is a system message inside the conversation; only "
                                "system messages before the first turn are supported")
            text = _text_field(message, content_key, required=False, where=f"{where}.")
            if text.strip():
                systems.append(text)
            continue
        content = _text_field(message, content_key, where=f"{where}.")
        turns.append(Turn(mapped, content, trained if mapped == "assistant" else True))
    return systems, turns


def _conversation(systems: list[str], turns: list[Turn], name: str) -> _Parsed:
    """Check that every assistant turn can be trained: a user turn opens, an assistant turn closes."""
    if not any(t.role == "assistant" for t in turns):
        raise _BadField(f"field '{name}' has no assistant message")
    if turns[0].role != "user":
        raise _BadField(f"field '{name}' has no user message before the assistant message")
    if turns[-1].role != "assistant":
        raise _BadField(f"field '{name}' ends with a user turn that has no answer; remove it or add the "
                        "answer (a trailing turn is never cut silently)")
    return _Parsed(tuple(turns), "\n\n".join(systems) or None)


def _read_chat(record: dict) -> _Parsed:
    systems, turns = _turns(_message_list(record, "messages"), "messages", "role", "content", CHAT_ROLES)
    return _conversation(systems, turns, "messages")


def _read_sharegpt(record: dict) -> _Parsed:
    messages = _message_list(record, "conversations")
    # ShareGPT proper uses from/value; some exports keep chat's role/content under `conversations`.
    chat_keys = bool(messages) and isinstance(messages[0], dict) and "from" not in messages[0] and "role" in messages[0]
    role_key, content_key = ("role", "content") if chat_keys else ("from", "value")
    systems, turns = _turns(messages, "conversations", role_key, content_key, SHAREGPT_ROLES)
    if isinstance(record.get("system"), str) and record["system"].strip():  # a top-level system prompt
        systems.insert(0, _text_field(record, "system"))
    return _conversation(systems, turns, "conversations")


def _read_prompt_completion(record: dict) -> _Parsed:
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list) or isinstance(completion, list):
        return _read_conversational_prompt_completion(record)
    return _Parsed((Turn("user", _text_field(record, "prompt")), Turn("assistant", _text_field(record, "completion"))))


def _read_conversational_prompt_completion(record: dict) -> _Parsed:
    """TRL's conversational form: `prompt` and `completion` are message lists; as in TRL, only the
    completion is trained (an assistant turn inside the prompt is context)."""
    for name in ("prompt", "completion"):
        if not isinstance(record.get(name), list):
            raise _BadField(f"field '{name}' must be a list of messages like the other one, "
                            f"got {json_type(record.get(name))}")
    systems, prompt_turns = _turns(record["prompt"], "prompt", "role", "content", CHAT_ROLES, trained=False)
    more_systems, completion_turns = _turns(record["completion"], "completion", "role", "content", CHAT_ROLES)
    if more_systems:
        raise _BadField("field 'completion' holds a system message; put it first in 'prompt'")
    if not any(t.role == "assistant" for t in completion_turns):
        raise _BadField("field 'completion' has no assistant message")
    if not prompt_turns:
        raise _BadField("field 'prompt' has no user message")
    return _conversation(systems, prompt_turns + completion_turns, "completion")


def _read_alpaca(record: dict) -> _Parsed:
    instruction = _text_field(record, "instruction")
    extra_input = _text_field(record, "input", required=False)
    if extra_input.strip():
        instruction = f"{instruction}\n\n{extra_input}"
    return _Parsed((Turn("user", instruction), Turn("assistant", _text_field(record, "output"))))


def _read_text(record: dict) -> _Parsed:
    return _Parsed((), None, _text_field(record, "text"))


_READERS = {"chat": _read_chat, "sharegpt": _read_sharegpt, "prompt-completion": _read_prompt_completion,
            "alpaca": _read_alpaca, "text": _read_text}
