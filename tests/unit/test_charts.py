"""Inline SVG charts: valid XML, gaps drawn as gaps (never zero), escaping, and any
numbers at all (NaN, None, huge, negative, constant, one point) give a sane chart."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from dropdoc.render.charts import PALETTE, line_chart_svg

NS = "{http://www.w3.org/2000/svg}"
T0 = 1_795_660_000.0  # 2026-11-26 UTC


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [[tuple(map(float, p.split(","))) for p in line.get("points").split()]
            for line in root.iter(f"{NS}polyline")]


def series_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "series"]


def gap_rects(root: ET.Element) -> list[ET.Element]:
    return [g.find(f"{NS}rect") for g in root.iter(f"{NS}g") if g.get("class") == "gap"]


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def test_a_none_breaks_the_line_and_a_common_gap_is_shaded():
    series = {"transport": [(T0, 5.0), (T0 + 1, 7.0), (T0 + 2, None), (T0 + 3, 4.0), (T0 + 4, 2.0)],
              "network": [(T0, 1.0), (T0 + 1, 1.0), (T0 + 2, None), (T0 + 3, 1.0), (T0 + 4, 1.0)]}
    root = parse(line_chart_svg(series, "drop rate", "drops/s"))
    assert len(polylines(root)) == 4  # two runs per series
    rects = gap_rects(root)
    assert len(rects) == 1
    x, width = float(rects[0].get("x")), float(rects[0].get("width"))
    # the shaded span runs from the last value before the gap to the first one after it
    first_run_end = polylines(root)[0][-1][0]
    second_run_start = polylines(root)[1][0][0]
    assert math.isclose(x, first_run_end, abs_tol=0.2)
    assert math.isclose(x + width, second_run_start, abs_tol=0.2)


def test_a_gap_in_one_series_only_breaks_that_line():
    series = {"a": [(1, 1.0), (2, None), (3, 1.0)], "b": [(1, 2.0), (2, 2.0), (3, 2.0)]}
    root = parse(line_chart_svg(series, "t", "y", x_is_time=False))
    assert [len(run) for run in polylines(root)] == [3]  # b whole; a is two lone points
    assert len(list(root.iter(f"{NS}circle"))) == 2
    assert gap_rects(root) == []


def test_zero_is_drawn_on_the_axis_and_the_axis_starts_at_zero():
    root = parse(line_chart_svg({"a": [(1, 0.0), (2, 0.0), (3, 50.0)]}, "t", "y", x_is_time=False))
    ticks = [float(t) for t in texts(root) if re.fullmatch(r"-?[\d.]+", t)]
    assert min(ticks) == 0 and max(ticks) >= 50
    line = polylines(root)[0]
    axis_y = max(y for _, y in line)
    assert line[0][1] == axis_y == line[1][1]


def test_labels_of_huge_values_are_exact_not_overflowed():
    svg = line_chart_svg({"a": [(1, 1.7e308), (2, 5.0)]}, "t", "y", x_is_time=False)
    assert "2.00e+308" in svg
    assert not re.search(r"nan|inf", svg, re.IGNORECASE)


def test_negative_values_extend_the_axis_below_zero():
    labels = texts(parse(line_chart_svg({"a": [(1, -30.0), (2, 10.0)]}, "t", "y", x_is_time=False)))
    assert any(label.startswith("-") for label in labels)
    assert "0" in labels


def test_one_point_is_a_dot_and_a_constant_series_is_flat():
    root = parse(line_chart_svg({"a": [(T0, 3.0)]}, "t", "y"))
    assert len(list(root.iter(f"{NS}circle"))) == 1
    line = polylines(parse(line_chart_svg({"a": [(1, 7.0), (2, 7.0), (3, 7.0)]}, "t", "y", x_is_time=False)))[0]
    assert len({y for _, y in line}) == 1


def test_no_data_at_all_says_so():
    for series in ({}, {"a": []}, {"a": [(T0, None), (T0 + 5, float("nan"))]}):
        root = parse(line_chart_svg(series, "t", "y"))
        assert "no data" in texts(root)
        assert polylines(root) == []


def test_time_axis_is_utc_clock_time():
    svg = line_chart_svg({"a": [(T0 + i * 10, 1.0) for i in range(30)]}, "t", "y")
    assert "time (UTC), 2026-11-26" in svg
    assert re.search(r">\d\d:\d\d(:\d\d)?<", svg)


def test_text_from_input_is_escaped():
    evil = '<script>alert("x")</script>&'
    svg = line_chart_svg({evil: [(1, 1.0), (2, 2.0)], "b": [(1, 1.0)]}, evil, evil)
    root = parse(svg)  # still well-formed XML
    assert "<script" not in svg
    assert evil in texts(root)
    assert root.get("aria-label") == evil


def test_colours_by_name_and_palette_for_the_rest():
    root = parse(line_chart_svg({"a": [(1, 1.0), (2, 1.0)], "b": [(1, 2.0), (2, 2.0)]}, "t", "y",
                                x_is_time=False, colors={"b": "#123456"}))
    assert [g.get("stroke") for g in series_groups(root)] == [PALETTE[0], "#123456"]


NUMBERS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-10**30, max_value=10**30),
                    st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308]))
XS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=T0 - 1e6, max_value=T0 + 1e6),
               st.integers(min_value=-10**12, max_value=10**12))


# names without the letters of "nan"/"inf", so the check below only sees numbers
NAMES = st.text(alphabet=st.characters(exclude_characters="nNaAiIfF"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(series=st.dictionaries(NAMES, st.lists(st.tuples(XS, NUMBERS), max_size=30), max_size=4),
       x_is_time=st.booleans(), width=st.integers(0, 2000), height=st.integers(0, 800))
def test_any_numbers_give_a_well_formed_chart_inside_its_box(series, x_is_time, width, height):
    svg = line_chart_svg(series, "title", "y", x_is_time=x_is_time, width=width, height=height)
    root = parse(svg)
    assert not re.search(r"\b(nan|inf|infinity)\b", svg, re.IGNORECASE)
    box_w, box_h = float(root.get("width")), float(root.get("height"))
    coordinates = []
    for element in root.iter():
        for name in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height"):
            if element.get(name) is not None:
                coordinates.append((name, float(element.get(name))))
        if element.get("points"):
            for pair in element.get("points").split():
                x, y = map(float, pair.split(","))
                coordinates += [("x", x), ("y", y)]
    for name, value in coordinates:
        assert math.isfinite(value)
        limit = box_w if name.startswith(("x", "c", "w")) and name != "cy" else box_h
        assert -1.0 <= value <= limit + 1.0, (name, value)


def test_time_axis_in_another_zone_ticks_on_its_round_times():
    from dropdoc.render.zones import resolve

    hours = [(T0 + 600 * i, 1.0) for i in range(37)]      # 6 h from 02:26:40 UTC
    svg = line_chart_svg({"a": hours}, "t", "y", width=720, tz=resolve("+05:30"))
    root = parse(svg)
    ticks = [t for t in texts(root) if re.fullmatch(r"\d\d:\d\d", t)]
    assert ticks and all(t.endswith(":00") for t in ticks), ticks   # not :30, as UTC hours would be
    assert "time (UTC+05:30), 2026-11-26" in svg


def test_y_top_and_x_label_for_shares_and_simulated_time():
    svg = line_chart_svg({"q": [(0.0, 1.0), (1.0, 3.0)]}, "occupancy", "% of limit", x_is_time=False,
                         y_top=100.0, x_label="simulated time (s)")
    labels = texts(parse(svg))
    assert "100" in labels and "simulated time (s)" in labels   # a queue at 3 % is drawn near the bottom
