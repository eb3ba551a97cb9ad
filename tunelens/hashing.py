"""One way to fingerprint training data for provenance (an adapter's `tunelens.json`, a gate's `gate.json`):
sha256 of a file, or of a dataset directory (parquet shards, a Hugging Face `save_to_disk` dir)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # read in 1 MiB blocks, so a multi-GB shard never sits in memory whole


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (as `sha256sum` gives), or of every file under a directory (relative name, NUL,
    bytes; sorted, so the file system's order does not matter, and named, so renaming a shard changes it)."""
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
