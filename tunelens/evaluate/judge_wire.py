"""Plain data across the sandbox boundary, host side: encode arguments, decode results strictly.

The format is tagged JSON (``sandbox_boot._encode`` writes it inside): ``["n"]`` None, ``["B", b]``
bool, ``["i", hex]`` int, ``["f", float.hex]`` float, ``["s", text]`` str, ``["b", hex]`` bytes,
``["l"|"t"|"S"|"F", items]`` list/tuple/set/frozenset, ``["d", [[k, v], ...]]`` dict.

What comes back was written by a process the answer controls, so ``decode`` trusts nothing: every tag,
payload type and nesting depth is checked, and it only ever builds objects of the exact built-in types
(no subclass, nothing with behaviour the answer chose). Anything else raises ``Malformed``.
"""

from __future__ import annotations

import re

from tunelens.evaluate.sandbox_boot import MAX_DEPTH

_HEX_INT = re.compile(r"-?0x[0-9a-f]+\Z")
_HEX_BYTES = re.compile(r"(?:[0-9a-f]{2})*\Z")
_CONTAINERS = {"l": list, "t": tuple, "S": set, "F": frozenset}


class Malformed(ValueError):
    """A result that is not well-formed tagged plain data."""


class NotPlain(TypeError):
    """A value the host cannot send: not made of the plain built-in types."""


def encode(value, depth: int = 0):
    """``value`` (plain data from a test's source, built on the host) as tagged JSON."""
    if depth > MAX_DEPTH:
        raise NotPlain("nested deeper than %d" % MAX_DEPTH)
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["B", value]
    if kind is int:
        return ["i", hex(value)]
    if kind is float:
        return ["f", value.hex()]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["b", value.hex()]
    for tag, container in _CONTAINERS.items():
        if kind is container:
            return [tag, [encode(item, depth + 1) for item in value]]
    if kind is dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    raise NotPlain("not plain data: %s" % kind.__name__)


def decode(tagged, depth: int = 0):
    """The plain value ``tagged`` stands for; ``Malformed`` for anything that is not exactly the format."""
    if depth > MAX_DEPTH:
        raise Malformed("nested deeper than %d" % MAX_DEPTH)
    if type(tagged) is not list or not tagged or type(tagged[0]) is not str:
        raise Malformed("not a tagged value")
    tag = tagged[0]
    if tag == "n":
        return _arity(tagged, 1) and None
    _arity(tagged, 2)
    payload = tagged[1]
    scalar = _SCALARS.get(tag)
    if scalar is not None:
        return scalar(payload)
    if type(payload) is not list:
        raise Malformed(f"{tag!r} needs a list")
    if tag in _CONTAINERS:
        return _container(_CONTAINERS[tag], [decode(item, depth + 1) for item in payload])
    if tag == "d":
        return _dict(payload, depth)
    raise Malformed(f"unknown tag {tag[:20]!r}")


def _arity(tagged: list, n: int) -> bool:
    if len(tagged) != n:
        raise Malformed("wrong length for tag %r" % tagged[0][:20])
    return True


def _bool(payload):
    if type(payload) is not bool:
        raise Malformed("bool payload")
    return payload


def _int(payload):
    if type(payload) is not str or not _HEX_INT.match(payload):
        raise Malformed("int payload")
    return int(payload, 16)


def _float(payload):
    if type(payload) is not str or len(payload) > 40:
        raise Malformed("float payload")
    try:
        return float.fromhex(payload)
    except (ValueError, OverflowError):
        raise Malformed("float payload") from None


def _str(payload):
    if type(payload) is not str:
        raise Malformed("str payload")
    return payload


def _bytes(payload):
    if type(payload) is not str or not _HEX_BYTES.match(payload):
        raise Malformed("bytes payload")
    return bytes.fromhex(payload)


_SCALARS = {"B": _bool, "i": _int, "f": _float, "s": _str, "b": _bytes}


def _container(kind, items: list):
    try:
        return kind(items)
    except TypeError:  # an unhashable item in a set
        raise Malformed("unhashable item in a %s" % kind.__name__) from None


def _dict(payload: list, depth: int) -> dict:
    result = {}
    for pair in payload:
        if type(pair) is not list or len(pair) != 2:
            raise Malformed("dict item")
        try:
            result[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        except TypeError:
            raise Malformed("unhashable dict key") from None
    return result
