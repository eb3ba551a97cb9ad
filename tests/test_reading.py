"""The one reading rule: Holm's correction by hand, and a direction only where the adjusted test rejects."""

from hypothesis import given, strategies as st

from tunelens.reading import NO_DIFFERENCE, holm, read_one, read_table


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (running max), back in the given order
    assert holm([0.04, 0.01, 0.02]) == [0.04, 0.03, 0.04]
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2*0.5 = 1.0, capped, and 0.9 never below it


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_never_below_raw_and_keeps_order(ps):
    adjusted = holm(ps)
    assert all(a >= p for a, p in zip(adjusted, ps))
    assert all(a <= 1.0 for a in adjusted)
    ranked = sorted(range(len(ps)), key=lambda i: ps[i])
    assert [adjusted[i] for i in ranked] == sorted(adjusted[i] for i in ranked)


def test_a_direction_only_after_the_correction():
    alone = read_one("lever", 0.4, 0.03, up="toward Python 3", down="toward Python 2")
    assert alone.direction == "up" and alone.words == "toward Python 3"
    # the same row in a table of three is corrected to 0.09 and claims nothing
    table = read_table([("lever", 0.4, 0.03), ("b", -0.2, 0.5), ("c", 0.1, 0.7)])
    assert table[0].p_holm == 0.09 and table[0].words == NO_DIFFERENCE and not table[0].claimed
    assert read_one("x", -1.0, 0.001).direction == "down"
    assert read_one("x", 0.0, 0.001).direction == "none"
