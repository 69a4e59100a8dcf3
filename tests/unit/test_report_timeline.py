"""Drop rates over time from a history: gaps are None (never 0), layer sums refuse to add
up a partial layer, peaks and buckets count what was recorded."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropdoc.history import History, Sample, SampleColumns
from dropdoc.meter import Interval
from dropdoc.render import html, markdown
from dropdoc.render.report_inputs import HistoryInput, load_history
from dropdoc.render.timeline import Timeline, choose_bucket

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
    assert [v for _, v in series] == [10.0, 0.0, None, 4.0, 4.0, 0.0]
    assert T0 + 2 < series[2][0] < T0 + 9
    # the interval after the gap is drawn from its start: the line breaks exactly where
    # nobody recorded (it shaded one interval more)
    assert [x for x, _ in series[3:5]] == [T0 + 9, T0 + 10]
    assert [v for _, v in tl.layer_series("network")] == [0.0, 0.0, None, 0.0, 0.0, 0.0]
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


def spans(*intervals) -> Timeline:
    """A timeline of (start, end, rate) intervals of tcp.listen_overflow (rate None: a gap)."""
    samples = []
    for start, end, rate in intervals:
        drops = {} if rate is None else {"tcp.listen_overflow": round(rate * (end - start))}
        samples.append(Sample(end, end - start, drops, () if rate is not None else ("tcp.listen_overflow",)))
    return Timeline(samples, LAYERS_OF)


def test_bucket_peaks_keep_zero_and_missing_apart():
    tl = spans((0.0, 1.0, 0.0), (1.0, 2.0, 5.0), (2.0, 3.0, None), (6.0, 7.0, 1.0))
    expected = [(0.0, 5.0), (2.0, None), (4.0, None), (6.0, 1.0)]
    assert tl.finding_buckets("tcp.listen_overflow", 2.0) == expected
    assert tl.layer_buckets("transport", 2.0) == expected
    assert tl.layer_buckets("network", 2.0) == [(0.0, 0.0), (2.0, 0.0), (4.0, None), (6.0, 0.0)]


def test_an_interval_counts_in_every_bucket_it_overlaps_but_not_one_it_only_touches():
    assert spans((0.5, 2.5, 3.0)).finding_buckets("tcp.listen_overflow", 1.0) == [(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)]
    assert spans((0.0, 1.0, 3.0), (1.0, 2.0, 1.0)).finding_buckets("tcp.listen_overflow", 1.0) == \
        [(0.0, 3.0), (1.0, 1.0)]


def test_bucket_peaks_refuse_absurd_bucket_counts():
    with pytest.raises(ValueError):
        spans((0.0, 1e12, 1.0)).buckets(1.0)


def test_a_quiet_interval_is_zero_and_one_of_no_length_is_nothing():
    tl = timeline([sample(1, {"tcp.listen_overflow": 4}), sample(1.5, seconds=0.0), sample(2.5, seconds=0.5),
                   sample(4, {"tcp.listen_overflow": 1}, seconds=0.0)])
    assert tl.finding_buckets("tcp.listen_overflow", 1.0) == [(T0, 4.0), (T0 + 1, None), (T0 + 2, 0.0), (T0 + 3, None),
                                                             (T0 + 4, None)]


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
    assert len(tl) == 2
    assert [v for _, v in tl.finding_series("tcp.listen_overflow")] == [7.0, 0.0]
    assert [v for _, v in tl.layer_series("network")] == [None, 3.0]
    assert [v for _, v in tl.layer_series("transport")] == [7.0, 0.0]


def test_bucket_coverage_shows_the_part_of_a_bucket_nobody_recorded():
    tl = spans((0.0, 1.0, 0.0), (1.0, 2.5, 0.0), (3.5, 6.0, 0.0))
    assert tl.bucket_coverage(2.0) == [1.0, 0.5, 1.0]
    # the edges of the recorded period are not gaps
    assert spans((1.0, 3.0, 0.0)).bucket_coverage(2.0) == [1.0, 1.0]
    # intervals that overlap (an edited file): time covered twice counts once
    assert spans((0.0, 2.0, 0.0), (0.5, 2.5, 0.0), (3.5, 4.0, 0.0)).bucket_coverage(2.0) == [1.0, 0.5]


def test_columns_of_a_file_and_samples_make_the_same_timeline(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        for i in range(1, 40):
            if 10 <= i < 15:
                continue  # not recording
            drops = {"tcp.listen_overflow": 5 * (i % 4), "cloud.allowance_exceeded": None,
                     "netfilter.drop": None if i in (20, 21) else i % 3}
            history.append(Interval(wall=T0 + i, seconds=1.0, drops=drops))
        samples, columns = history.samples(), history.columns()
    assert columns.always_gaps == ("cloud.allowance_exceeded",)
    assert len(columns.gaps) == 2  # only netfilter.drop's: the always-missing one is counted, not listed
    a, b = Timeline(samples), Timeline(columns)
    assert a.never_measured == b.never_measured == ["cloud.allowance_exceeded"]
    assert a.peaks() == b.peaks() and a.unmeasured() == b.unmeasured()
    assert a.recording_gaps == b.recording_gaps
    for size in (1.0, 5.0, 60.0):
        for layer in a.layers:
            assert a.layer_buckets(layer, size) == b.layer_buckets(layer, size)
        for finding in ("tcp.listen_overflow", "netfilter.drop", "cloud.allowance_exceeded"):
            assert a.finding_buckets(finding, size) == b.finding_buckets(finding, size)
        assert a.bucket_coverage(size) == b.bucket_coverage(size)


def test_damaged_columns_are_left_out_or_unknown():
    columns = SampleColumns([T0 + 1, T0 + 2, "x", T0 + 3], [1.0, float("nan"), 1.0, -2.0],
                            [(T0 + 1, "tcp.listen_overflow", 4), (T0 + 3, "tcp.listen_overflow", -1),
                             (T0 + 9, "tcp.listen_overflow", 7)], [(T0 + 2, "netfilter.drop")])
    tl = Timeline(columns, LAYERS_OF)
    assert tl.damaged == 1 and len(tl) == 3
    assert tl.finding_rates("tcp.listen_overflow") == [4.0, None, None]   # no length, and a bad count
    [peak] = [p for p in tl.peaks() if p.finding == "tcp.listen_overflow"]
    assert (peak.total, peak.unmeasured_intervals) == (4, 2)   # the row of no sample is ignored


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


def reference_bucket_peaks(tl: Timeline, size: float, rate_of) -> list[tuple[float, float | None]]:
    """The definition, one sample at a time: the highest rate of the intervals overlapping
    each bucket (an interval ending on a boundary stays left of it); None if none has one."""
    placed = []
    for index, (end, seconds) in enumerate(zip(tl.recorded.ts, tl.recorded.seconds)):
        low = math.floor((end - seconds) / size)
        high = max(low, math.ceil(end / size) - 1)
        placed.append((low, high, rate_of(index)))
    first, last = min(p[0] for p in placed), max(p[1] for p in placed)
    peaks: list[float | None] = [None] * (last - first + 1)
    for low, high, value in placed:
        for k in range(low - first, high - first + 1):
            if value is not None and (peaks[k] is None or value > peaks[k]):
                peaks[k] = value
    return [((first + k) * size, v) for k, v in enumerate(peaks)]


TIMES = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 2.5, 7.0]),       # step to the next end
                           st.sampled_from([1.0, 1.0, 0.5, 0.0, 3.0, 30.0]),            # interval length
                           st.dictionaries(st.sampled_from([*LAYERS_OF, "new.id"]), st.integers(0, 50), max_size=2),
                           st.lists(st.sampled_from(["tcp.listen_overflow", "netfilter.drop"]), max_size=1)),
                 min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(rows=TIMES, size=st.sampled_from([1.0, 2.0, 5.0, 60.0]))
def test_sparse_buckets_agree_with_the_definition(rows, size):
    samples, ts = [], T0
    for step, seconds, drops, gaps in rows:
        ts += step
        samples.append(Sample(ts, seconds, drops, tuple(gaps)))
    tl = timeline(samples)
    for finding in ("tcp.listen_overflow", "netfilter.drop", "new.id"):
        assert tl.finding_buckets(finding, size) == reference_bucket_peaks(tl, size, lambda i: tl.rate(i, finding))
    for layer in tl.layers:
        assert tl.layer_buckets(layer, size) == reference_bucket_peaks(tl, size, lambda i: tl.layer_rate(i, layer))
