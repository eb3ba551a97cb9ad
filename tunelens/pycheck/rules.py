"""What counts as Python 2 and how a problem is reported: shared by the syntax-tree checks of parsable code
(`tunelens.pycheck.check`) and the token scan of code Python 3 cannot parse (`tunelens.pycheck.tokens`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Builtins that exist only in Python 2. A snippet that defines or imports one of them is fine.
PY2_BUILTINS = frozenset({"xrange", "raw_input", "unicode", "basestring", "long", "unichr", "execfile"})
# dict methods that Python 3 removed; `d.has_key(k)` parses in Python 3 and fails when run.
PY2_METHODS = frozenset({"has_key", "iteritems", "itervalues", "iterkeys",
                         "viewitems", "viewkeys", "viewvalues"})
# module attributes that Python 3 removed
PY2_MODULE_ATTRS = {"string": frozenset({"letters", "lowercase", "uppercase"}),
                    "sys": frozenset({"maxint"})}
# `from <compat> import *` may bring any of the names above, so it counts as defining them.
COMPAT_MODULES = frozenset({"six.moves", "past.builtins", "builtins", "future.builtins", "__builtin__"})

SYNTAX_ERROR = "syntax-error"


@dataclass(frozen=True)
class Finding:
    """One problem in a snippet: a code such as `py2-print`, a readable message, and its line (1-based)."""

    code: str
    message: str
    line: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def sorted_findings(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, line), the first one found, sorted by line."""
    unique: dict[tuple, Finding] = {}
    for finding in findings:
        unique.setdefault((finding.code, finding.line), finding)
    return sorted(unique.values(), key=lambda f: (f.line or 0, f.code))
