"""Rows out of files: JSONL (any line ending; UTF-8, UTF-16 or UTF-32), parquet, CSV, a dataset saved
with `save_to_disk`, or a dataset id already in the local Hugging Face cache.

Every source yields `(line or row number, dict or Malformed, raw text)`. A row that cannot be parsed
becomes a `Malformed` in its place, never an exception, so lint can quarantine it and counts reconcile.
What turns a row into a training record is tunelens.data.records' business, not this module's.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tunelens.errors import UserError

# How much of an oversized or undecodable line the quarantine keeps.
RAW_TEXT_KEEP = 2_000
_BLOCK = 1 << 20
# A bare CR ends a line too (old Mac files): JSON never holds a raw CR inside a string, so this cannot
# split a valid record.
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_TEXT_NEWLINE = re.compile(r"\r\n|\r|\n")
_ANY_NEWLINE = re.compile(rb"[\r\n]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))  # UTF-32 LE first: it starts like UTF-16 LE


@dataclass(frozen=True)
class Malformed:
    """A record that could not be read: its 1-based line (row for tables), raw text and why."""

    line: int
    raw_text: str
    message: str


def rows(path: Path, max_record_bytes: int) -> Iterator[tuple[int, dict | Malformed, str]]:
    """Dispatch on what `path` is; raises UserError when the source as a whole cannot be opened."""
    if path.is_dir():
        return dataset_dir_rows(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return parquet_rows(path)
    if suffix in (".csv", ".tsv"):
        return csv_rows(path, max_record_bytes, delimiter="\t" if suffix == ".tsv" else ",")
    return jsonl_rows(path, max_record_bytes)


# JSONL
def jsonl_rows(path: Path, max_record_bytes: int):
    """Lines are decoded one by one, so one bad line cannot hide the others."""
    with _open(path, "rb") as handle:
        head = handle.read(4)
        encoding, bom = _encoding_of(head)
        handle.seek(len(bom))
        lines = _utf8_lines(handle, max_record_bytes) if encoding == "utf-8" else _wide_lines(handle, encoding, path)
        for number, data in lines:
            if isinstance(data, Malformed):
                yield number, data, data.raw_text
            elif data.strip():
                yield number, *parse_json_line(number, data, max_record_bytes)


def _open(path: Path, *args, **kwargs):
    try:
        return path.open(*args, **kwargs)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None


def _encoding_of(head: bytes) -> tuple[str, bytes]:
    """(encoding, byte-order mark) from a file's first bytes. Without a mark, NULs at every other byte
    mean UTF-16 (a JSON line starts with ASCII: `{"` in UTF-16 LE is 7b 00 22 00); UTF-8 JSON never has
    a raw NUL there, so a UTF-8 file is not mistaken for one."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, bom
    nuls = tuple(byte == 0 for byte in head)
    return {(False, True, False, True): "utf-16-le", (True, False, True, False): "utf-16-be"}.get(nuls, "utf-8"), b""


def _utf8_lines(handle, max_record_bytes: int) -> Iterator[tuple[int, bytes | Malformed]]:
    """(line number, bytes) split at LF, CRLF or a bare CR, read a block at a time. A line longer than
    ``max_record_bytes`` is not held: past the limit its bytes are counted and dropped as they are
    read, so memory stays under the limit plus a block and time is linear, for a line of any length;
    it comes out as Malformed."""
    number, pending, dropped, held_cr = 0, bytearray(), 0, False
    for block in iter(lambda: handle.read(_BLOCK), b""):
        pending += block
        if not held_cr and not _ANY_NEWLINE.search(block):
            # A long line still going on (pending holds no line end): do not rescan it block after block.
            if len(pending) > max_record_bytes + 1:
                dropped += len(pending) - (max_record_bytes + 1)
                del pending[max_record_bytes + 1:]
            continue
        # hold back a final CR: it may be the first half of a CRLF split across two blocks
        held_cr = pending.endswith(b"\r")
        cut = len(pending) - 1 if held_cr else len(pending)
        pieces = _NEWLINE.split(bytes(pending[:cut]))
        pending = bytearray(pieces.pop()) + pending[cut:]
        for piece in pieces:
            number += 1
            yield number, _oversized(number, piece, dropped, max_record_bytes) if dropped else piece
            dropped = 0
    pieces = _NEWLINE.split(bytes(pending))
    if pieces[-1] == b"" and not dropped:
        pieces.pop()  # a final newline ends the last line; it does not start another
    for piece in pieces:
        number += 1
        yield number, _oversized(number, piece, dropped, max_record_bytes) if dropped else piece
        dropped = 0


def _oversized(number: int, head: bytes, dropped: int, max_record_bytes: int) -> Malformed:
    """The record whose bytes past the limit were dropped while reading (``head`` is what was kept)."""
    size = len(head) + dropped
    return Malformed(number, _big_preview(head, size), _too_big(size, max_record_bytes))


def _too_big(size: int, max_record_bytes: int) -> str:
    return f"record is {size / 1e6:.1f} MB, over the {max_record_bytes / 1e6:g} MB limit"


def _big_preview(head: bytes, size: int) -> str:
    """The start of an oversized record (never the whole: it may be gigabytes)."""
    return head[:RAW_TEXT_KEEP * 4].decode("utf-8", errors="replace")[:RAW_TEXT_KEEP] + \
        f"... [truncated, {size} bytes in all]"


def _wide_lines(handle, encoding: str, path: Path) -> Iterator[tuple[int, bytes | Malformed]]:
    """Lines of a UTF-16/32 file, re-encoded as UTF-8 so the rest of the reader is the same. Such files
    are small in practice (PowerShell redirection writes them), so the file is decoded at once; a lone
    surrogate code unit makes its line Malformed, the other lines are read."""
    data = handle.read()
    try:
        text = data.decode(encoding, errors="surrogatepass")
    except UnicodeDecodeError as err:  # with surrogatepass only a file cut inside a code unit gets here
        raise UserError(f"{path}: not valid {encoding.upper()} at byte {err.start} ({err.reason})") from None
    for number, line in enumerate(_TEXT_NEWLINE.split(text), start=1):
        try:
            yield number, line.encode("utf-8")
        except UnicodeEncodeError as err:  # an unpaired surrogate code unit in the file itself
            preview = preview_text(line.encode("utf-8", "backslashreplace").decode("utf-8"))
            yield number, Malformed(number, preview, f"not valid {encoding.upper()}: unpaired surrogate "
                                                     f"U+{ord(line[err.start]):04X} at character {err.start}")


def parse_json_line(number: int, data: bytes, max_record_bytes: int) -> tuple[dict | Malformed, str]:
    if len(data) > max_record_bytes:
        preview = _big_preview(data, len(data))
        return Malformed(number, preview, _too_big(len(data), max_record_bytes)), preview
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        preview = preview_text(data.decode("utf-8", errors="replace"))
        return Malformed(number, preview, f"not valid UTF-8: byte 0x{data[err.start]:02x} at offset {err.start}"), preview
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return Malformed(number, preview_text(text), f"invalid JSON: {err.msg} at column {err.colno}"), text
    except RecursionError:
        return Malformed(number, preview_text(text), "invalid JSON: nested too deeply"), text
    except ValueError as err:  # Python refuses integers of more than 4,300 digits (sys.int_info)
        limit = "integer string conversion" in str(err)
        message = "an integer with more digits than Python converts (limit 4,300)" if limit else str(err)
        return Malformed(number, preview_text(text), f"invalid JSON: {message}"), text
    if not isinstance(value, dict):
        return Malformed(number, preview_text(text), f"record is a JSON {json_type(value)}, expected an object"), text
    return value, text


# Tables: parquet and CSV
def parquet_rows(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading parquet needs the `pyarrow` package") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError...: all mean the file is unusable
        raise UserError(f"{path}: cannot read as parquet ({err})") from None
    number = 0
    for batch in table.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row, ""


# Columns that hold a list of messages; in a CSV cell they can only be JSON text.
_LIST_COLUMNS = ("messages", "conversations")


def csv_rows(path: Path, max_record_bytes: int, delimiter: str = ","):
    """Rows of a CSV with a header line, numbered by the line each row starts on. Empty cells are
    absent fields; a `messages`/`conversations` cell is parsed as JSON."""
    csv.field_size_limit(max(max_record_bytes, 1))
    with _open(path, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        start = 2
        try:
            for row in reader:
                yield start, _csv_record(start, row), ""
                start = reader.line_num + 1
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not valid UTF-8 after line {start - 1} ({err.reason})") from None
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: {err}") from None


def _csv_record(number: int, row: dict) -> dict | Malformed:
    if None in row:  # DictReader puts cells beyond the header under the key None
        return Malformed(number, _row_preview(row), f"row has {len(row) - 1 + len(row[None])} cells, "
                                                      f"the header has {len(row) - 1}")
    record = {key: value for key, value in row.items() if value not in ("", None)}
    for column in _LIST_COLUMNS:
        if column in record:
            try:
                record[column] = json.loads(record[column])
            except (ValueError, RecursionError):
                return Malformed(number, _row_preview(row), f"column '{column}' is not a JSON list of messages")
    return record


def _row_preview(row: dict) -> str:
    return preview_text(json.dumps({str(k): v for k, v in row.items()}, ensure_ascii=True, default=str))


# Hugging Face datasets: a saved directory or an id in the local cache
def dataset_dir_rows(path: Path):
    """Rows of a dataset saved with `save_to_disk` (a Dataset, or a DatasetDict's train split)."""
    if not any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise UserError(f"{path}: a directory but not a dataset saved with save_to_disk "
                        "(no dataset_info.json/state.json/dataset_dict.json)")
    datasets = _datasets_module(path)
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many kinds; all mean the directory cannot be used
        raise UserError(f"{path}: cannot load dataset ({err})") from None
    return _dataset_rows(path, dataset, datasets)


def looks_like_dataset_id(spec: str) -> bool:
    """`name` or `owner/name` without a file suffix: what the Hub calls a dataset id."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", spec)) and not Path(spec).suffix


def cached_dataset_rows(spec: str):
    """Rows of a dataset already in the local Hugging Face cache, loaded with the Hub switched off:
    nothing is downloaded, and a dataset that is not cached is a clear error."""
    datasets = _datasets_module(spec)
    return _dataset_rows(spec, _load_cached(spec, datasets), datasets)


def cached_dataset_dir(spec: str) -> Path:
    """The cache directory holding a cached dataset id's files: what provenance should hash."""
    datasets = _datasets_module(spec)
    dataset = _load_cached(spec, datasets)
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    files = [Path(entry["filename"]) for split in splits for entry in split.cache_files]
    if not files:
        raise UserError(f"{spec}: the cached dataset has no files")
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def _load_cached(spec: str, datasets):
    with _hub_offline(datasets):
        try:
            return datasets.load_dataset(spec)
        except Exception as err:  # not cached, or a broken cache entry: datasets raises many kinds
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{spec}: no such file, and not a dataset in the local Hugging Face cache "
                            f"({datasets.config.HF_DATASETS_CACHE}): {first}") from None


@contextlib.contextmanager
def _hub_offline(datasets):
    """datasets and huggingface_hub read their offline switch at import; set it on the loaded modules
    for this one load, so naming a dataset can never start a download."""
    import huggingface_hub.constants as hub_constants

    saved = [(module, name, getattr(module, name)) for module, name in
             ((datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
              (hub_constants, "HF_HUB_OFFLINE")) if hasattr(module, name)]
    for module, name, _ in saved:
        setattr(module, name, True)
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # "Using the latest cached version..." is what we asked for
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        for module, name, value in saved:
            setattr(module, name, value)


def _datasets_module(where):
    try:
        import datasets
    except ImportError:
        raise UserError(f"{where}: reading a Hugging Face dataset needs the `datasets` package") from None
    return datasets


def _dataset_rows(where, dataset, datasets):
    if isinstance(dataset, datasets.DatasetDict):
        splits = list(dataset)
        if "train" not in dataset and len(splits) != 1:
            raise UserError(f"{where}: dataset has splits {splits} and none is 'train'; name one split")
        dataset = dataset["train" if "train" in dataset else splits[0]]
    for index, row in enumerate(dataset, start=1):
        yield index, row, ""


# JSON's names for Python values, bool before int (a bool is an int).
_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), ((int, float), "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def json_type(value) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def preview_text(text: str) -> str:
    if len(text) <= RAW_TEXT_KEEP:
        return text
    return text[:RAW_TEXT_KEEP] + f"... [truncated, {len(text)} characters in all]"
