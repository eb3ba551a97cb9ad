"""`data mine` sources: fake standard library and site-packages trees with fake distributions (METADATA and
RECORD written here), licences from metadata, the --licenses allowlist, and drawing from the pool."""

import csv
import email.message
import io
import platform
from pathlib import Path

import pytest

from tunelens.data.mine import MineConfig, draw_pairs, license_allowed, license_of, mine_pairs, sources
from tunelens.errors import UserError


def _function(name: str, doc: str) -> str:
    return f'def {name}(x, y):\n    """{doc}"""\n    total = x + y\n    return total * 2\n\n\n'


def _install(site, name: str, version: str, files: dict[str, str], metadata: dict[str, list[str]]):
    """Write `files` into `site` and a dist-info that owns them, as pip would."""
    for relative, text in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    lines = [f"Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}"]
    # a multi-line value continues on indented lines, as in real METADATA files
    lines += [f"{key}: {value}".replace("\n", "\n        |") for key, values in metadata.items() for value in values]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    record = io.StringIO()
    writer = csv.writer(record)
    for relative in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]:
        writer.writerow([relative, "", ""])
    (info / "RECORD").write_text(record.getvalue())


@pytest.fixture()
def fake_env(tmp_path, monkeypatch):
    """A standard library and a site-packages with three distributions and one file nobody owns."""
    stdlib, site = tmp_path / "lib" / "python3.x", tmp_path / "site-packages"
    (stdlib / "site-packages").mkdir(parents=True)  # another install inside the stdlib: never read
    (stdlib / "textops.py").write_text(_function("join_words", "Join two words with a space between them."))
    (stdlib / "site-packages" / "inner.py").write_text(_function("inner_add", "Add two numbers from inside."))
    _install(site, "mitpkg", "1.2", {"mitpkg/__init__.py": "", "mitpkg/core.py":
             _function("merge_counts", "Merge two counters into one.") +
             _function("split_pairs", "Split a list of pairs into two lists.")},
             {"License-Expression": ["MIT"]})
    _install(site, "gplpkg", "3.0", {"gplpkg.py": _function("parse_header", "Parse a header line into fields.")},
             {"License": ["GPL-3.0-only"]})
    _install(site, "oldpkg", "0.9", {"oldpkg/util.py": _function("pad_text", "Pad text to a fixed width.")},
             {"License": ["Copyright (c) 2001 Someone\nAll rights reserved."],
              "Classifier": ["License :: OSI Approved :: BSD License", "Programming Language :: Python"]})
    (site / "orphan.py").write_text(_function("orphan_sum", "Sum two values that nobody owns."))
    monkeypatch.setattr(sources, "stdlib_dir", lambda: str(stdlib))
    monkeypatch.setattr(sources, "site_package_dirs", lambda: [str(site)])
    return stdlib, site


def _by_name(result):
    return {pair["source"]["qualname"]: pair["source"] for pair in result.pairs}


def test_each_pair_records_distribution_version_licence_module(fake_env):
    result = mine_pairs(["stdlib", "site-packages"], MineConfig(workers=1))
    got = _by_name(result)
    # the walk's order: a directory's files, then its subdirectories, each sorted
    assert list(got) == ["join_words", "parse_header", "orphan_sum", "merge_counts", "split_pairs", "pad_text"]
    assert got["join_words"] == {"distribution": "python", "version": platform.python_version(),
                                 "license": "PSF-2.0", "module": "textops", "qualname": "join_words",
                                 "path": "textops.py", "line": 1}
    assert (got["merge_counts"]["distribution"], got["merge_counts"]["version"], got["merge_counts"]["license"],
            got["merge_counts"]["module"]) == ("mitpkg", "1.2", "MIT", "mitpkg.core")
    assert got["parse_header"]["license"] == "GPL-3.0-only" and got["parse_header"]["module"] == "gplpkg"
    assert got["pad_text"]["license"] == "BSD"  # the licence text is not a name: the classifier is used
    assert got["orphan_sum"]["distribution"] is None and got["orphan_sum"]["license"] == "UNKNOWN"
    assert result.files_skipped["dir-other-install"] == 1  # the stdlib's own site-packages
    assert result.by_distribution() == {"python": 1, "gplpkg": 1, "mitpkg": 2, "oldpkg": 1, "(none)": 1}


def test_licence_allowlist_skips_files_before_reading_them(fake_env):
    result = mine_pairs(["site-packages"], MineConfig(workers=1, licenses=("permissive",)))
    assert sorted(_by_name(result)) == ["merge_counts", "pad_text", "split_pairs"]
    assert dict(result.skipped_licenses) == {"GPL-3.0-only": 1, "UNKNOWN": 1}
    assert result.files_skipped["license"] == 2
    only_gpl = mine_pairs(["site-packages"], MineConfig(workers=1, licenses=("GPL", "UNKNOWN")))
    assert sorted(_by_name(only_gpl)) == ["orphan_sum", "parse_header"]


def test_a_path_inside_site_packages_keeps_its_distribution_and_is_not_mined_twice(fake_env):
    _, site = fake_env
    result = mine_pairs([site / "mitpkg", "site-packages", site / "mitpkg" / "core.py"], MineConfig(workers=1))
    names = [pair["source"]["qualname"] for pair in result.pairs]
    assert names.count("merge_counts") == 1 and names[:2] == ["merge_counts", "split_pairs"]
    assert result.pairs[0]["source"]["module"] == "mitpkg.core"  # named from site-packages, not from mitpkg/
    assert result.pairs[0]["source"]["distribution"] == "mitpkg"


def test_a_directory_named_like_a_keyword_is_a_path(fake_env, tmp_path, monkeypatch):
    (tmp_path / "stdlib").mkdir()
    (tmp_path / "stdlib" / "local.py").write_text(_function("local_add", "Add two local numbers together."))
    monkeypatch.chdir(tmp_path)
    assert [p["source"]["qualname"] for p in mine_pairs(["./stdlib"], MineConfig(workers=1)).pairs] == ["local_add"]
    assert [p["source"]["module"] for p in mine_pairs([Path("stdlib")], MineConfig(workers=1)).pairs] == ["local"]
    assert [p["source"]["qualname"] for p in mine_pairs(["stdlib"], MineConfig(workers=1)).pairs] == ["join_words"]


def test_licence_from_metadata():
    def metadata(**fields):
        message = email.message.Message()
        for key, values in fields.items():
            for value in values if isinstance(values, list) else [values]:
                message[key.replace("_", "-")] = value
        return message

    assert license_of(metadata(License_Expression="Apache-2.0 OR MIT", License="BSD")) == "Apache-2.0 OR MIT"
    assert license_of(metadata(License="Apache 2.0")) == "Apache-2.0"
    assert license_of(metadata(License="3-Clause BSD License")) == "BSD-3-Clause"
    assert license_of(metadata(License="MPL-2.0 AND MIT")) == "MPL-2.0 AND MIT"
    assert license_of(metadata(License="BSD 3-Clause License\n\nCopyright ...",
                               Classifier=["License :: OSI Approved :: BSD License"])) == "BSD"
    assert license_of(metadata(Classifier=["License :: OSI Approved :: MIT License",
                                           "License :: OSI Approved :: Apache Software License"])) == "Apache OR MIT"
    assert license_of(metadata(License="see the LICENSE file in the repository")) == "UNKNOWN"
    assert license_of(metadata()) == "UNKNOWN"


@pytest.mark.parametrize("expression, allow, expected", [
    ("MIT", ("permissive",), True),
    ("BSD-3-Clause", ("permissive",), True),
    ("Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSL-1.0", ("permissive",), True),
    ("GPL-3.0-only", ("permissive",), False),
    ("MIT OR GPL-3.0-only", ("permissive",), True),
    ("MIT AND GPL-3.0-only", ("permissive",), False),
    ("(MIT OR GPL-2.0) AND LGPL-2.1", ("permissive",), False),
    ("(MIT OR GPL-2.0) AND LGPL-2.1", ("permissive", "LGPL"), True),
    ("MPL-2.0", ("permissive",), False),
    ("UNKNOWN", ("permissive",), False),
    ("UNKNOWN", ("UNKNOWN",), True),
    ("(MIT", ("permissive",), False),  # unreadable: judged as UNKNOWN
    ("(MIT", ("permissive", "UNKNOWN"), True),
    ("GPL-3.0-only", ("any",), True),
    ("BSD-2-Clause", ("BSD",), True),
    ("0BSD", ("BSD",), False),  # a family is a prefix up to a dash, not any substring
    ("LGPL-3.0", ("GPL",), False),
    ("mit", ("MIT",), True),
])
def test_licence_allowlist(expression, allow, expected):
    assert license_allowed(expression, allow) is expected


def test_bad_allowlist_is_a_user_error():
    with pytest.raises(UserError, match="--licenses"):
        MineConfig(licenses=())
    with pytest.raises(UserError, match="not a licence id"):
        MineConfig(licenses=("MIT license",))


def _pool(modules: int, per_module: int) -> list[dict]:
    return [{"id": f"m{m}.f{f}", "source": {"distribution": "d", "module": f"m{m}"}, "n": m * 100 + f}
            for m in range(modules) for f in range(per_module)]


def test_draw_holds_out_whole_modules():
    pool = _pool(30, 5)
    train, held = draw_pairs(pool, train=40, heldout=8, seed=3)
    assert len(train) == 40 and len(held) == 8
    held_modules = {p["source"]["module"] for p in held}
    assert len(held_modules) == 8  # one per module
    assert not held_modules & {p["source"]["module"] for p in train}
    assert draw_pairs(pool, train=40, heldout=8, seed=3) == (train, held)
    assert draw_pairs(pool, train=40, heldout=8, seed=4) != (train, held)


def test_draw_checks_lazily_and_says_when_the_pool_is_too_small():
    pool = _pool(200, 10)
    calls = []

    def short(pair):
        calls.append(pair["n"])
        return pair["n"] % 2 == 0

    train, held = draw_pairs(pool, train=20, heldout=5, seed=0, accept=short)
    assert all(p["n"] % 2 == 0 for p in train + held)
    assert len(calls) < 200 and len(calls) == len(set(calls))  # a prefix of the pool, each pair once
    with pytest.raises(UserError, match="mined pool too small"):
        draw_pairs(_pool(3, 2), train=4, heldout=2)
