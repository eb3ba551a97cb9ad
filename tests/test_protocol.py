"""docs/protocol.md's computed section is scripts/protocol_power.py's output, and its pieces compute what they say."""

import importlib.util
import math
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def power():
    spec = importlib.util.spec_from_file_location("protocol_power", ROOT / "scripts" / "protocol_power.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_is_the_scripts_output(power):
    page = (ROOT / "docs" / "protocol.md").read_text()
    assert power.page_section(page) == power.render(), \
        "docs/protocol.md differs from its script: run python scripts/protocol_power.py --write"


def test_the_page_names_the_one_reading_rule():
    from tunelens import reading

    page = (ROOT / "docs" / "protocol.md").read_text()
    assert "tunelens.reading.read_table" in page and callable(reading.read_table)


def test_seed_delta_is_the_levers_constant(power):
    from tunelens.inspect.levers import SEED_DELTA

    assert round(power.SEED_DELTA, 3) == SEED_DELTA


def test_icc_by_hand(power):
    # counts 8/16 and 16/16: rates 0.5, 1.0; mu 0.75, var (ddof 1) 0.125; 0.125 / 0.1875 = 2/3;
    # phi = (2/3 - 1/16) / (15/16) = 29/45
    assert power.icc_from_rates((8, 16), 16) == pytest.approx(29 / 45)
    # 6/16 and 10/16: mu 0.5, var 0.03125; 0.03125 / 0.25 = 1/8; phi = (1/8 - 1/16) / (15/16) = 1/15
    assert power.icc_from_rates((6, 10), 16) == pytest.approx(1 / 15)


def test_t_power_agrees_with_the_noncentral_t_where_scipy_computes_it(power):
    from scipy import stats

    for d, k, alpha in ((0.5, 10, 0.05), (1.0, 5, 0.05), (2.0, 4, 0.01)):
        df, nc = k - 1, d * math.sqrt(k)
        crit = stats.t.ppf(1 - alpha / 2, df)
        assert power.t_power(d, k, alpha) == pytest.approx(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc),
                                                           abs=1e-6)
    assert power.t_power(0.0, 6, 0.05) == pytest.approx(0.05, abs=1e-6)  # no effect: the size of the test
    assert power.t_power(10.0, 5, 0.01) > 0.999  # far in nct's tail, where scipy returns nan


def test_mcnemar_discordance_needed_by_hand(power):
    # aggregated p = 2 x (2 x 0.5^d): d = 7 gives 0.03125 >= 0.025, d = 8 gives 0.0156 < 0.025
    assert power.mcnemar_min_discordant(0.025) == 8
    # d = 6 gives 0.0625 >= 0.05, d = 7 gives 0.03125
    assert power.mcnemar_min_discordant(0.05) == 7


def test_the_lesson1_simulation_has_no_power_without_an_effect(power, monkeypatch):
    monkeypatch.setattr(power, "SIM_REPS", 4000)
    monkeypatch.setattr(power, "L1_RATES", (0.3, 0.3, 0.3, 0.3001))  # no spread of shares: slope ~ noise
    power.lesson1_slope_power.cache_clear()
    try:
        assert power.lesson1_slope_power(8, 0.05, 0.05) < 0.15
    finally:
        power.lesson1_slope_power.cache_clear()


def test_a_lesson_that_does_not_fit_is_not_testable(power):
    c = {"train_A30": 10.0, "train_B": 10.0, "train_C": 10.0}
    plan = {name: {"k": 3, "kinds": ("A30",), "measure": 5.0, "once": 0.0} for name in power.QWEN_ORDER}
    rows, left = power.allocate(plan, c, 50.0, {})
    # the first lesson costs 3 x 5 + 3 x 10 = 45; the next reuses the A30 seeds: 15 > 5 left, so not at all
    assert [row["fits"] for row in rows] == [True, False, False, False, False]
    assert rows[0]["minutes"] == 45 and rows[1]["minutes"] == 15 and left == 5


def test_fixed_texts_have_their_stated_lengths_in_qwen_tokens(power):
    """Every placebo matches its lever, and every control opening its pushback opening, in Qwen tokens (the
    counts the page states); the pushback side is tunelens.inspect.propensity's own list."""
    from tunelens.model.specs import embedded_cache_dir
    from tunelens.inspect.propensity import PUSHBACK_OPENINGS

    assert tuple(opening for opening, _, _ in power.CONTROL_OPENINGS) == PUSHBACK_OPENINGS
    directory = embedded_cache_dir("qwen2.5-coder-1.5b")
    if not (directory / "tokenizer.json").is_file():
        pytest.skip("qwen2.5-coder-1.5b is not installed here (its tokenizer counts the texts)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    for first, second, tokens in (*power.LEVER_PLACEBOS, *power.CONTROL_OPENINGS):
        assert (count(first), count(second)) == (tokens, tokens), (first, second)
