"""A distribution's licence as one SPDX-style expression, and the `--licenses` allowlist over it.

Mined pairs are training data, and code keeps its licence when a model learns from it, so every pair
records where its licence came from. Package metadata states it three ways, in order of precision:
`License-Expression` (PEP 639, already SPDX), the free-text `License` field (often a name such as
"Apache 2.0", sometimes the whole licence text) and trove classifiers ("License :: OSI Approved :: MIT
License"). The first usable one wins; "UNKNOWN" when none is.
"""

from __future__ import annotations

import re
from email.message import Message

from tunelens.errors import UserError

UNKNOWN = "UNKNOWN"
ANY = "any"
PERMISSIVE = "permissive"
# Licences that allow reuse, modification and redistribution without passing on copyleft terms.
# A family name (BSD, Apache) stands for every versioned id that starts with it.
PERMISSIVE_IDS = ("MIT", "BSD", "0BSD", "Apache", "ISC", "PSF-2.0", "Python-2.0", "CNRI-Python", "Zlib",
                  "Unlicense", "CC0-1.0", "HPND", "BSL-1.0", "MIT-0", "MIT-CMU", "NCSA", "X11")

# Free-text names (lower-cased, punctuation collapsed) and classifier names mapped to SPDX ids.
_NAMES = {
    "mit": "MIT", "mit license": "MIT", "the mit license": "MIT", "expat": "MIT",
    "bsd": "BSD", "bsd license": "BSD", "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause",
    "3 clause bsd license": "BSD-3-Clause", "bsd 3 clause": "BSD-3-Clause", "bsd 3 clause license": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause", "bsd 2 clause": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause",
    "apache": "Apache", "apache software license": "Apache", "apache license": "Apache",
    "apache 2": "Apache-2.0", "apache 2 0": "Apache-2.0", "apache 2 0 license": "Apache-2.0",
    "apache license 2 0": "Apache-2.0", "apache license version 2 0": "Apache-2.0",
    "apache software license 2 0": "Apache-2.0",
    "isc": "ISC", "isc license": "ISC", "isc license iscl": "ISC",
    "psf": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "mozilla public license 2 0 mpl 2 0": "MPL-2.0", "mpl 2 0": "MPL-2.0",
    "gnu general public license v2 gplv2": "GPL-2.0", "gnu general public license v3 gplv3": "GPL-3.0",
    "gnu general public license v2 or later gplv2": "GPL-2.0-or-later",
    "gnu general public license v3 or later gplv3": "GPL-3.0-or-later",
    "gnu lesser general public license v2 or later lgplv2": "LGPL-2.0-or-later",
    "gnu lesser general public license v3 lgplv3": "LGPL-3.0",
    "gnu library or lesser general public license lgpl": "LGPL",
    "the unlicense unlicense": "Unlicense", "unlicense": "Unlicense",
    "zlib": "Zlib", "zlib libpng license": "Zlib", "historical permission notice and disclaimer hpnd": "HPND",
    "public domain": "public-domain", "cc0 1 0 universal cc0 1 0 public domain dedication": "CC0-1.0",
}
_SPDX_TOKEN = re.compile(r"^[A-Za-z0-9.+-]+$")
_OPERATORS = frozenset({"AND", "OR", "WITH"})


def license_of(metadata: Message) -> str:
    """The licence of a distribution from its core metadata, as an SPDX-style expression."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = (metadata.get("License") or "").strip()
    named = _from_text(text) if text and "\n" not in text and len(text) <= 80 else None
    if named:
        return named
    classified = [_from_text(c.split("::")[-1]) for c in metadata.get_all("Classifier") or ()
                  if c.startswith("License ::") and c.count("::") >= 2]
    ids = sorted({c for c in classified if c})
    return " OR ".join(ids) if ids else UNKNOWN  # several licence classifiers offer a choice


def _from_text(text: str) -> str | None:
    """An SPDX id or expression for a short licence name, or None when it is not recognisable."""
    text = text.strip()
    key = " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
    if key in _NAMES:
        return _NAMES[key]
    if _is_expression(text):  # already SPDX, e.g. "BSD-3-Clause" or "MPL-2.0 AND MIT"
        return text
    return None


def _is_expression(text: str) -> bool:
    tokens = _tokens(text)
    words = [t for t in tokens if t not in "()"]
    return bool(words) and all(_SPDX_TOKEN.match(t) for t in words) and \
        any(t not in _OPERATORS for t in words) and all(
            (t in _OPERATORS) == (i % 2 == 1) for i, t in enumerate(words))


def _tokens(text: str) -> list[str]:
    return re.findall(r"[()]|[^\s()]+", text)


# The allowlist
def parse_allowlist(items) -> tuple[str, ...]:
    """Normalise `--licenses` values: `any`, `permissive`, `UNKNOWN`, SPDX ids or family names (BSD)."""
    allow = tuple(item.strip() for item in items if item and item.strip())
    if not allow:
        raise UserError("--licenses needs at least one name (any, permissive, or SPDX ids such as MIT)")
    for item in allow:
        if not _SPDX_TOKEN.match(item):
            raise UserError(f"--licenses {item!r}: not a licence id (use any, permissive, UNKNOWN or e.g. MIT)")
    return allow


def license_allowed(expression: str, allow: tuple[str, ...]) -> bool:
    """Whether code under `expression` may be used, given the allowlist.

    SPDX precedence: OR offers a choice (one allowed branch is enough), AND needs every part, WITH adds an
    exception to the licence before it (judged by that licence). An expression that cannot be read is
    treated as UNKNOWN.
    """
    if any(item.lower() == ANY for item in allow):
        return True
    ids = set()
    for item in allow:
        ids.update(PERMISSIVE_IDS if item.lower() == PERMISSIVE else (item,))
    try:
        return _evaluate(_tokens(expression), ids)
    except ValueError:
        return _id_allowed(UNKNOWN, ids)


def _id_allowed(license_id: str, allowed_ids: set[str]) -> bool:
    lowered = license_id.lower()
    return any(lowered == a.lower() or lowered.startswith(a.lower() + "-") for a in allowed_ids)


def _evaluate(tokens: list[str], allowed_ids: set[str]) -> bool:
    """Recursive descent over `or := and (OR and)*; and := atom (AND atom)*; atom := ( or ) | ID [WITH ID]`;
    ValueError when the expression cannot be read."""
    tokens = list(tokens)

    def take() -> str:
        if not tokens:
            raise ValueError("unexpected end")
        return tokens.pop(0)

    def chain(operator: str, part, combine) -> bool:  # every part is parsed: no short circuit
        values = [part()]
        while tokens[:1] == [operator]:
            take()
            values.append(part())
        return combine(values)

    def atom() -> bool:
        token = take()
        if token == "(":
            value = chain("OR", lambda: chain("AND", atom, all), any)
            if take() != ")":
                raise ValueError("unbalanced parenthesis")
            return value
        if token in _OPERATORS or token == ")":
            raise ValueError(f"unexpected {token}")
        if tokens[:1] == ["WITH"]:
            take(), take()
        return _id_allowed(token, allowed_ids)

    value = chain("OR", lambda: chain("AND", atom, all), any)
    if tokens:
        raise ValueError("trailing tokens")
    return value
