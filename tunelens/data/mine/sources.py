"""Which files `data mine` reads, and where each came from (distribution, version, licence, module).

A source is `stdlib` (the running Python's standard library), `site-packages` (the running environment's
installed distributions) or a path to any source tree or .py file. Files are listed in a fixed order
(sources in the order given; within each, a directory's files sorted by name, then its subdirectories
sorted by name), so the output never depends on the file system's order. Tests, vendored copies and
private modules are pruned while walking: they are not public API, and vendored code would be mined twice.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import os
import platform
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunelens.data.mine.licenses import UNKNOWN, license_allowed, license_of
from tunelens.errors import UserError

STDLIB, SITE_PACKAGES = "stdlib", "site-packages"
KEYWORDS = (STDLIB, SITE_PACKAGES)
TEST_DIRS = frozenset({"test", "tests", "testing", "idle_test", "unittests", "testsuite"})
VENDORED_DIRS = frozenset({"vendor", "vendored", "_vendor", "_vendored", "extern", "externals", "third_party"})
# Another environment's files inside this one (a stdlib that holds site-packages, say).
INSTALL_DIRS = frozenset({"site-packages", "dist-packages"})


@dataclass(frozen=True)
class Origin:
    """Where a file's code comes from; every pair mined from the file carries it."""

    distribution: str | None  # "python" for the standard library, None when no installed distribution owns the file
    version: str | None
    license: str


@dataclass(frozen=True)
class FileTask:
    """One file to mine: what a worker needs, and nothing it would have to look up itself."""

    path: str  # absolute
    relpath: str  # relative to its source root, as recorded in the pairs
    module: str  # dotted module name
    origin: Origin


@dataclass
class FilePlan:
    tasks: list[FileTask] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> files or directories not read
    skipped_licenses: Counter = field(default_factory=Counter)  # licence -> files left out by --licenses


def plan_files(specs, allow: tuple[str, ...]) -> FilePlan:
    """The files to mine, in order, for source specs (keywords or paths), keeping licences in `allow`."""
    roots = [root for spec in specs for root in _roots(spec)]  # every bad path is reported before any walk
    plan, seen = FilePlan(), set()
    owners: dict[str, Origin] | None = None  # built on the first file no fixed origin covers
    for root, base, fixed in roots:
        for path in _walk(root, plan.skipped):
            real = os.path.realpath(path)
            if real in seen:  # a path given twice, or a tree inside site-packages given again
                continue
            seen.add(real)
            if fixed is None and owners is None:
                owners = _record_index()
            origin = fixed or owners.get(real) or Origin(None, None, UNKNOWN)
            if not license_allowed(origin.license, allow):
                plan.skipped["license"] += 1
                plan.skipped_licenses[origin.license] += 1
                continue
            relpath = os.path.relpath(path, base)
            plan.tasks.append(FileTask(path, Path(relpath).as_posix(), _module_name(relpath), origin))
    return plan


def _roots(spec) -> list[tuple[str, str, Origin | None]]:
    """(directory or file to walk, directory module names are relative to, fixed origin or None).
    Only a string can be a keyword: Path("./stdlib") prints as "stdlib" but names a directory."""
    if isinstance(spec, str) and spec == STDLIB:
        stdlib = stdlib_dir()
        return [(stdlib, stdlib, Origin("python", platform.python_version(), "PSF-2.0"))]
    if isinstance(spec, str) and spec == SITE_PACKAGES:
        return [(d, d, None) for d in site_package_dirs()]
    path = Path(spec)
    if not path.exists():
        raise UserError(f"source {spec}: no such file or directory (a source is {', '.join(KEYWORDS)} or a path)")
    path = path.resolve()
    return [(str(path), str(_package_base(path if path.is_dir() else path.parent)), None)]


def stdlib_dir() -> str:
    return os.path.realpath(sysconfig.get_paths()["stdlib"])


def site_package_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({os.path.realpath(paths[key]) for key in ("purelib", "platlib") if os.path.isdir(paths[key])})


def _package_base(directory: Path) -> Path:
    """The directory a module name is relative to: above every enclosing package (`__init__.py`), so
    `src/pkg/util.py` is `pkg.util` whichever of the two directories was given."""
    while (directory / "__init__.py").is_file() and directory.parent != directory:
        directory = directory.parent
    return directory


def _module_name(relpath: str) -> str:
    parts = list(Path(relpath).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Walking
def is_private(name: str) -> bool:
    """`_foo` is private; `__init__`/`__main__` (dunder) are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dir_skip_reason(name: str) -> str | None:
    rules = ((name in TEST_DIRS or name.startswith("test_"), "test"), (name in VENDORED_DIRS, "vendored"),
             (name in INSTALL_DIRS, "other-install"), (name == "__pycache__" or name.startswith("."), "not-a-package"),
             (is_private(name), "private"),
             (not name.isidentifier(), "not-a-package"))  # foo.dist-info, scipy.libs: not importable
    return next((reason for applies, reason in rules if applies), None)


def _file_skip_reason(name: str) -> str | None:
    stem = name[:-3]
    rules = ((stem.startswith("test_") or stem.endswith("_test") or stem in ("test", "tests", "conftest"), "test"),
             (is_private(stem), "private"), (not stem.isidentifier(), "not-a-module"))
    return next((reason for applies, reason in rules if applies), None)


def _walk(root: str, skipped: Counter):
    """Yield the minable .py files under root (or root itself when it is a file), sorted."""
    if os.path.isfile(root):
        yield root  # named explicitly: the caller asked for this file, whatever its name
        return
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [name for name in sorted(subdirs) if _kept(_dir_skip_reason(name), skipped, "dir-")]
        for name in sorted(names):
            if name.endswith(".py") and _kept(_file_skip_reason(name), skipped):
                yield os.path.join(directory, name)


def _kept(skip_reason: str | None, skipped: Counter, prefix: str = "") -> bool:
    """True when nothing skips the name; else count it under its reason."""
    if skip_reason:
        skipped[prefix + skip_reason] += 1
    return not skip_reason


# Distributions
def _record_index() -> dict[str, Origin]:
    """File -> origin of its installed distribution, from every distribution's RECORD: it lists each file
    exactly, so namespace packages shared by several distributions (google, nvidia) are attributed right."""
    index: dict[str, Origin] = {}
    directories = list(dict.fromkeys(site_package_dirs() + [p for p in sys.path if os.path.isdir(p)]))
    for dist in importlib.metadata.distributions(path=directories):
        record = dist.read_text("RECORD")
        if not record:
            continue
        metadata = dist.metadata
        origin = Origin(metadata["Name"], metadata["Version"], license_of(metadata))
        location = os.path.realpath(dist.locate_file(""))
        for row in csv.reader(io.StringIO(record)):
            if row and row[0].endswith(".py"):
                # normpath, not realpath: one resolved directory plus a relative name needs no syscalls
                path = os.path.normpath(os.path.join(location, row[0]))
                index.setdefault(path, origin)  # the first distribution on the path wins, as at import
    return index
