"""`data mine`: which functions become pairs, what the pairs look like, that they pass lint, and that the
output does not depend on the number of workers."""

import json
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tunelens.data.lint import lint_file
from tunelens.data.mine import MineConfig, docstring_summary, mine_pairs, mine_to_file, write_instruction
from tunelens.errors import UserError

FUNCTIONS_ONLY = MineConfig(include_methods=False, workers=1)

MODULE = textwrap.dedent('''
    import os
    import json as js
    from collections import OrderedDict
    from ._private import helper

    LIMIT = 10


    def join_parts(parts, sep="/"):
        """Join path parts with a separator, skipping empty parts."""
        return sep.join(p for p in parts if p)


    def home_file(name):
        """Return the path of a file in the user's home directory."""
        return os.path.join(os.path.expanduser("~"), name)


    def dump_sorted(obj):
        """Serialize an object to JSON with sorted keys."""
        return js.dumps(OrderedDict(sorted(obj.items())))


    def _private(x):
        """Not public."""
        return x


    def undocumented(x):
        return x * 2


    def capped(x):
        """Cap a value at the module limit."""
        return min(x, LIMIT)


    def bump():
        """Increase the module counter."""
        global LIMIT
        LIMIT += 1


    def stub(x):
        """To be written."""
        raise NotImplementedError


    def uses_relative(x):
        """Call the private helper."""
        return helper(x)


    def test_something():
        """A test."""
        assert True


    class Box:
        def size(self):
            """Return the number of items in the box."""
            return len(self.items)
''')


@pytest.fixture()
def source_tree(tmp_path):
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "util.py").write_text(MODULE)
    (package / "copy_of_util.py").write_text(MODULE)  # every function again: duplicates
    (package / "test_util.py").write_text('def helper_in_tests():\n    """Help."""\n    return 1\n')
    (package / "broken.py").write_text("def f(:\n")
    return tmp_path / "src"


def test_only_self_contained_public_documented_functions(source_tree):
    result = mine_pairs([source_tree], FUNCTIONS_ONLY)
    ids = [pair["id"] for pair in result.pairs]
    assert ids == ["mined:pkg.copy_of_util.join_parts", "mined:pkg.copy_of_util.home_file",
                   "mined:pkg.copy_of_util.dump_sorted"]
    assert result.files_scanned == 4 and result.files_unreadable == 1  # test_util.py is never read
    assert dict(result.files_skipped) == {"test": 1}
    assert dict(result.skipped) == {"private": 2, "no-docstring": 2, "module-state": 6, "stub": 2, "test": 2,
                                    "duplicate": 3}
    assert result.functions_seen == 2 * 10  # the ten top-level functions of util.py, twice
    assert result.functions_seen == len(result.pairs) + sum(result.skipped.values())


def test_pair_has_imports_instruction_and_source(source_tree):
    pairs = {p["id"].rsplit(".", 1)[1]: p for p in mine_pairs([source_tree / "pkg" / "util.py"], FUNCTIONS_ONLY).pairs}
    instruction, completion = (m["content"] for m in pairs["dump_sorted"]["messages"])
    assert completion.startswith("import json as js\nfrom collections import OrderedDict\n\n\ndef dump_sorted(obj):")
    assert "dump_sorted" in instruction and "JSON" in instruction
    assert pairs["home_file"]["messages"][1]["content"].startswith("import os\n\n\ndef home_file(name):")
    assert pairs["join_parts"]["messages"][1]["content"].startswith("def join_parts(")
    # a file given alone is still named from above its package, and no installed distribution owns it
    assert pairs["join_parts"]["source"] == {"distribution": None, "version": None, "license": "UNKNOWN",
                                             "module": "pkg.util", "qualname": "join_parts",
                                             "path": "pkg/util.py", "line": 10}


def test_methods_by_default(source_tree):
    pairs = mine_pairs([source_tree / "pkg" / "util.py"], MineConfig(workers=1)).pairs
    size = [p for p in pairs if p["id"] == "mined:pkg.util.Box.size"]
    assert len(size) == 1 and size[0]["source"]["qualname"] == "Box.size"
    assert "mined:pkg.util.Box.size" not in [p["id"] for p in mine_pairs([source_tree], FUNCTIONS_ONLY).pairs]


def test_instruction_phrasings_vary_and_use_the_docstring():
    import ast

    node = ast.parse("def clamp(x, lo, hi):\n    '''Clamp x into [lo, hi].'''\n    return x\n").body[0]
    texts = {write_instruction(node, "Clamp x into [lo, hi].", "clamp", None, seed=str(i)) for i in range(40)}
    assert len(texts) >= 5
    assert all("clamp" in t for t in texts)
    assert any("clamps x into [lo, hi]." in t for t in texts)  # third person
    assert docstring_summary("clamp(x, lo, hi) -> int\n\nClamp x into\n  the range.\n\nMore.") == \
        "Clamp x into the range."
    assert docstring_summary("Hi.") is None


def test_mined_stdlib_modules_pass_lint(tmp_path):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [stdlib / "operator.py", stdlib / "genericpath.py", stdlib / "posixpath.py", stdlib / "json"]
    result = mine_to_file(sources, tmp_path / "pairs.jsonl", MineConfig(include_methods=True))
    assert len(result.pairs) >= 50
    lint = lint_file(tmp_path / "pairs.jsonl", tmp_path / "lint")
    assert lint.total == len(result.pairs) and lint.rejected == 0, lint.by_reason
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert all(row["messages"][0]["role"] == "user" for row in rows)


def test_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        mine_pairs([tmp_path / "nope"])


def _function(name: str, body_lines: int, doc: str = "Return a value computed from x.") -> str:
    body = "".join(f"    x = x + {i}\n" for i in range(body_lines))
    return f'def {name}(x):\n    """{doc}"""\n{body}    return x\n\n\n'


@pytest.fixture()
def many_files(tmp_path):
    """Enough distinct files for the pool to be used, each with two distinct functions."""
    root = tmp_path / "many"
    for index in range(40):
        package = root / f"pkg{index % 4}"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / f"mod{index:02d}.py").write_text(
            _function(f"scale_{index}", 1 + index % 5, f"Scale x by step {index} of the schedule.")
            + _function(f"shift_{index}", 2, f"Shift x along axis number {index} of the grid."))
    return root


def test_workers_do_not_change_the_output(many_files, tmp_path):
    one = mine_to_file([many_files], tmp_path / "one.jsonl", MineConfig(workers=1))
    two = mine_to_file([many_files], tmp_path / "two.jsonl", MineConfig(workers=2))
    assert one.workers == 1 and two.workers == 2
    assert len(one.pairs) == 80
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    paths = [p["source"]["path"] for p in one.pairs]
    assert paths == sorted(paths)  # the walk order (here: sorted), whatever order the file system lists them in
    assert one.summary()["skipped"] == two.summary()["skipped"]


def test_limit_stops_and_counts_reconcile(many_files):
    result = mine_pairs([many_files], MineConfig(workers=1, limit=5))
    assert len(result.pairs) == 5
    assert result.files_scanned == 4  # an empty __init__.py, then two pairs per file: the 3rd module reaches 5
    assert result.skipped["over-limit"] == 1
    assert result.functions_seen == len(result.pairs) + sum(result.skipped.values())


def test_length_bounds(many_files):
    # scale_i has 1 + i % 5 body lines: 4 to 8 lines in all with signature, docstring and return
    short = mine_pairs([many_files], MineConfig(workers=1, max_lines=5))
    assert {p["messages"][1]["content"].count("\n") for p in short.pairs} <= {4, 5}
    assert short.skipped["too-long"] == 24  # scale_i with 2, 3 or 4 body lines: 8 files each
    long_only = mine_pairs([many_files], MineConfig(workers=1, min_lines=7))
    assert len(long_only.pairs) == 16 and long_only.skipped["too-short"] == 64


def test_tests_vendored_and_private_modules_are_never_read(tmp_path):
    root = tmp_path / "tree"
    body = _function("scale", 1, "Scale x by the usual factor.")
    for relative in ("pkg/__init__.py", "pkg/api.py", "pkg/_impl.py", "pkg/__main__.py", "pkg/_internal/core.py",
                     "pkg/_vendor/six.py", "pkg/vendored/lib.py", "pkg/tests/test_api.py", "pkg/testing/helpers.py",
                     "pkg/test_api.py", "pkg/api_test.py", "pkg/conftest.py", "pkg.libs/x.py", "pkg/my-script.py"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("scale", "scale_" + path.stem.replace("-", "_")))
    result = mine_pairs([root], MineConfig(workers=1))
    assert sorted(p["source"]["path"] for p in result.pairs) == ["pkg/__init__.py", "pkg/__main__.py", "pkg/api.py"]
    assert dict(result.files_skipped) == {
        "private": 1, "test": 3, "not-a-module": 1,
        "dir-private": 1, "dir-vendored": 2, "dir-test": 2, "dir-not-a-package": 1}


def test_output_is_replaced_atomically_with_a_summary(many_files, tmp_path):
    out = tmp_path / "out" / "pairs.jsonl"
    out.parent.mkdir()
    out.write_text("old\n")
    with pytest.raises(UserError):
        mine_to_file([tmp_path / "missing"], out, MineConfig(workers=1))
    assert out.read_text() == "old\n"  # a failed run leaves the previous file alone
    result = mine_to_file([many_files], out, MineConfig(workers=1))
    assert len(out.read_text().splitlines()) == len(result.pairs) == 80
    summary = json.loads((tmp_path / "out" / "pairs.summary.json").read_text())
    assert summary["pairs"] == 80 and summary["files_scanned"] == 44 and summary["by_distribution"] == {"(none)": 80}
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl", "pairs.summary.json"]  # no temp files


def test_cli_sources_counts_and_bad_path(many_files, tmp_path):
    from typer.testing import CliRunner

    from tunelens.cli import app

    runner = CliRunner()
    out = tmp_path / "cli.jsonl"
    ok = runner.invoke(app, ["data", "mine", "--source", f"{many_files / 'pkg0'},{many_files / 'pkg1'}",
                             str(many_files / "pkg2"), "--workers", "1", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "60 pairs from 33 files" in ok.output  # three packages of ten modules and an __init__ each
    assert "files not read: none" in ok.output and "pairs by distribution (top 10): (none) 60" in ok.output
    bad = runner.invoke(app, ["data", "mine", "--source", f"stdlib,{tmp_path / 'nope'}", "--out", str(out)])
    assert bad.exit_code == 2
    assert f"source {tmp_path / 'nope'}: no such file or directory" in bad.output
    assert "Traceback" not in bad.output


def test_a_repeated_qualified_name_gets_a_distinct_id():
    # A property's getter and setter share one qualified name (seen in scikit-learn's kernels); lint
    # would quarantine the repeated id, so the merge numbers the later one.
    from tunelens.data.mine.config import MineConfig
    from tunelens.data.mine.run import MineResult, _Merger
    from tunelens.data.records import pair_to_record

    merger = _Merger(MineConfig(), MineResult(pairs=[]))
    for body in ("return self._w", "self._w = int(value)"):
        pair = pair_to_record("Width of the box: " + body, f"def width(self):\n    {body}\n", id="mined:m.Box.width")
        merger.result.pairs.append({**pair, "id": merger._unique_id(pair["id"])})
    assert [p["id"] for p in merger.result.pairs] == ["mined:m.Box.width", "mined:m.Box.width#2"]
