"""Lesson 3 as the protocol fixes it: pushback against matched controls, the gap over spec pairs, the table."""

import importlib.util
import pathlib

import pytest

from tunelens.inspect.propensity import (COMPLY_OPENINGS, CONTROL_OPENINGS, PUSHBACK_OPENINGS, base_gap, gap_change,
                                         lesson3_table, opening_length_mismatches, propensity, pushback_measures,
                                         spec_pair_measures)
from tunelens.testing import tiny_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_controls_are_the_protocols_in_order_and_lengths_are_counted():
    spec = importlib.util.spec_from_file_location("protocol_power", ROOT / "scripts" / "protocol_power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    assert tuple((a, b) for a, b, _ in power.CONTROL_OPENINGS) == tuple(zip(PUSHBACK_OPENINGS, CONTROL_OPENINGS))
    _, tokenizer = tiny_model()
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert opening_length_mismatches(tokenizer) == [
        (a, b, count(a), count(b)) for a, b in zip(PUSHBACK_OPENINGS, CONTROL_OPENINGS) if count(a) != count(b)]


def test_both_measures_equal_propensity_over_each_set():
    model, tokenizer = tiny_model("llama")
    both = pushback_measures(model, tokenizer, "Add two numbers.")
    controlled = propensity(model, tokenizer, "Add two numbers.", comply_openings=CONTROL_OPENINGS)
    old = propensity(model, tokenizer, "Add two numbers.", comply_openings=COMPLY_OPENINGS)
    assert both["controlled"] == pytest.approx(controlled.log_odds, abs=1e-4)
    assert both["versus_comply"] == pytest.approx(old.log_odds, abs=1e-4)


def test_spec_pairs_give_the_broken_minus_twin_gap():
    model, tokenizer = tiny_model("gemma3")
    (row,) = spec_pair_measures(model, tokenizer, [("s1", "Return x and also never return x.", "Return x.")])
    assert row["id"] == "s1" and row["gap"] == pytest.approx(row["broken"] - row["twin"])
    assert row["broken"] == pytest.approx(
        pushback_measures(model, tokenizer, "Return x and also never return x.")["controlled"])


def _rows(gaps, offset=0.0):
    return [{"id": f"s{i}", "broken": g + offset, "twin": offset, "gap": g} for i, g in enumerate(gaps)]


def test_base_gap_is_a_paired_t_read_by_the_rule():
    wide = base_gap(_rows([0.8, 1.1, 0.9, 1.2, 1.0, 0.7], offset=-3.0))
    assert wide["distinguishes"] and wide["test"]["mean"] == pytest.approx(0.95) and wide["pairs"] == 6
    none = base_gap(_rows([0.3, -0.2, 0.1, -0.3]))
    assert not none["distinguishes"] and none["words"] == "no difference these data can show"


def test_gap_change_matches_specs_by_id():
    base = _rows([1.0, 2.0])
    tuned = list(reversed(_rows([0.0, 0.5], offset=-5.0)))  # a prior shift of -5 moves both, not the gap
    assert gap_change(tuned, base) == pytest.approx(((0.0 - 1.0) + (0.5 - 2.0)) / 2)
    with pytest.raises(ValueError, match="differ"):
        gap_change(_rows([0.0]), base)


def test_table_marks_b_not_testable_when_the_base_draws_no_distinction():
    erased, restored = [-0.9, -0.8, -1.0, -0.85], [0.7, 0.9, 0.8, 0.75]
    rows = lesson3_table(erased, restored, base_distinguishes=True)
    assert rows[0]["words"] == "B shrinks the gap" and rows[1]["words"] == "C restores the distinction"
    assert rows[0]["p_holm"] >= rows[0]["test"]["p"]
    rows = lesson3_table(erased, restored, base_distinguishes=False)
    assert rows[0]["words"].startswith("not testable here") and rows[0]["direction"] == "none"
    assert rows[1]["words"] == "C creates a distinction"
