"""Atomic, durable file writes (a reader never sees a half-written output, a crash leaves the old one), and
the one JSON and JSONL readers. Durable means fsynced: the bytes before the rename and the directory after it,
so a power cut after `atomic_*` returns cannot bring back the old file or an empty one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from tunelens.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits in the target's directory so os.replace is a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; outputs get the usual permissions of a new file instead.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line; returns the number of rows written."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Build a directory in a staging path beside `target`, then swap it in whole: a reader sees the old one
    or the complete new one; when the block raises, the staging directory is removed and `target` left as it
    was. All built is fsynced before the swap, the parent after it. A process killed mid-way leaves
    `.<name>.tmp-*` / `.<name>.old-*` behind: `staging_dirs_of(target)` finds them."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700
        fsync_tree(staging)
        trash = None
        if target.exists():
            # Move the old one aside first: os.replace cannot overwrite a non-empty directory.
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, trash / target.name)
        os.replace(staging, target)
        fsync_dir(target.parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under `root`, then every directory bottom-up (a file's name lives in its directory)."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            with open(Path(folder) / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(folder)


def staging_dirs_of(target: str | Path) -> list[Path]:
    """Staging and to-be-deleted directories `atomic_directory(target)` left behind when killed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefixes = (f".{target.name}.tmp-", f".{target.name}.old-")
    return sorted(p for p in target.parent.iterdir() if p.is_dir() and p.name.startswith(prefixes))


def remove_staging_dirs(paths: Iterable[Path]) -> list[Path]:
    """Remove the given leftovers; returns those removed."""
    paths = list(paths)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return [path for path in paths if not path.exists()]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | Path, what: str = "JSON"):
    """The value of a UTF-8 JSON file; a missing file ("no such `what` file") or bad JSON is a UserError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def read_jsonl_numbered(path: str | Path, torn_tail: bool = False) -> list[tuple[int, object]]:
    """(line number, value) of every non-blank line of a UTF-8 JSONL file; a line that is not JSON is a
    UserError naming file and line, except with `torn_tail` a last line without its newline (a writer killed
    mid-line), which is dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read it as UTF-8 text ({err})") from None
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            if torn_tail and number == len(lines) and not text.endswith("\n"):
                break
            raise UserError(f"{path}:{number}: not a JSON line ({err.msg})") from None
    return rows


def read_jsonl(path: str | Path, torn_tail: bool = False) -> list:
    """The values of a JSONL file (see `read_jsonl_numbered`)."""
    return [value for _, value in read_jsonl_numbered(path, torn_tail)]
