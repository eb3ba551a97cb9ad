"""`data mine` on this project's real environment: the standard library and the installed distributions
give at least the 5,000 lint-clean pairs the demo's pool needs (counts vary with what is installed)."""

import pytest

from tunelens.data.lint import lint_file
from tunelens.data.mine import MineConfig, mine_to_file

pytestmark = pytest.mark.slow  # parses every installed distribution: about 45 s of CPU, then lints the pairs


def test_stdlib_and_site_packages_give_5000_lint_clean_pairs(tmp_path):
    result = mine_to_file(["stdlib", "site-packages"], tmp_path / "pairs.jsonl", MineConfig())
    assert len(result.pairs) >= 5000
    assert result.functions_seen == len(result.pairs) + sum(result.skipped.values())
    distributions = result.by_distribution()
    assert distributions["python"] >= 1000 and len(distributions) >= 20
    assert all(pair["source"]["license"] for pair in result.pairs)
    lint = lint_file(tmp_path / "pairs.jsonl", tmp_path / "lint")
    assert lint.total == len(result.pairs) and lint.rejected == 0, lint.by_reason
