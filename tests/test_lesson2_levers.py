"""Lesson 2 as the protocol fixes it: reference points, the window from a calibration half, placebos."""

import importlib.util
import math
import pathlib

import pytest
import torch

from tunelens.inspect.levers import (ADAPTER_OFF, CONTESTED_WINDOW, LEVER_PLACEBOS, LEVER_ROWS, SEED_DELTA, WIDE_WINDOW,
                                     Lever, ReferencePoint, adapter_off_scale, call_token_mask,
                                     choose_placebo_example, choose_window, contested_points, lesson2_table,
                                     lever_minus_placebo, mass_log_odds_at, placebo_length_mismatches,
                                     placebo_levers, python2_statement_mask, python3_points, reference_baselines,
                                     score_chosen, seed_lesson2, split_prompts)
from tunelens.model.prompts import render_prompt
from tunelens.testing import tiny_lora_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_points_are_the_call_parentheses_after_print():
    tokens = ["def", " f", "():", "\n   ", " print", "(", "x", ")", " self", ".print", "(", " print", ' "']
    assert python3_points(tokens) == [5]  # `.print(` is a method; `print "` is Python 2, not a call
    assert python3_points(["\u2581print", "\u2581("]) == [1]


def test_the_two_masks_are_disjoint_and_mean_what_they_say():
    _, tokenizer = tiny_lora_model()
    three, two = call_token_mask(tokenizer), python2_statement_mask(tokenizer)
    assert not bool((three & two).any()) and bool(two.any())
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for index in torch.nonzero(two).flatten().tolist()[:50]:
        text = pieces[index].replace("\u0120", " ")
        assert text.startswith(" ") and text.strip() and not text.strip().startswith("(")


def test_mass_log_odds_against_one_plain_forward_pass(one_thread):
    model, tokenizer = tiny_lora_model()
    prompt_ids = tokenizer(render_prompt(tokenizer, "Say hi."), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer("print(x)\nprint('a')\n", add_special_tokens=False)["input_ids"]
    positions = python3_points(tokenizer.convert_ids_to_tokens(answer_ids))
    assert len(positions) == 2
    three, two = call_token_mask(tokenizer), python2_statement_mask(tokenizer)
    got = mass_log_odds_at(model, prompt_ids, answer_ids, positions, three, two)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    for value, position in zip(got, positions):
        row = log_probs[len(prompt_ids) + position - 1][: three.numel()]
        expected = math.log(float(row[three].exp().sum())) - math.log(float(row[two].exp().sum()))
        assert value == pytest.approx(expected, abs=1e-4)


def test_split_is_seeded_disjoint_and_order_free():
    prompts = [f"p{i}" for i in range(9)]
    calibration, measurement = split_prompts(prompts, seed=3)
    assert len(calibration) == 4 and len(measurement) == 5 and not set(calibration) & set(measurement)
    assert split_prompts(list(reversed(prompts)), seed=3) == (calibration, measurement)
    assert split_prompts(prompts, seed=4) != (calibration, measurement)


def _point(prompt, baseline, **levers):
    return ReferencePoint(prompt, 0, baseline, dict(levers))


def test_window_widens_below_one_and_a_half_points_per_prompt():
    inside = [_point("a", -0.5), _point("a", 0.9), _point("b", -2.0), _point("c", 1.0), _point("c", -1.0),
              _point("d", 0.0)]
    outside = [_point("a", -2.5), _point("b", 1.5)]
    assert choose_window(inside + outside, calibration_prompts=4) == CONTESTED_WINDOW  # 6 / 4 = 1.5
    assert choose_window(inside[1:] + outside, calibration_prompts=4) == WIDE_WINDOW  # 5 / 4
    chosen = contested_points(inside + outside + [_point("z", 0.0)], ["a", "b"], WIDE_WINDOW)
    assert [(p.prompt, p.baseline) for p in chosen] == [("a", -0.5), ("a", 0.9), ("b", -2.0), ("a", -2.5), ("b", 1.5)]


def test_lever_minus_placebo_cancels_the_baseline_and_clusters_by_prompt():
    row = LEVER_ROWS[0][0]
    points = [_point(f"p{i % 20}", -1.0 + i / 100, **{row: 0.5 + i / 100, f"placebo: {row}": 0.2 + i / 100})
              for i in range(40)]
    result = lever_minus_placebo(points, row)
    assert result["mean"] == pytest.approx(0.3) and result["low"] == pytest.approx(0.3)
    assert result["n"] == 40 and result["prompts"] == 20 and result["meets_floor"]
    assert not lever_minus_placebo(points[:29], row)["meets_floor"]


def test_placebos_go_where_their_levers_go():
    _, tokenizer = tiny_lora_model(arch="llama")
    levers = placebo_levers(tokenizer, ("Show x.", "print(x)"), ("Add.", "a + b"))("Do it.")
    by_name = {lever.name: lever.prompt for lever in levers}
    assert len(levers) == 2 * len(LEVER_ROWS) + 1 and not levers[-1].adapter_on
    nudge, placebo = LEVER_PLACEBOS[0]
    assert f"Do it.\n\n{placebo}" in by_name["placebo: sentence after the request"]
    assert f"{placebo}\n\nDo it." in by_name["placebo: sentence before the request"]
    assert by_name["placebo: sentence as the system line"] == by_name["sentence as the system line"].replace(
        nudge, placebo)
    assert "a + b" in by_name["placebo: one-shot Python 3 example"] and "print" not in \
        by_name["placebo: one-shot Python 3 example"]
    assert "print(" not in by_name["code-free phrasing, after"].split("Do it.")[1]


def test_placebo_example_is_silent_and_closest_in_length():
    pairs = [("Show.", "print(1)"), ("Long one.", "x = [i for i in range(100)]\nreturn x"), ("Add.", "a + b")]
    assert choose_placebo_example(pairs, pairs[0], len) == ("Add.", "a + b")
    with pytest.raises(ValueError, match="every training pair prints"):
        choose_placebo_example(pairs[:1], ("S.", "print(2)"), len)


def test_texts_are_the_protocols_and_lengths_are_counted():
    spec = importlib.util.spec_from_file_location("protocol_power", ROOT / "scripts" / "protocol_power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    assert tuple((a, b) for a, b, _ in power.LEVER_PLACEBOS) == LEVER_PLACEBOS
    _, tokenizer = tiny_lora_model()
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert placebo_length_mismatches(tokenizer) == [(a, b, count(a), count(b)) for a, b in LEVER_PLACEBOS
                                                     if count(a) != count(b)]


def test_one_seed_end_to_end_with_a_lever_that_is_its_own_placebo(one_thread):
    model, tokenizer = tiny_lora_model()
    render = lambda text: render_prompt(tokenizer, text)  # noqa: E731
    references = [(f"p{i}", f"Show item {i}.", f"for i in range({i + 2}):\n    print(i)\nprint('done')\n")
                  for i in range(6)]
    baselines = reference_baselines(model, tokenizer, references, render)
    assert len(baselines) == 12 and {p.prompt for p in baselines} == {f"p{i}" for i in range(6)}

    def levers(instruction):  # every row's lever and placebo the same prompt: each difference must be 0
        same = render(f"{instruction}\n\nSame.")
        return [Lever(name, same) for row, _, _ in LEVER_ROWS for name in (row, f"placebo: {row}")] + \
            [Lever(ADAPTER_OFF, render(instruction), adapter_on=False)]

    scored = score_chosen(model, tokenizer, baselines[:3], references, levers)
    assert [(p.prompt, p.position, p.baseline) for p in scored] == \
        [(p.prompt, p.position, p.baseline) for p in baselines[:3]]
    result = seed_lesson2(model, tokenizer, references, render, levers, split_seed=0)
    assert result["calibration_prompts"] == 3 and result["window"] in (list(CONTESTED_WINDOW), list(WIDE_WINDOW))
    for row in result["rows"]:
        assert row["n"] == result["points"]
        assert row["n"] == 0 or row["mean"] == pytest.approx(0.0, abs=1e-6)
        assert not row["meets_floor"]  # 3 prompts are below the protocol's 20
    scale = adapter_off_scale(scored, seed=0)
    assert scale["mean"] == pytest.approx(sum(p.delta(ADAPTER_OFF) for p in scored) / 3)
    assert abs(scale["mean"]) > 1e-4  # the tiny adapter moves the points


def test_table_holm_over_five_rows_and_the_case_study_row():
    per_seed = {row: [0.02, -0.03, 0.01, 0.0] for row, _, _ in LEVER_ROWS}
    per_seed[LEVER_ROWS[0][0]] = [0.9, 1.0, 0.85, 0.95]
    table = lesson2_table(per_seed)
    first = table["rows"][0]
    assert first["words"] == "toward Python 3" and first["p_holm"] == pytest.approx(min(1, 5 * first["test"]["p"]))
    assert all(r["direction"] == "none" for r in table["rows"][1:])
    assert table["against_case_study"]["value"] == SEED_DELTA
    assert table["against_case_study"]["direction"] == "none"  # 0.925 vs 0.869 over 4 seeds: no claim
    with pytest.raises(ValueError, match="no per-seed values"):
        lesson2_table({LEVER_ROWS[0][0]: [1.0, 2.0]})
