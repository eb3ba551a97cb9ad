"""The files of an adapter directory, read with bounds: every read of a config, provenance or weights
header is size-capped and ends in one `AdapterError` line naming the file, never a library's traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tunelens.model.specs import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROVENANCE_FILE = "tunelens.json"

# A config or provenance file is a few KB; anything past this is not one, and is not read whole.
MAX_JSON_BYTES = 16 * 1024 * 1024
# The safetensors library's own cap on the header; a larger length field is damage, not a header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Element sizes of the safetensors dtypes; LoRA weights must be one of the floating ones.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


class AdapterError(ModelLoadError):
    """An adapter directory that cannot be loaded; one line naming the file and the problem."""


def adapter_error(path: Path, problem: str) -> AdapterError:
    # Names and values in a damaged file can hold anything: keep the message on one line.
    return AdapterError(f"{path}: {' '.join(problem.split())}")


def short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def read_json_object(path: Path, what: str) -> dict:
    """A small JSON file that must hold an object; anything else is an AdapterError naming `path`."""
    if not path.is_file():
        raise adapter_error(path, f"missing or not a file ({what})")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise adapter_error(path, f"{size} bytes is far too large for {what}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise adapter_error(path, f"cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise adapter_error(path, f"is not UTF-8 text, so not {what}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise adapter_error(path, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number; thousands of nested brackets
        raise adapter_error(path, f"is not usable JSON ({str(err).split(':')[0][:100]})") from None
    if not isinstance(value, dict):
        raise adapter_error(path, f"must hold a JSON object ({what}), found {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensor table of a safetensors file, checked against the file's real size.

    Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
    then the data; offsets are relative to the data start and must tile it exactly.
    """
    try:
        return _read_header(path)
    except OSError as err:
        raise adapter_error(path, f"cannot be read: {err.strerror or err}") from None


def _read_header(path: Path) -> dict[str, TensorInfo]:
    size = path.stat().st_size
    if size == 0:
        raise adapter_error(path, "is empty (0 bytes): the adapter weights were not written")
    if size < 8:
        raise adapter_error(path, f"is {size} bytes, too short to be a safetensors file")
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > MAX_HEADER_BYTES or length > size - 8:
            raise adapter_error(path, f"declares a {length}-byte header in a {size}-byte file: truncated or not safetensors")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise adapter_error(path, "has a header that is not valid JSON: damaged or not safetensors") from None
    if not isinstance(header, dict):
        raise adapter_error(path, "has a header that is not a JSON object: damaged or not safetensors")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise adapter_error(path, "has a __metadata__ entry that is not a string-to-string map")
    tensors = {name: _tensor_info(path, name, entry) for name, entry in header.items()}
    _check_offsets_tile(path, header, data_bytes=size - 8 - length)
    if not tensors:
        raise adapter_error(path, "holds no tensors")
    return tensors


def _tensor_info(path: Path, name: str, entry) -> TensorInfo:
    if not isinstance(entry, dict):
        raise adapter_error(path, f"header entry {short_repr(name)} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise adapter_error(path, f"tensor {short_repr(name)} has unknown dtype {short_repr(dtype)}")
    if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**40 for d in shape)):
        raise adapter_error(path, f"tensor {short_repr(name)} has an invalid shape {short_repr(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise adapter_error(path, f"tensor {short_repr(name)} has invalid data_offsets {short_repr(offsets)}")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise adapter_error(path, f"tensor {short_repr(name)}: {offsets[1] - offsets[0]} bytes of data for a "
                          f"{dtype} tensor of shape {shape}")
    return TensorInfo(dtype, tuple(shape))


def _check_offsets_tile(path: Path, header: dict, data_bytes: int) -> None:
    """The tensors' byte ranges must cover the data exactly: no gap, no overlap, nothing past the end."""
    position = 0
    for begin, end in sorted(tuple(entry["data_offsets"]) for entry in header.values()):
        if begin != position:
            raise adapter_error(path, f"tensor data ranges overlap or leave a gap at byte {position}: damaged file")
        position = end
    if position != data_bytes:
        raise adapter_error(path, f"tensors need {position} bytes of data but the file has {data_bytes}: "
                          "truncated or damaged")


def check_finite(path: Path) -> None:
    """Load the (now known sane) tensors and refuse NaN or inf: an adapter holding them answers garbage."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise adapter_error(path, f"cannot be read by safetensors: {str(err).splitlines()[0] if str(err) else err}") from None
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise adapter_error(path, f"tensor {short_repr(name)} holds NaN or infinite values")


def base_spec_of(adapter_dir: str | Path) -> str | None:
    """The base model spec an adapter's tunelens.json records, for commands that default to it."""
    path = Path(adapter_dir) / PROVENANCE_FILE
    if not path.exists():
        return None
    spec = read_json_object(path, "adapter provenance").get("base_model")
    return spec if isinstance(spec, str) and spec else None
