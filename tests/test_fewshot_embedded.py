"""End to end on real parts: a MiniLM gate built from pairs by the CLI, SmolLM2 shown the nearest pair."""

import json

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

PAIRS = [
    {"instruction": "Write a Python function that reverses a string.",
     "output": "def reverse_text(s):\n    return s[::-1]"},
    {"instruction": "Write a Python function that returns the largest number in a list.",
     "output": "def largest(xs):\n    return max(xs)"},
    {"instruction": "Write a Python function that counts the words in a sentence.",
     "output": "def count_words(s):\n    return len(s.split())"},
]
# No word in common with the nearest instruction but "a": MiniLM finds it by meaning, not by spelling.
QUERY = "Give me code to flip the order of characters in some text."


def test_generate_shows_the_semantically_nearest_pair(tmp_path):
    from tunelens.cli import app
    from tunelens.model.specs import load_tokenizer
    from tunelens.model.prompts import encode_prompt

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    runner = CliRunner()
    built = runner.invoke(app, ["gate", "build", "--data", str(data), "--out", str(tmp_path / "gate")])
    assert built.exit_code == 0, built.output
    out = tmp_path / "gen.json"
    result = runner.invoke(app, ["generate", "-m", "smollm2-135m", "-p", QUERY, "--max-new-tokens", "48",
                                 "--few-shot", "1", "--few-shot-index", str(tmp_path / "gate"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    [shown] = record["few_shot"]
    assert shown["instruction"] == PAIRS[0]["instruction"] and shown["response"] == PAIRS[0]["output"]
    assert 0.3 < shown["similarity"] < 1.0
    tokenizer = load_tokenizer("smollm2-135m")
    assert record["prompt_tokens"] > len(encode_prompt(tokenizer, QUERY)) + 10  # the example is in the context
    assert PAIRS[0]["output"] in record["rendered_prompt"]
    print(f"\nsimilarity {shown['similarity']}; answer: {record['text']!r}")
