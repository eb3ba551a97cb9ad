"""One way to fingerprint training data: sha256 of a file, or of a whole directory.

Provenance (`tunelens.json` of an adapter, `gate.json` of a gate) records which data a stage read, and
that data may be one file or a dataset directory (parquet shards, a Hugging Face `save_to_disk` dir).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # read in 1 MiB blocks, so a multi-GB shard never sits in memory whole


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, or of every file under a directory (relative name, NUL, bytes; sorted).

    A file hashes to the same digest as `sha256sum` gives. Names take part for a directory so that
    renaming a shard changes the digest; sorting makes the digest independent of the file system's order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path}: no such file or directory")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()
