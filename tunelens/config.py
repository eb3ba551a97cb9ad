"""Typed configs shared by every stage: frozen dataclasses, one help text per field, YAML < CLI flags.

A stage declares its config with `configclass` and `option()` fields and loads it with
`load_config(Cls, yaml_path, overrides)`: the YAML file (optional) sets fields, an unknown key being an error
naming the file and key; the non-None `overrides` (CLI flags) win over it; values are coerced to the field's
type (YAML reads `1e-5` as a string: it becomes a float), an uncoercible value being an error naming the key;
then the field bounds and the class's own `validate()` raise UserError. No torch import, so help stays cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from tunelens.errors import UserError

C = TypeVar("C")


def option(default: Any, help: str, choices: tuple | None = None, *, min: float | None = None,
           max: float | None = None, flag: str | None = None, short: str | None = None) -> Any:
    """A dataclass field declared once: default, help, allowed values, bounds, and its CLI flag (default
    ``--field-name``) and optional short flag."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a sequence default: configs are frozen")
    given = {"choices": None if choices is None else tuple(choices), "min": min, "max": max, "flag": flag,
             "short": short}
    metadata = {"help": help, **{key: value for key, value in given.items() if value is not None}}
    return dataclasses.field(default=default, metadata=metadata)


def configclass(cls: type[C]) -> type[C]:
    """A frozen dataclass checked on every construction: each field's choices and bounds (`option()`), then
    the class's own `validate()` for rules across fields, so no caller has to remember to call it."""
    own_validate = cls.__dict__.get("validate")

    def __post_init__(self) -> None:
        check_fields(self)
        if own_validate is not None:
            own_validate(self)

    cls.__post_init__ = __post_init__
    return dataclasses.dataclass(frozen=True)(cls)


def _out_of_range(meta, value) -> str | None:
    """Why `value` breaks its field's declared choices or bounds, or None."""
    if "choices" in meta and value not in meta["choices"]:
        return f"{value!r} is not one of {', '.join(map(str, meta['choices']))}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            return f"must be at least {meta['min']}, got {value}"
        if "max" in meta and value > meta["max"]:
            return f"must be at most {meta['max']}, got {value}"
    return None


def check_fields(config) -> None:
    """Raise UserError naming the first field whose value is outside its declared choices or bounds."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        problem = None if value is None or isinstance(value, bool) else _out_of_range(field.metadata, value)
        if problem:
            raise UserError(f"{field.name}{' ' if problem.startswith('must') else ': '}{problem}")


def field_help(cls: type, name: str) -> str:
    """The help text of one field, with its default, for a CLI option."""
    field = _fields(cls)[name]
    text = field.metadata.get("help", "")
    if "choices" in field.metadata:
        text += f" One of: {', '.join(map(str, field.metadata['choices']))}."
    return f"{text} [default: {field.default}]"


def describe_config(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) per field: for docs and `--help` listings."""
    hints = typing.get_type_hints(cls)
    return [(f.name, getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", ""),
             f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]


def load_config(cls: type[C], yaml_path: str | Path | None = None, overrides: dict | None = None,
                base: C | None = None) -> C:
    """`cls` from its defaults (or from `base`, e.g. a profile), then the YAML file, then the non-None overrides."""
    values: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    if yaml_path is not None:
        values.update(_read_yaml(cls, Path(yaml_path)))
    values.update({key: _coerce(cls, key, value, "option") for key, value in (overrides or {}).items()
                   if value is not None})
    config = cls(**values)
    # a @configclass validates on construction; calling validate() again would only repeat it
    if hasattr(config, "validate") and "__post_init__" not in cls.__dict__:
        config.validate()
    return config


def config_to_dict(config) -> dict[str, Any]:
    """Plain JSON-ready values (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _read_yaml(cls: type, path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError as err:  # yaml builds ints with int(): over 4,300 digits Python refuses
        raise UserError(f"{path}: not a usable config ({' '.join(str(err).split())[:200]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of option: value, got {type(loaded).__name__}")
    return {str(key).replace("-", "_"): _coerce(cls, str(key).replace("-", "_"), value, f"{path}: key")
            for key, value in loaded.items()}


def _check_known(cls: type, key: str, where: str) -> None:
    known = _fields(cls)
    if key in known:
        return
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    raise UserError(f"{where} {key!r} is unknown{hint}")


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    """`value` as field `key`'s type, within its choices and bounds; UserError naming `where` and the key."""
    _check_known(cls, key, where)
    try:
        coerced = _coerce_to(typing.get_type_hints(cls)[key], value)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where} {key!r}: {err}") from None
    problem = _out_of_range(_fields(cls)[key].metadata, coerced)
    if problem:
        raise UserError(f"{where} {key!r}: {problem}")
    return coerced


def _coerce_to(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce_to(arg, value)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(_coerce_to(args[0], item) for item in items)
    if hint in _SCALARS:
        return _SCALARS[hint](value)
    raise TypeError(f"unsupported config type {hint!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        if isinstance(value, str):
            return int(value.strip())
    except ValueError:
        pass
    raise ValueError(f"expected an integer, got {_short(value)}")


def _to_float(value: Any) -> float:
    # YAML 1.1 reads `1e-5` (no dot) as a string; accept it, since that is how people write rates.
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):  # OverflowError: an integer beyond float's range
            pass
    raise ValueError(f"expected a number, got {_short(value)}")


def _to_text(value: Any) -> str:
    if isinstance(value, (dict, list, bool)) or value is None:
        raise ValueError(f"expected text, got {value!r}")
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_text}


def _short(value: Any) -> str:
    """repr of a bad value, cut: an error message stays one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an int over Python's 4,300-digit str limit
        return "an integer of more than 4,300 digits"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
