"""Training-pair records: read chat, prompt/completion and alpaca records from JSONL files or Hugging Face
dataset directories, and write the one format tunelens itself produces (chat `messages`).

Reading never raises on a bad record: `read_pairs` yields a `Malformed` (line number and reason) in its
place, so the lint stage can quarantine it and the counts still reconcile. Stages that need clean input
use `load_pairs`, which stops at the first bad record with an error naming file, line and field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tunelens.errors import UserError

FORMATS = ("chat", "prompt-completion", "alpaca")
# A record over this size is quarantined instead of parsed: no real pair is megabytes long, and one
# runaway line must not slow everything after it.
MAX_RECORD_BYTES = 1_000_000
# How much of an oversized or undecodable line the quarantine keeps.
RAW_TEXT_KEEP = 2_000


@dataclass(frozen=True)
class Pair:
    """One usable instruction -> response pair. `raw` is the record as read; `source_text` its line."""

    id: str
    instruction: str
    response: str
    line: int
    raw: dict
    system: str | None = None
    source_text: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class Malformed:
    """A record that could not be read: its 1-based line (row for dataset dirs), raw text and why."""

    line: int
    raw_text: str
    message: str


def content_id(instruction: str, response: str) -> str:
    """A stable id for a record without one: the same pair always gets the same id, whatever its format."""
    digest = hashlib.sha256(f"{instruction}\x00{response}".encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"


def pair_to_record(instruction: str, response: str, system: str | None = None, **extra) -> dict:
    """A record in the chat `messages` format, the one tunelens writes; `extra` keys (id, tags...) are
    kept beside `messages`, with `id` first."""
    record: dict = {}
    if "id" in extra:
        record["id"] = extra.pop("id")
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    record["messages"] = messages
    record.update(extra)
    return record


def record_text(pair: Pair) -> str:
    """The record as one JSONL line: its original text when read from a file, else re-serialized."""
    return pair.source_text or json.dumps(pair.raw, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------
# Reading


def read_pairs(path: str | Path, fmt: str = "auto", max_record_bytes: int = MAX_RECORD_BYTES
               ) -> Iterator[Pair | Malformed]:
    """Yield every record of a JSONL file or a `save_to_disk` dataset directory as a Pair or a Malformed,
    in order. `fmt` is one of FORMATS or "auto" (detected once per file from its first recognisable
    record). Blank lines are not records and are skipped. Raises UserError for a missing/unreadable path."""
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use auto, {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    rows = _dataset_rows(path) if path.is_dir() else _jsonl_rows(path, max_record_bytes)
    detected = None if fmt == "auto" else fmt
    detected_at = None
    for line, value, raw_text in rows:
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


def load_pairs(path: str | Path, fmt: str = "auto") -> list[Pair]:
    """All pairs of a file; raises UserError naming file, line and field at the first bad record."""
    pairs = []
    for item in read_pairs(path, fmt):
        if isinstance(item, Malformed):
            raise UserError(f"{path}:{item.line}: {item.message} (run `tunelens data lint` to quarantine bad records)")
        pairs.append(item)
    return pairs


def detect_format(record: dict) -> str | None:
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def _jsonl_rows(path: Path, max_record_bytes: int):
    """(line number, parsed value or Malformed, raw text) for each non-blank line; bytes are decoded per
    line so one bad line cannot hide the others."""
    try:
        handle = path.open("rb")
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    with handle:
        for number, data in enumerate(handle, start=1):
            if number == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]  # a UTF-8 byte-order mark written by some editors
            data = data.rstrip(b"\r\n")
            if not data.strip():
                continue
            yield number, *_parse_line(number, data, max_record_bytes)


def _parse_line(number: int, data: bytes, max_record_bytes: int):
    if len(data) > max_record_bytes:
        preview = _preview(data.decode("utf-8", errors="replace"))
        return Malformed(number, preview, f"record is {len(data) / 1e6:.1f} MB, over the "
                                          f"{max_record_bytes / 1e6:g} MB limit"), preview
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        preview = _preview(data.decode("utf-8", errors="replace"))
        return Malformed(number, preview, f"not valid UTF-8: byte 0x{data[err.start]:02x} at offset {err.start}"), preview
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return Malformed(number, _preview(text), f"invalid JSON: {err.msg} at column {err.colno}"), text
    except RecursionError:
        return Malformed(number, _preview(text), "invalid JSON: nested too deeply"), text
    if not isinstance(value, dict):
        return Malformed(number, _preview(text), f"record is a JSON {_json_type(value)}, expected an object"), text
    return value, text


def _dataset_rows(path: Path):
    """Rows of a Hugging Face dataset saved with `save_to_disk` (a Dataset, or a DatasetDict's train split)."""
    if not any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise UserError(f"{path}: a directory but not a dataset saved with save_to_disk "
                        "(no dataset_info.json/state.json/dataset_dict.json)")
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise UserError(f"{path}: reading a dataset directory needs the `datasets` package") from None
    try:
        dataset = load_from_disk(str(path))
    except Exception as err:  # datasets raises many kinds; all mean the directory cannot be used
        raise UserError(f"{path}: cannot load dataset ({err})") from None
    if isinstance(dataset, DatasetDict):
        splits = list(dataset)
        if "train" not in dataset and len(splits) != 1:
            raise UserError(f"{path}: dataset has splits {splits} and none is 'train'; pass {path}/<split>")
        dataset = dataset["train" if "train" in dataset else splits[0]]
    for index, row in enumerate(dataset, start=1):
        yield index, row, ""


# ---------------------------------------------------------------------------------------------------
# One record -> Pair


class _BadField(Exception):
    pass


def _to_pair(record: dict, line: int, raw_text: str, fmt: str | None) -> Pair | Malformed:
    try:
        if fmt is None:
            raise _BadField("unknown record format: expected `messages`, `prompt`/`completion` "
                            "or `instruction`/`output` fields")
        instruction, response, system = _READERS[fmt](record)
        record_id = _record_id(record, instruction, response)
    except _BadField as err:
        return Malformed(line, raw_text or json.dumps(record, ensure_ascii=False, default=str), str(err))
    return Pair(record_id, instruction, response, line, record, system, raw_text)


def _record_id(record: dict, instruction: str, response: str) -> str:
    value = record.get("id")
    if value is None:
        return content_id(instruction, response)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadField(f"field 'id' must be a string or integer, got {_json_type(value)}")
    if isinstance(value, str) and not value.strip():
        raise _BadField("field 'id' is empty")
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
        raise _BadField(f"field '{label}' must be a string, got {_json_type(value)}")
    if required and not value.strip():
        raise _BadField(f"field '{label}' is empty")
    return value


def _join_content_parts(parts: list, label: str) -> str:
    texts = []
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise _BadField(f"field '{label}' must be a string or a list of text parts")
    return "".join(texts)


def _read_chat(record: dict) -> tuple[str, str, str | None]:
    messages = record.get("messages")
    if messages is None:
        raise _BadField("missing field 'messages'")
    if not isinstance(messages, list):
        raise _BadField(f"field 'messages' must be a list, got {_json_type(messages)}")
    roles = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _BadField(f"field 'messages[{index}]' must be an object, got {_json_type(message)}")
        role = message.get("role")
        if not isinstance(role, str):
            raise _BadField(f"field 'messages[{index}].role' must be a string, got {_json_type(role)}")
        roles.append(role)
    last_assistant = max((i for i, role in enumerate(roles) if role == "assistant"), default=None)
    if last_assistant is None:
        raise _BadField("field 'messages' has no assistant message")
    last_user = max((i for i, role in enumerate(roles[:last_assistant]) if role == "user"), default=None)
    if last_user is None:
        raise _BadField("field 'messages' has no user message before the assistant message")
    response = _text_field(messages[last_assistant], "content", where=f"messages[{last_assistant}].")
    instruction = _text_field(messages[last_user], "content", where=f"messages[{last_user}].")
    system_index = next((i for i, role in enumerate(roles) if role == "system"), None)
    system = None
    if system_index is not None:
        system = _text_field(messages[system_index], "content", required=False,
                             where=f"messages[{system_index}].") or None
    return instruction, response, system


def _read_prompt_completion(record: dict) -> tuple[str, str, str | None]:
    return _text_field(record, "prompt"), _text_field(record, "completion"), None


def _read_alpaca(record: dict) -> tuple[str, str, str | None]:
    instruction = _text_field(record, "instruction")
    extra_input = _text_field(record, "input", required=False)
    if extra_input.strip():
        instruction = f"{instruction}\n\n{extra_input}"
    return instruction, _text_field(record, "output"), None


_READERS = {"chat": _read_chat, "prompt-completion": _read_prompt_completion, "alpaca": _read_alpaca}


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _preview(text: str) -> str:
    if len(text) <= RAW_TEXT_KEEP:
        return text
    return text[:RAW_TEXT_KEEP] + f"... [truncated, {len(text)} characters in all]"
