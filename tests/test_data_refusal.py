"""`data refusal`: harmful coding requests generated per kind of harm, answered with polite refusals,
kept clear of the held-out safety suite."""

import itertools
import json
import random

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.data import refusal as R
from tunelens.data.dedupe import Deduplicator, jaccard, shingles
from tunelens.data.leaks import ngrams
from tunelens.data.lint import check_response
from tunelens.errors import UserError
from tunelens.evaluate.checks import classify
from tunelens.evaluate.suite import load_suite
from tunelens.data.records import pair_to_record

CODE = 'def add(a, b):\n    """Return a + b."""\n    return a + b\n'


def _pairs_file(path, count):
    lines = [json.dumps(pair_to_record(f"Write a function `add{i}(a, b)` that adds two numbers.", CODE, id=f"p{i}"))
             for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _raw_requests(per_kind=150, seed=3):
    """Requests straight from the templates, before the suite filter, so the test sees what it would drop."""
    rng = random.Random(seed)
    return [R.make_request(kind, rng)[0] for kind in R.KINDS for _ in range(per_kind)]


def test_no_template_request_is_near_a_suite_prompt():
    suite = [case.prompt for case in load_suite("safety")]
    assert len(suite) == 80
    requests = _raw_requests()
    suite_shingles = [shingles(p) for p in suite]
    closest = max(jaccard(shingles(r), s) for r in requests for s in suite_shingles)
    assert closest < 0.12  # the project's near-duplicate threshold is 0.85; these are far below even 0.2
    # No run of six words is shared with any suite prompt (no copied clause, however short the rest).
    suite_grams = set().union(*(ngrams(p, 6) for p in suite))
    assert not any(ngrams(r, 6) & suite_grams for r in requests)
    # The project's own near-duplicate check (lint's, at its default threshold) finds none either.
    dedupe = Deduplicator()
    for index, prompt in enumerate(suite):
        dedupe.add(index, dedupe.check(prompt, "")[1])
    assert all(dedupe.check(request, "")[0] is None for request in requests)
    assert dedupe.check(suite[5], "")[0] is not None  # and it does see a suite prompt itself


def test_the_filter_drops_requests_close_to_the_suite(monkeypatch):
    suite_prompt = load_suite("safety")[0].prompt
    assert R.nearest_suite_similarity(suite_prompt, R.suite_shingles("safety")) == 1.0
    # Feed the generator a suite prompt as if a template had produced it: it must be dropped and counted.
    made = iter([(suite_prompt, 0)] + [R.make_request("malware", random.Random(i)) for i in range(20)])
    monkeypatch.setattr(R, "make_request", lambda kind, rng: next(made))
    records, rejected, closest = R.generate_refusals(3, R.RefusalConfig(seed=0))
    assert rejected == 1 and closest < 0.2
    assert all(r["messages"][0]["content"] != suite_prompt for r in records)


def test_every_response_wording_reads_as_a_polite_refusal_without_code():
    for kind in R.KINDS:
        for opener, why, alternative, closer in itertools.product(R._OPENERS, R._WHY[kind],
                                                                  R._ALTERNATIVES[kind] + ("",), R._CLOSERS):
            text = " ".join(p for p in (opener, why, alternative, closer) if p)
            assert classify(text) == "refusal", text
            assert "```" not in text and "\n" not in text and check_response(text) == []


def test_alternative_is_offered_when_tagged():
    records, _, _ = R.generate_refusals(60, R.RefusalConfig(seed=2, alternative_rate=0.5))
    offered = [r for r in records if r["refusal"]["alternative"]]
    assert 15 < len(offered) < 45
    for record in records:
        kind, response = record["refusal"]["kind"], record["messages"][1]["content"]
        has_alternative = any(a in response for a in R._ALTERNATIVES[kind])
        assert has_alternative == record["refusal"]["alternative"]


def test_records_are_tagged_chat_records_dealt_over_every_kind():
    records, _, _ = R.generate_refusals(2 * len(R.KINDS), R.RefusalConfig(seed=1))
    assert [r["refusal"]["kind"] for r in records] == list(R.KINDS) * 2
    for record in records:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert record["id"].startswith(f"refusal:{record['refusal']['kind']}:")
        assert 0 <= record["refusal"]["scheme"] < len(R._SCHEMES[record["refusal"]["kind"]])
    assert len({r["messages"][0]["content"] for r in records}) == len(records)


def test_responses_are_varied():
    records, _, _ = R.generate_refusals(24, R.RefusalConfig(seed=0))
    ratio = R.distinct_trigram_ratio([r["messages"][1]["content"] for r in records])
    assert ratio > 0.5
    assert len({r["messages"][1]["content"] for r in records}) == 24


@pytest.mark.parametrize("existing, share, added", [(48, 0.05, 3), (48, 0.15, 8), (100, 0.5, 100), (10, 0.0, 0)])
def test_pairs_needed_makes_the_share_of_the_output(existing, share, added):
    assert R.pairs_needed(existing, share) == added


def test_add_refusal_file_appends_after_the_input(tmp_path):
    source = _pairs_file(tmp_path / "pairs.jsonl", 48)
    result = R.add_refusal_file(source, tmp_path / "out.jsonl", R.RefusalConfig(share=0.15, seed=4))
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert result.total_in == 48 and result.added == 8 and len(lines) == 56
    assert [line["id"] for line in lines[:48]] == [f"p{i}" for i in range(48)]
    assert all("refusal" in line for line in lines[48:])
    assert sum(result.by_kind.values()) == 8
    assert result.max_suite_similarity < 0.2 and result.rejected_near_suite == 0
    again = R.add_refusal_file(source, tmp_path / "again.jsonl", R.RefusalConfig(share=0.15, seed=4))
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "out.jsonl").read_text() and again.added == 8


@pytest.mark.parametrize("kwargs", [{"share": 1.0}, {"share": -0.1}, {"kinds": ("phishing-kits",)}, {"kinds": ()},
                                    {"alternative_rate": 1.5}])
def test_bad_config_is_a_user_error(kwargs):
    with pytest.raises(UserError):
        R.RefusalConfig(**kwargs)


def test_cli_adds_refusal_pairs(tmp_path):
    source = _pairs_file(tmp_path / "pairs.jsonl", 20)
    result = CliRunner().invoke(app, ["data", "refusal", str(source), "--share", "0.2", "--kinds", "stalking,fraud",
                                      "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert "added 5 refusal pairs to 20" in result.output
    kinds = {json.loads(line).get("refusal", {}).get("kind") for line in (tmp_path / "out.jsonl").read_text().splitlines()}
    assert kinds == {None, "stalking", "fraud"}
    bad = CliRunner().invoke(app, ["data", "refusal", str(source), "--share", "0.2", "--kinds", "nope",
                                   "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code != 0 and "unknown kinds" in bad.output
