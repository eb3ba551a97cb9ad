"""`data pushback`: broken instructions whose responses name the conflict and ask a question."""

import json
import random

import pytest

from tunelens.data.lint import check_response, lint_file
from tunelens.data.pushback import KINDS, PushbackConfig, add_pushback_file, distinct_trigram_ratio, make_pushback
from tunelens.errors import UserError
from tunelens.data.records import Pair, pair_to_record

CODE = '''def merge_counts(left, right, limit=10):
    """Merge two word-count dictionaries, keeping the largest counts."""
    merged = dict(left)
    for word, count in right.items():
        merged[word] = max(merged.get(word, 0), count)
    return merged
'''
PAIR = Pair("p1", "Write a Python function `merge_counts(left, right, limit=10)` that merges two word-count "
                  "dictionaries, keeping the largest counts.", CODE, 1, {})


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_names_the_conflict_and_asks(kind):
    record = make_pushback(PAIR, kind, random.Random(0))
    instruction, response = (m["content"] for m in record["messages"])
    assert instruction.startswith(PAIR.instruction) and len(instruction) > len(PAIR.instruction)
    assert "?" in response
    assert "merge_counts" in response or "merge" in response
    assert "```" not in response and "\n" not in response  # one paragraph of prose, no code block
    assert check_response(response) == []  # lint sees prose, not code
    assert record["pushback"] == {"kind": kind, "source_id": "p1"}


def test_specific_details_reach_the_response():
    rng = random.Random(1)
    signature = make_pushback(PAIR, "impossible-signature", rng)["messages"][1]["content"]
    assert "duplicate" in signature or "keyword" in signature or "without a default" in signature
    example = make_pushback(PAIR, "contradictory-example", rng)["messages"]
    call = example[0]["content"].split("For example, `")[1].split("`")[0]
    assert call.startswith("merge_counts(") and call in example[1]["content"]
    name = make_pushback(PAIR, "misleading-name", rng)["messages"][1]["content"]
    assert "`is_merge_counts`" in name or "`split_counts`" in name


def _pairs_file(tmp_path, n=30):
    records = []
    for i in range(n):
        code = f"def scale_{i}(values, factor={i}):\n    \"\"\"Multiply each value by factor {i}.\"\"\"\n" \
               f"    return [v * factor for v in values]\n"
        records.append(pair_to_record(f"Write `scale_{i}(values, factor={i})` that multiplies each value by {i}.", code))
    records.append(pair_to_record("Say hi.", "Hello! What can I help with?"))  # no function: not a source
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_file_counts_kinds_and_lint(tmp_path):
    path = _pairs_file(tmp_path)
    result = add_pushback_file(path, tmp_path / "out.jsonl", PushbackConfig(rate=0.4, seed=2))
    assert (result.total_in, result.added, result.eligible) == (31, round(0.4 * 31), 30)
    assert set(result.by_kind) == set(KINDS) and sum(result.by_kind.values()) == 12
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 31 + 12 and all("pushback" in row for row in rows[31:])
    assert len({row["id"] for row in rows[31:]}) == 12
    assert 0 < result.distinct_trigram_ratio <= 1
    lint = lint_file(tmp_path / "out.jsonl", tmp_path / "lint")
    assert lint.rejected == 0, lint.by_reason


def test_distinct_trigram_ratio_by_hand():
    assert distinct_trigram_ratio(["a b c d", "a b c"]) == pytest.approx(2 / 3)
    assert distinct_trigram_ratio(["same words here"] * 4) == pytest.approx(1 / 4)
    assert distinct_trigram_ratio([]) == 0.0


def test_no_function_anywhere_is_a_user_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(pair_to_record("Say hi.", "Hello there, friend of mine.")) + "\n")
    with pytest.raises(UserError, match="no pair has a Python function"):
        add_pushback_file(path, tmp_path / "o.jsonl", PushbackConfig(rate=1.0))
