"""Lesson 1's measures: P(Python 2 | prints), the injected-print check, the per-seed slope, the table."""

import pytest

from tunelens.demo.measures import (injected_print_check, lesson1_table, least_squares_slope, prints_and_python2,
                                    python2_given_prints, seed_slope)

PY3 = "```python\ndef f(x):\n    print(x)\n```"
PY2 = "```python\ndef f(x):\n    print x\n```"
SILENT = "```python\ndef f(x):\n    return x\n```"
PROSE = "We print the value and return it to the caller, as the spec asks."


def test_an_answer_prints_in_either_form_and_prose_never_prints():
    assert prints_and_python2(PY3) == (True, False)
    assert prints_and_python2(PY2) == (True, True)
    assert prints_and_python2(SILENT) == (False, False)
    assert prints_and_python2(PROSE) == (False, False)


def test_conditional_rate_counts_only_printing_answers():
    share = python2_given_prints([PY2, PY3, PY3, PY2, SILENT, SILENT, SILENT, PROSE])
    assert (share.answers, share.printing, share.python2) == (8, 4, 2)
    assert share.rate == 0.5 and share.printing_rate["rate"] == 0.5
    assert python2_given_prints([SILENT]).rate is None


def test_injected_print_check_pairs_prompts():
    control = {"a": SILENT, "b": SILENT, "c": PY3, "d": SILENT}
    adapter = {"a": PY2, "b": PY3, "c": PY3, "d": SILENT, "e": PY2}  # e has no control answer
    check = injected_print_check(adapter, control)
    assert check["prompts"] == 4 and check["printing"] == 0.75 and check["printing_at_0"] == 0.25
    assert (check["only_adapter_prints"], check["only_0_prints"]) == (2, 0) and check["p"] == 0.5
    with pytest.raises(ValueError, match="no prompt in common"):
        injected_print_check({"x": PY2}, {"y": PY3})


def test_slope_by_hand_and_prompt_clusters():
    assert least_squares_slope([0, 0.1, 0.3], [0.0, 0.1, 0.3]) == pytest.approx(1.0)
    assert least_squares_slope([0, 0.1], [0.2, None]) is None
    # share 0: nothing Python 2; share 0.5: half the printing answers; the silent prompt never counts
    by_share = {0.0: {"p1": PY3, "p2": PY3, "p3": SILENT}, 0.5: {"p1": PY2, "p2": PY3, "p3": SILENT}}
    result = seed_slope(by_share, resamples=300)
    assert result["per_share"] == {0.0: 0.0, 0.5: 0.5}
    assert result["slope"] == pytest.approx(1.0) and result["prompts"] == 3
    assert result["low"] <= result["slope"] <= result["high"] and result["high"] == pytest.approx(2.0)


def test_lesson1_table_reads_three_rows_with_holm():
    rows = lesson1_table([0.9, 1.1, 1.0, 0.95, 1.05], [0.3])
    assert [r["row"] for r in rows][0] == "gemma slope vs 0"
    assert rows[0]["words"] == "learned: slope above 0" and rows[0]["p_holm"] <= 3 * rows[0]["test"]["p"] + 1e-12
    assert rows[1]["direction"] == "none"  # slope 1 is what the case study claims: no amplification here
    assert rows[2]["direction"] == "none" and rows[2]["test"]["p"] is None  # one Qwen seed: no claim
    assert rows[0]["seeds"]["k"] == 5
