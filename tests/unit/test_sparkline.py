"""Sparklines: per-row scaling, zero vs gap vs small drop, width."""

from hypothesis import given
from hypothesis import strategies as st

from dropdoc.render.sparkline import BLOCKS, GAP, ZERO, sparkline


def test_scaled_to_the_rows_own_peak():
    assert sparkline([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    # The same shape at 1000x the rate draws the same line.
    assert sparkline([0, 1000, 2000, 4000, 8000]) == sparkline([0, 1, 2, 4, 8])


def test_gap_is_a_space_never_zero():
    line = sparkline([5, None, 0, 5])
    assert line == "█" + GAP + ZERO + "█"
    assert GAP != ZERO


def test_one_drop_next_to_a_big_peak_is_still_visible():
    line = sparkline([0, 1, 100_000])
    assert line[0] == ZERO
    assert line[1] != ZERO and line[1] != GAP
    assert line[2] == BLOCKS[-1]


def test_all_zero_and_all_unknown():
    assert sparkline([0, 0, 0]) == ZERO * 3
    assert sparkline([None, None]) == GAP * 2
    assert sparkline([]) == ""


def test_width_keeps_the_latest_values():
    assert sparkline([8, 0, 0, 8], width=2) == "▁█"
    assert sparkline([1, 2], width=10) == "▅█"      # fewer values than the width: no padding
    assert sparkline([1, 2], width=0) == ""


def test_not_finite_values_are_gaps():
    assert sparkline([float("nan"), 1.0, float("inf")]) == GAP + "█" + GAP


@given(st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=1e12)), max_size=80))
def test_one_character_per_value_and_the_three_cases_kept_apart(values):
    line = sparkline(values)
    assert len(line) == len(values)
    for value, char in zip(values, line, strict=True):
        if value is None:
            assert char == GAP
        elif value == 0:
            assert char == ZERO
        else:
            assert char in BLOCKS[1:]
    known = [v for v in values if v]
    if known:
        assert line[values.index(max(known))] == BLOCKS[-1]
