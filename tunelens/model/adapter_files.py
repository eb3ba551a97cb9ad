"""The files of an adapter directory, read with bounds: a config or provenance file is size-capped, the
weights are read by safetensors itself, and every problem ends in one `AdapterError` line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelens.model.specs import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROVENANCE_FILE = "tunelens.json"

# A config or provenance file is a few KB; anything past this is not one, and is not read whole.
MAX_JSON_BYTES = 16 * 1024 * 1024


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
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise adapter_error(path, f"cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise adapter_error(path, f"is not UTF-8 text, so not {what}") from None
    except json.JSONDecodeError as err:
        raise adapter_error(path, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number; thousands of nested brackets
        raise adapter_error(path, f"is not usable JSON ({str(err).split(':')[0][:100]})") from None
    if not isinstance(value, dict):
        raise adapter_error(path, f"must hold a JSON object ({what}), found {type(value).__name__}")
    return value


def read_weights(path: Path) -> dict:
    """The adapter's tensors. safetensors checks the header, dtypes, shapes and offsets itself; the size
    checks before it only say in plain words what a short or cut file is."""
    # here, not at the top: safetensors.torch imports torch, which commands' --help should not wait for
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        size = path.stat().st_size
        if size == 0:
            raise adapter_error(path, "is empty (0 bytes): the adapter weights were not written")
        if size < 8:
            raise adapter_error(path, f"is {size} bytes, too short to be a safetensors file")
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
        if length > size - 8:
            raise adapter_error(path, f"declares a {length}-byte header in a {size}-byte file: truncated or not "
                                      "safetensors")
        tensors = load_file(str(path))
    except OSError as err:
        raise adapter_error(path, f"cannot be read: {err.strerror or err}") from None
    except SafetensorError as err:
        detail = str(err).removeprefix("Error while deserializing header: ")[:160]
        if "JSON" in detail:
            raise adapter_error(path, "has a header that is not valid JSON: damaged or not safetensors") from None
        raise adapter_error(path, f"is not a readable safetensors file ({detail}): truncated or damaged") from None
    if not tensors:
        raise adapter_error(path, "holds no tensors")
    return tensors


def base_spec_of(adapter_dir: str | Path) -> str | None:
    """The base model spec an adapter's tunelens.json records, for commands that default to it."""
    path = Path(adapter_dir) / PROVENANCE_FILE
    if not path.exists():
        return None
    spec = read_json_object(path, "adapter provenance").get("base_model")
    return spec if isinstance(spec, str) and spec else None
