"""Drop rates over time from a history: gaps are None (never 0), layer sums refuse to add
up a partial layer, peaks and buckets count what was recorded."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropdoc.history import History, Sample
from dropdoc.meter import Interval
from dropdoc.render import html, markdown
from dropdoc.render.report_inputs import HistoryInput, load_history
from dropdoc.render.timeline import (
    Timeline,
    bucket_coverage,
    bucket_peaks,
    choose_bucket,
)

T0 = 1_795_660_000.0
LAYERS_OF = {"tcp.listen_overflow": "transport", "udp.rcvbuf_full": "transport",
             "netfilter.drop": "network", "cloud.allowance_exceeded": "link", "cpu.time_squeeze": "kernel",
             "cpu.backlog_drop": "kernel"}


def sample(i: float, drops=None, gaps=(), seconds=1.0) -> Sample:
    return Sample(T0 + i, seconds, dict(drops or {}), tuple(gaps))


def timeline(samples) -> Timeline:
    return Timeline(samples, LAYERS_OF)


def test_time_not_recorded_is_a_gap_in_every_series():
    tl = timeline([sample(1, {"tcp.listen_overflow": 10}), sample(2), sample(10, {"tcp.listen_overflow": 4}),
                   sample(11)])
    [gap] = tl.recording_gaps
    assert (gap.start, gap.end) == (T0 + 2, T0 + 9)
    series = tl.finding_series("tcp.listen_overflow")
    assert [v for _, v in series] == [10.0, 0.0, None, 4.0, 0.0]
    assert T0 + 2 < series[2][0] < T0 + 9
    assert [v for _, v in tl.layer_series("network")] == [0.0, 0.0, None, 0.0, 0.0]
    assert tl.coverage_ratio() == pytest.approx(4 / 11)


def test_back_to_back_samples_with_jitter_are_not_gaps():
    samples = [Sample(T0 + 1.0247 * i, 1.0247, {}, ()) for i in range(1, 50)]
    assert timeline(samples).recording_gaps == []


def test_an_unmeasurable_finding_makes_its_layer_unknown_not_smaller():
    tl = timeline([sample(1, {"tcp.listen_overflow": 5, "udp.rcvbuf_full": 3}),
                   sample(2, {"tcp.listen_overflow": 5}, gaps=["udp.rcvbuf_full"]),
                   sample(3, {"tcp.listen_overflow": 5, "udp.rcvbuf_full": 1})])
    assert [v for _, v in tl.layer_series("transport")] == [8.0, None, 6.0]
    assert [v for _, v in tl.finding_series("tcp.listen_overflow")] == [5.0, 5.0, 5.0]
    [unmeasured] = tl.unmeasured()
    assert (unmeasured.finding, unmeasured.intervals) == ("udp.rcvbuf_full", 1)


def test_a_finding_never_measurable_is_listed_and_left_out_of_its_layer():
    tl = timeline([sample(i, gaps=["cloud.allowance_exceeded"]) for i in range(1, 4)])
    assert tl.never_measured == ["cloud.allowance_exceeded"]
    assert [v for _, v in tl.layer_series("link")] == [0.0, 0.0, 0.0]
    assert tl.peaks() == [] and tl.unmeasured() == []


def test_squeezes_are_not_drops_in_layer_rates_but_have_their_own_peak():
    tl = timeline([sample(1, {"cpu.time_squeeze": 50, "cpu.backlog_drop": 2})])
    assert tl.layer_series("kernel") == [(T0 + 1, 2.0)]
    peaks = {p.finding: p for p in tl.peaks()}
    assert peaks["cpu.time_squeeze"].unit == "squeezes"
    assert [p.finding for p in tl.peaks()] == ["cpu.backlog_drop", "cpu.time_squeeze"]


def test_peaks_total_peak_and_mean_over_measured_time():
    tl = timeline([sample(1, {"tcp.listen_overflow": 10}, seconds=2.0), sample(3, {"tcp.listen_overflow": 30}),
                   sample(4, gaps=["tcp.listen_overflow"]), sample(5)])
    [peak] = tl.peaks()
    assert (peak.total, peak.peak_rate, peak.peak_ts) == (40, 30.0, T0 + 3)
    assert peak.mean_rate == pytest.approx(40 / 4.0)
    assert (peak.intervals_with_drops, peak.unmeasured_intervals) == (2, 1)


def test_a_zero_length_interval_has_no_rate():
    tl = timeline([sample(1, {"tcp.listen_overflow": 3}, seconds=0.0)])
    assert tl.finding_series("tcp.listen_overflow") == [(T0 + 1, None)]


def test_finding_ids_a_newer_dropdoc_recorded_go_to_an_unknown_layer():
    tl = timeline([sample(1, {"quic.new_drop": 4})])
    assert tl.layers[-1] == "unknown"
    assert tl.layer_series("unknown") == [(T0 + 1, 4.0)]


def test_bucket_peaks_keep_zero_and_missing_apart():
    spans = [(0.0, 1.0, 0.0), (1.0, 2.0, 5.0), (2.0, 3.0, None), (6.0, 7.0, 1.0)]
    assert bucket_peaks(spans, 2.0) == [(0.0, 5.0), (2.0, None), (4.0, None), (6.0, 1.0)]


def test_an_interval_counts_in_every_bucket_it_overlaps_but_not_one_it_only_touches():
    assert bucket_peaks([(0.5, 2.5, 3.0)], 1.0) == [(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)]
    assert bucket_peaks([(0.0, 1.0, 3.0), (1.0, 2.0, 1.0)], 1.0) == [(0.0, 3.0), (1.0, 1.0)]


def test_bucket_peaks_refuse_absurd_bucket_counts():
    with pytest.raises(ValueError):
        bucket_peaks([(0.0, 1e12, 1.0)], 1.0)


def test_choose_bucket_is_nice_and_never_shorter_than_a_sample():
    assert choose_bucket(300, 1.0, 24) == 15
    assert choose_bucket(7 * 86400, 1.0, 24) == 43200
    assert choose_bucket(60, 10.0, 600) == 10
    assert choose_bucket(400 * 86400, 1.0, 24) % 86400 == 0
    assert choose_bucket(float("nan"), None, 24) == 1


def test_round_trip_through_a_real_history_file(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        history.set_meta(hostname="web-1", netns="srv")
        history.append(Interval(wall=T0 + 1, seconds=1.0, drops={"tcp.listen_overflow": 7, "netfilter.drop": None}))
        history.append(Interval(wall=T0 + 2, seconds=1.0, drops={"tcp.listen_overflow": 0, "netfilter.drop": 3}))
    item = load_history(path)
    assert item.meta["hostname"] == "web-1"
    tl = Timeline(item.samples)
    assert [v for _, v in tl.finding_series("tcp.listen_overflow")] == [7.0, 0.0]
    assert [v for _, v in tl.layer_series("network")] == [None, 3.0]
    assert [v for _, v in tl.layer_series("transport")] == [7.0, 0.0]


def test_bucket_coverage_shows_the_part_of_a_bucket_nobody_recorded():
    spans = [(0.0, 1.0, 0.0), (1.0, 2.5, 0.0), (3.5, 6.0, 0.0)]
    assert bucket_coverage(spans, 2.0, [0.0, 2.0, 4.0], 0.0, 6.0) == [1.0, 0.5, 1.0]
    # the edges of the recorded period are not gaps
    assert bucket_coverage([(1.0, 3.0, 0.0)], 2.0, [0.0, 2.0], 1.0, 3.0) == [1.0, 1.0]


SAMPLES = st.lists(st.builds(
    Sample,
    ts=st.one_of(st.floats(min_value=0, max_value=4e9), st.sampled_from([T0, T0 + 1, float("inf"), 1e300])),
    seconds=st.one_of(st.floats(min_value=-5, max_value=1e6), st.sampled_from([0.0, 1.0, float("inf"), float("nan")])),
    drops=st.dictionaries(st.sampled_from([*LAYERS_OF, "new.id"]), st.integers(0, 2**62), max_size=3),
    gaps=st.lists(st.sampled_from([*LAYERS_OF, "new.id"]), max_size=2, unique=True).map(tuple)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(samples=SAMPLES)
def test_any_recorded_samples_render_without_invented_numbers(samples):
    item = HistoryInput("History", samples, {}, "h.db")
    for text in (html.render([item]), markdown.render([item])):
        assert not re.search(r"\bnan\b|\binf\b", text, re.IGNORECASE)


def test_damaged_rows_are_left_out_or_unknown_never_counted():
    tl = timeline([sample(1, {"tcp.listen_overflow": -5}), Sample(float("inf"), 1.0, {}, ()),
                   sample(2, {"tcp.listen_overflow": 4}, seconds=float("nan"))])
    assert tl.damaged == 1
    assert tl.finding_rates("tcp.listen_overflow") == [None, None]
    [peak] = tl.peaks()
    assert (peak.total, peak.unmeasured_intervals) == (0, 2)
