"""The watch view as a pure function of the intervals seen: rendered to a string with a
fixed-width Console, plus the log and JSON lines."""

from __future__ import annotations

import io
import json

from rich.console import Console

from dropdoc.meter import Interval
from dropdoc.render import watch_view
from dropdoc.rules.engine import load_rules

T0 = 1_700_000_000.0
ALL = [rule.id for rule in load_rules()]


def make(t: float, seconds: float = 1.0, coverage: dict | None = None, **drops: int | None) -> Interval:
    values = dict.fromkeys(ALL, 0) | {"cloud.allowance_exceeded": None}
    values.update({k.replace("__", "."): v for k, v in drops.items()})
    return Interval(wall=T0 + t, seconds=seconds, drops=values,
                    coverage=coverage or {"snmp": "ok", "netstat": "ok"})


def state_with(*intervals: Interval, window_s: float = 10, **extra) -> watch_view.WatchState:
    state = watch_view.new_state("web1", "srv", 1.0, window_s, started=T0, **extra)
    for interval in intervals:
        state.add(interval)
    return state


def text_of(state: watch_view.WatchState, width: int = 110, now: float = T0 + 65) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, legacy_windows=False)
    console.print(watch_view.render(state, width=width, now=now))
    return out.getvalue()


def lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


def test_rows_sorted_by_recent_harm_with_sparklines():
    state = state_with(
        make(1, tcp__listen_overflow=10, udp__no_port=1),
        make(2, tcp__listen_overflow=0, udp__no_port=1),
        make(3, tcp__listen_overflow=None, udp__no_port=1),
        make(4, tcp__listen_overflow=20, udp__no_port=2),
    )
    text = text_of(state)
    table = text.splitlines()
    order = [line.split()[0] for line in table if line.startswith(("tcp.", "udp."))]
    assert order == ["tcp.listen_overflow", "udp.no_port"]        # 30 drops in the window before 5
    (listen,) = lines_with(text, "tcp.listen_overflow")
    # rate now 20, peak 20, total 30 (the unmeasured interval counts nothing), then the
    # sparkline: 10, 0, gap, 20 -> the gap is a space, the zero the lowest block.
    assert listen.split()[1:5] == ["transport", "20.0", "20.0", "30"]
    assert listen.endswith("▅▁ █")
    (no_port,) = lines_with(text, "udp.no_port")
    assert no_port.endswith("▅▅▅█")


def test_header_footer_and_the_quiet_line():
    state = state_with(make(1, tcp__listen_overflow=5), recording="/var/lib/h.db", recorded=1234,
                       retention="7d")
    text = text_of(state)
    header = text.splitlines()[0]
    assert "web1" in header and "netns srv" in header and "1m05s elapsed" in header and "1 intervals" in header
    quiet = lines_with(text, "quiet:")[0]
    assert f"quiet: {len(ALL) - 2} findings" in quiet
    assert "not measurable here: cloud.allowance_exceeded" in quiet
    assert "recording to /var/lib/h.db: 1,234 samples, keeping 7d" in text
    assert "not recording" in text_of(state_with(make(1)))


def test_sources_not_ok_are_named():
    bad = make(1, coverage={"snmp": "ok", "ethtool": "needs-privilege", "conntrack": "unavailable"})
    text = text_of(state_with(bad))
    assert "sources not ok: conntrack (unavailable), ethtool (needs-privilege)" in text
    assert "sources not ok" not in text_of(state_with(make(1)))


def test_a_finding_leaves_the_table_when_it_has_been_quiet_for_the_window():
    state = state_with(make(1, udp__rcvbuf_full=50), *[make(t) for t in range(2, 6)], window_s=3)
    assert not lines_with(text_of(state), "udp.rcvbuf_full")
    assert "no drops in the last 3 s" in text_of(state)
    assert state.totals["udp.rcvbuf_full"] == 50                  # still counted since start
    assert watch_view.rows(state_with(make(1, udp__rcvbuf_full=50), window_s=3))


def test_rate_now_unknown_is_a_dash_not_zero():
    state = state_with(make(1, tcp__listen_overflow=9), make(2, tcp__listen_overflow=None))
    (row,) = watch_view.rows(state)
    assert row.now is None and row.series == (9.0, None)
    (line,) = lines_with(text_of(state), "tcp.listen_overflow")
    assert line.split()[2] == "-"


def test_counts_that_are_not_drops_come_after_every_drop():
    state = state_with(make(1, cpu__time_squeeze=5000, udp__no_port=1))
    found = watch_view.rows(state)
    assert [r.finding for r in found] == ["udp.no_port", "cpu.time_squeeze"]
    assert found[1].unit == "squeezes"
    assert lines_with(text_of(state), "cpu.time_squeeze squeezes")


def test_rates_use_the_measured_interval_length():
    state = state_with(make(1, seconds=0.5, tcp__listen_overflow=100), make(2, seconds=2.0, tcp__listen_overflow=100))
    (row,) = watch_view.rows(state)
    assert row.series == (200.0, 50.0) and row.peak == 200.0 and row.now == 50.0


def test_narrow_terminal_shows_the_latest_part_of_the_sparkline():
    intervals = [make(t, tcp__listen_overflow=t) for t in range(1, 41)]
    state = state_with(*intervals, window_s=60)
    wide = lines_with(text_of(state, width=140), "tcp.listen_overflow")[0]
    narrow = lines_with(text_of(state, width=90), "tcp.listen_overflow")[0]
    assert len(narrow) <= 90
    spark_chars = set("▁▂▃▄▅▆▇█")
    assert sum(c in spark_chars for c in wide) == 40
    assert 0 < sum(c in spark_chars for c in narrow) < 40
    assert narrow.rstrip().endswith("█")           # the newest value is kept


def test_before_the_first_interval():
    text = text_of(state_with())
    assert "waiting for the first interval" in text and "quiet:" not in text


def test_window_in_intervals():
    assert watch_view.new_state("h", None, 0.5, 60).window == 120
    assert watch_view.new_state("h", None, 10, 5).window == 1
    state = state_with(*[make(t) for t in range(30)], window_s=10)
    assert len(state.recent) == 10 and state.intervals == 30


def test_plain_line_lists_non_zero_rates_most_drops_first():
    state = state_with()
    first = make(1, seconds=2.0, tcp__listen_overflow=286, udp__no_port=3)
    state.add(first)
    line = watch_view.plain_line(state, first)
    assert line == "2023-11-14T22:13:21Z tcp.listen_overflow=143/s(286) udp.no_port=1.5/s(3)"
    quiet = make(2)
    state.add(quiet)
    assert watch_view.plain_line(state, quiet).endswith("Z no drops")


def test_plain_line_names_findings_that_stopped_being_measurable():
    state = state_with(make(1))
    gone = make(2, tcp__listen_overflow=None)
    state.add(gone)
    line = watch_view.plain_line(state, gone)
    # never measured here (cloud.allowance_exceeded) is not news; tcp.listen_overflow is
    assert line.endswith("no drops | not measurable now: tcp.listen_overflow")


def test_json_line_has_every_finding_null_when_not_measured():
    state = state_with()
    interval = make(1, seconds=0.5, tcp__listen_overflow=10, netfilter__drop=None,
                    coverage={"snmp": "ok", "nftables": "failed"})
    state.add(interval)
    record = json.loads(json.dumps(watch_view.json_line(state, interval)))
    assert record["schema"] == "dropdoc.watch/1"
    assert set(record["drops"]) == set(ALL)
    assert record["drops"]["tcp.listen_overflow"] == 10
    assert record["drops"]["netfilter.drop"] is None and record["drops"]["udp.no_port"] == 0
    assert record["rate_per_s"] == {"tcp.listen_overflow": 20.0}
    assert record["sources_not_ok"] == {"nftables": "failed"}
    assert record["totals"]["tcp.listen_overflow"] == 10 and "netfilter.drop" not in record["totals"]
    assert record["netns"] == "srv" and record["time"] == T0 + 1 and record["seconds"] == 0.5


def test_fmt_helpers():
    assert [watch_view.fmt_rate(v) for v in (None, 0, 0.25, 99.94, 1234.5)] == ["-", "0", "0.2", "99.9", "1,234"]
    assert watch_view.fmt_elapsed(3725) == "1h02m05s" and watch_view.fmt_elapsed(-3) == "0m00s"


def lost(t: float, reason: str) -> Interval:
    return Interval(wall=T0 + t, seconds=1.0, drops=dict.fromkeys(ALL), lost=reason)


def test_an_interval_not_measured_says_why_instead_of_no_drops():
    gone = lost(2, "no network namespace named 'srv'")
    state = state_with(make(1, tcp__listen_overflow=4), gone)
    line = watch_view.plain_line(state, gone)
    assert line.endswith("not measured: no network namespace named 'srv'") and "no drops" not in line
    record = watch_view.json_line(state, gone)
    assert record["lost"] == "no network namespace named 'srv'"
    assert set(record["drops"].values()) == {None} and record["rate_per_s"] == {}
    assert watch_view.json_line(state, make(3))["lost"] is None
    text = text_of(state)
    assert "not measured in the last interval: no network namespace named 'srv'" in text
    (listen,) = lines_with(text, "tcp.listen_overflow")
    assert listen.split()[2] == "-" and listen.endswith("█ ")   # now: a gap, not 0


def test_a_notice_from_the_recorder_is_shown_under_the_footer():
    state = state_with(make(1), recording="h.db", recorded=5, retention="7d",
                       notice="the clock was set back: 3 samples stamped after 2023-11-14T22:13:21Z removed from h.db")
    assert "the clock was set back: 3 samples" in text_of(state, width=140)


def test_a_narrow_terminal_drops_columns_and_cuts_names_never_numbers():
    state = state_with(make(1, tcp__listen_overflow=10, cpu__time_squeeze=3), make(2, tcp__listen_overflow=5_000_000))
    for width in range(12, 141, 4):
        text = text_of(state, width=width)
        assert max(len(line) for line in text.splitlines()) <= width, width
        (listen,) = [line for line in text.splitlines() if line.startswith("tcp.")]
        numbers = [token for token in listen.split() if any(ch.isdigit() for ch in token)]
        assert set(numbers) <= {"5,000,000", "5,000,010"}, (width, listen)   # whole, or not shown
        if width >= 20:
            assert "5,000,000" in numbers, (width, listen)                     # the rate now stays longest
        if width >= 100:
            assert listen.split()[:2] == ["tcp.listen_overflow", "transport"] and "█" in listen
