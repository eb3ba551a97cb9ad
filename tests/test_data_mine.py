"""`data mine`: which functions become pairs, what the pairs look like, and that they pass lint."""

import json
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tunelens.data.lint import lint_file
from tunelens.data.mine import MineConfig, docstring_summary, mine_pairs, mine_to_file, write_instruction
from tunelens.errors import UserError

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
    result = mine_pairs([source_tree])
    ids = [pair["id"] for pair in result.pairs]
    assert ids == ["mined:pkg.copy_of_util.join_parts", "mined:pkg.copy_of_util.home_file",
                   "mined:pkg.copy_of_util.dump_sorted"]
    assert result.files_scanned == 4 and result.files_unreadable == 1  # test_util.py is never read
    assert dict(result.skipped) == {"private": 2, "no-docstring": 2, "module-state": 6, "stub": 2, "test": 2,
                                    "duplicate": 3}
    assert result.functions_seen == 2 * 10  # the ten top-level functions of util.py, twice


def test_pair_has_imports_instruction_and_source(source_tree):
    pairs = {p["id"].rsplit(".", 1)[1]: p for p in mine_pairs([source_tree / "pkg" / "util.py"]).pairs}
    instruction, completion = (m["content"] for m in pairs["dump_sorted"]["messages"])
    assert completion.startswith("import json as js\nfrom collections import OrderedDict\n\n\ndef dump_sorted(obj):")
    assert "dump_sorted" in instruction and "JSON" in instruction
    assert pairs["home_file"]["messages"][1]["content"].startswith("import os\n\n\ndef home_file(name):")
    assert pairs["join_parts"]["messages"][1]["content"].startswith("def join_parts(")
    assert pairs["join_parts"]["source"] == "util.py:10"


def test_methods_on_request(source_tree):
    ids = [p["id"] for p in mine_pairs([source_tree / "pkg" / "util.py"], MineConfig(include_methods=True)).pairs]
    assert "mined:util.Box.size" in ids


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
