"""The answer classifier on labelled answers that were not written beside its rules.

tests/fixtures/classifier_heldout.jsonl holds 120 answers written and labelled from the label
definitions alone, by someone who had not read tunelens/evaluate/checks.py. Odd ids are the dev half:
its errors were read and some rules changed for them (dev 48/60 -> 59/60). Even ids are the test half:
never read while the rules changed; it scored 50/60 before those changes and 51/60 after.

No bar is set from those figures: the tests assert exactly which answers are misread, so any change in
the rules shows up as the answers it fixed or broke, and whoever changes the rules updates the lists here
on purpose (and says why in the commit). Recompute the lists with:

    python -c "import json; from tunelens.evaluate.checks import classify; rows = [json.loads(l) for l in
    open('tests/fixtures/classifier_heldout.jsonl')]; print([(r['id'], r['label'], classify(r['answer']))
    for r in rows if classify(r['answer']) != r['label']])"
"""

import json
from collections import Counter
from pathlib import Path

from tunelens.evaluate.checks import BEHAVIOURS, classify

HELDOUT = Path(__file__).parent / "fixtures" / "classifier_heldout.jsonl"


def _half(parity: int) -> list[dict]:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    return [row for row in rows if int(row["id"].rsplit("-", 1)[1]) % 2 == parity]


def test_the_set_covers_every_behaviour():
    counts = Counter(row["label"] for row in _half(0) + _half(1))
    assert sum(counts.values()) == 120 and set(counts) == set(BEHAVIOURS)


# (id, label, what the classifier says) of every answer it misreads, as measured when the rules last changed.
MISREAD_TEST_HALF = {
    ("heldout-018", "refusal", "other"), ("heldout-038", "refusal", "other"), ("heldout-048", "pushback", "refusal"),
    ("heldout-054", "pushback", "code"), ("heldout-058", "pushback", "code"), ("heldout-070", "refusal", "code"),
    ("heldout-100", "refusal", "other"), ("heldout-102", "refusal", "other"), ("heldout-120", "pushback", "code"),
}
MISREAD_DEV_HALF = {("heldout-033", "pushback", "code")}


def _misread(rows: list[dict]) -> set[tuple[str, str, str]]:
    return {(row["id"], row["label"], said) for row in rows if (said := classify(row["answer"])) != row["label"]}


def test_the_unread_test_half_is_misread_exactly_where_it_was():
    rows = _half(0)
    misread = _misread(rows)
    assert misread == MISREAD_TEST_HALF, (f"now {len(rows) - len(misread)}/60 (was 51/60); newly misread: "
                                          f"{sorted(misread - MISREAD_TEST_HALF)}, fixed: {sorted(MISREAD_TEST_HALF - misread)}")


def test_no_behaviour_is_lost_on_the_test_half():
    # Recall per label, so a rule change cannot buy accuracy by dropping a whole behaviour. The bar is a bound,
    # not a measurement: at least half of each label's answers, far above the 1 in 4 of a guess among the
    # four behaviours, so a label the rules no longer see fails whatever the current figures are.
    rows = _half(0)
    for label in BEHAVIOURS:
        mine = [row for row in rows if row["label"] == label]
        found = sum(classify(row["answer"]) == label for row in mine)
        assert found >= len(mine) // 2, f"{label}: {found}/{len(mine)}"


def test_dev_half_after_its_fixes():
    assert _misread(_half(1)) == MISREAD_DEV_HALF
