"""tunelens.hashing: one fingerprint for a data file or a dataset directory."""

import hashlib

import pytest

from tunelens.hashing import file_sha256


def test_a_file_hashes_like_sha256sum(tmp_path):
    path = tmp_path / "pairs.jsonl"
    data = b"x" * (3 << 20) + b"tail"  # several read blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_a_directory_hashes_names_and_bytes_in_sorted_order(tmp_path):
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    (root / "b.arrow").write_bytes(b"BBB")
    (root / "sub" / "a.json").write_bytes(b"{}")
    expected = hashlib.sha256(b"b.arrow\0BBB" + b"sub/a.json\0{}").hexdigest()  # "b.arrow" < "sub/a.json"
    assert file_sha256(root) == expected
    (root / "b.arrow").rename(root / "c.arrow")  # same bytes, other name: another digest
    assert file_sha256(root) != expected


def test_a_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        file_sha256(tmp_path / "nowhere")
