"""The Meter behind `dropdoc watch` (and serve, history): drops per finding per interval
from hand-built snapshots (tests/unit/windows.py) - no /proc, no netlink."""

from __future__ import annotations

import itertools

import pytest
from windows import Host

from dropdoc.meter import Interval, Meter, _matching, drops_by_finding, run
from dropdoc.rules.engine import load_rules, matching


def sampled(host: Host, meter: Meter, t: float) -> Interval | None:
    return meter.sample(host.snapshot(t))


def test_first_sample_is_the_baseline_and_totals_start_at_the_counters():
    host, meter = Host(), Meter()
    assert sampled(host, meter, 0.0) is None
    assert meter.totals["tcp.listen_overflow"] == 1_532          # since boot, as far as counters know
    host.bump("netstat", "TcpExt.ListenOverflows", 286)
    found = sampled(host, meter, 5.0)
    assert found.drops["tcp.listen_overflow"] == 286
    assert found.rate("tcp.listen_overflow") == pytest.approx(57.2)
    assert found.seconds == pytest.approx(5.0)
    assert meter.totals["tcp.listen_overflow"] == 1_532 + 286
    assert found.drops["udp.no_port"] == 0                       # measured, quiet: 0, not None


def test_counter_reset_makes_that_interval_unknown_and_totals_never_shrink():
    host, meter = Host(), Meter()
    sampled(host, meter, 0)
    totals = [dict(meter.totals)]
    steps = [("bump", 40), ("reset", None), ("bump", 7), ("bump", 0)]
    seen = []
    for t, (kind, by) in enumerate(steps, start=1):
        if kind == "reset":  # namespace re-created: the counter starts again from a small value
            host.netstat["TcpExt"]["ListenOverflows"] = 3
        else:
            host.bump("netstat", "TcpExt.ListenOverflows", by)
        seen.append(sampled(host, meter, t).drops["tcp.listen_overflow"])
        totals.append(dict(meter.totals))
    assert seen == [40, None, 7, 0]   # the reset interval is unknown, never negative or invented
    for before, after in itertools.pairwise(totals):
        assert all(after[k] >= v for k, v in before.items())
    assert meter.totals["tcp.listen_overflow"] == 1_532 + 40 + 7


def test_u32_softnet_counter_wrap_is_counted():
    host, meter = Host(), Meter()
    host.set_cpu(1, dropped=2**32 - 10)
    sampled(host, meter, 0)
    host.set_cpu(1, dropped=5)
    found = sampled(host, meter, 1)
    assert found.drops["cpu.backlog_drop"] == 15


def test_source_missing_in_one_sample_is_a_gap_not_zero():
    host, meter = Host(), Meter()
    sampled(host, meter, 0)
    host.broken["netstat"] = ("failed", "netstat: truncated")
    host.bump("netstat", "TcpExt.ListenOverflows", 10)
    gap = sampled(host, meter, 1)
    assert gap.drops["tcp.listen_overflow"] is None
    assert gap.rate("tcp.listen_overflow") is None
    assert gap.coverage["netstat"] == "failed" and gap.errors["netstat"]
    assert gap.drops["udp.no_port"] == 0  # another source still measures its findings


def test_reset_of_a_counter_a_special_count_subtracts_is_unknown():
    # socket.filter_drop = InErrors - RcvbufErrors - ...: a reset RcvbufErrors would
    # otherwise turn all of InErrors into invented socket-filter drops.
    host, meter = Host(), Meter()
    host.snmp["Udp"]["RcvbufErrors"] = 500
    host.snmp["Udp"]["InErrors"] = 500
    sampled(host, meter, 0)
    host.snmp["Udp"]["RcvbufErrors"] = 2
    host.snmp["Udp"]["InErrors"] = 510
    assert sampled(host, meter, 1).drops["socket.filter_drop"] is None
    host.bump("snmp", "Udp.InErrors", 4)
    host.bump("snmp", "Udp.RcvbufErrors", 1)
    assert sampled(host, meter, 2).drops["socket.filter_drop"] == 3


def test_per_device_counters_count_the_largest_per_device():
    host, meter = Host(), Meter()
    sampled(host, meter, 0)
    host.bump("link", "eth0.rx_missed_errors", 30)
    host.bump("link", "eth0.rx_fifo_errors", 30)   # the same drops counted twice by the driver
    found = sampled(host, meter, 1)
    assert found.drops["nic.rx_missed"] == 30


def test_by_layer_leaves_out_counts_that_are_not_drops():
    host, meter = Host(), Meter()
    sampled(host, meter, 0)
    host.bump("netstat", "TcpExt.ListenOverflows", 5)
    host.set_cpu(0, time_squeeze=100)
    found = sampled(host, meter, 1)
    assert found.drops["cpu.time_squeeze"] == 100
    assert found.by_layer()["transport"] == 5
    assert found.by_layer().get("kernel", 0) == 0


def test_drops_by_finding_unknown_when_no_counter_is_known():
    drops = drops_by_finding({"TcpExt.ListenOverflows": 9})
    assert drops["tcp.listen_overflow"] == 9
    assert drops["udp.no_port"] is None
    assert drops["socket.filter_drop"] is None
    assert set(drops) == {r.id for r in load_rules()}


def test_cached_matching_equals_the_engines():
    counters = Host().snapshot(0).counters() | {"conntrack.cpu0.drop": 1, "conntrack.cpu1.drop": None}
    for rule in load_rules():
        assert _matching(rule.drop_counters, counters) == matching(rule.drop_counters, counters)
    # New names (a device appears) are seen, not hidden by the cache.
    counters["link.eth9.rx_missed_errors"] = 4
    assert "link.eth9.rx_missed_errors" in _matching(("link.*.rx_missed_errors",), counters)


class FakeMeter:
    def __init__(self):
        self.calls = 0

    def sample(self):
        self.calls += 1
        return None if self.calls == 1 else Interval(wall=float(self.calls), seconds=1.0, drops={})


def test_run_counts_intervals_and_calls_back():
    meter, got, started = FakeMeter(), [], []
    done = run(meter, 0.001, samples=3, on_interval=got.append, sleep=lambda s: None,
               on_start=lambda: started.append(meter.calls))
    assert done == 3 and len(got) == 3 and meter.calls == 4
    assert started == [1]  # after the baseline, before the first interval


class StopAfter:
    """A stop flag set after n waits (like a Ctrl-C during the n-th wait)."""

    def __init__(self, n):
        self.n, self.waits = n, 0

    def is_set(self):
        return self.waits >= self.n

    def wait(self, timeout):
        self.waits += 1
        return self.is_set()


def test_run_stops_between_samples_when_stopped():
    meter, got = FakeMeter(), []
    done = run(meter, 0.001, samples=None, on_interval=got.append, stop=StopAfter(3))
    assert done == 2 and len(got) == 2 and meter.calls == 3  # baseline + 2; the 3rd wait stopped it


# --- intervals that cannot be counted whole ---------------------------------------------------

class NamespaceMeter(Meter):
    """A Meter over a hand-built Host whose namespace can vanish (snapshot raises)."""

    def __init__(self, host: Host) -> None:
        super().__init__(netns="srv")
        self.host, self.t, self.fail = host, 0.0, None

    def _namespace_identity(self):
        return 4026532100

    def snapshot(self):
        if self.fail is not None:
            raise self.fail
        self.t += 1.0
        return self.host.snapshot(self.t)


def test_a_source_failing_at_either_end_makes_its_findings_unknown_not_a_partial_sum():
    # udp.no_port = Udp.NoPorts (snmp) + Udp6.NoPorts (snmp6). With snmp failing, Udp6
    # alone would be reported as the finding's count: too small, and looking measured.
    host, meter = Host(), Meter()
    sampled(host, meter, 0)
    host.broken["snmp"] = ("failed", "snmp: truncated")
    host.bump("snmp", "Udp.NoPorts", 100)
    host.bump("snmp6", "Udp6.NoPorts", 3)
    assert sampled(host, meter, 1).drops["udp.no_port"] is None
    host.broken.clear()
    host.bump("snmp", "Udp.NoPorts", 10)
    assert sampled(host, meter, 2).drops["udp.no_port"] is None   # came back: this interval began without it
    host.bump("snmp", "Udp.NoPorts", 4)
    assert sampled(host, meter, 3).drops["udp.no_port"] == 4
    assert meter.measurable() >= {"udp.no_port", "tcp.listen_overflow"}
    host.broken["snmp"] = ("failed", "snmp: truncated")
    sampled(host, meter, 4)
    assert "udp.no_port" not in meter.measurable() and "tcp.listen_overflow" in meter.measurable()


def test_a_source_that_never_worked_leaves_the_other_counters_measured():
    # IPv6 disabled from the start: there is no Udp6 traffic to miss.
    host, meter = Host(), Meter()
    host.broken["snmp6"] = ("unavailable", "no /proc/net/snmp6")
    sampled(host, meter, 0)
    host.bump("snmp", "Udp.NoPorts", 5)
    assert sampled(host, meter, 1).drops["udp.no_port"] == 5


def test_a_source_failing_from_the_first_sample_makes_its_findings_unknown():
    # Its counter names were never learned: the source's name prefixes say what it feeds
    # (snmp gives Udp.*, so udp.no_port from Udp6 alone would be a partial sum).
    host, meter = Host(), Meter()
    host.broken["snmp"] = ("failed", "snmp: truncated")
    sampled(host, meter, 0)
    host.bump("snmp6", "Udp6.NoPorts", 7)
    host.bump("netstat", "TcpExt.ListenOverflows", 2)
    interval = sampled(host, meter, 1)
    assert interval.drops["udp.no_port"] is None
    assert interval.drops["tcp.listen_overflow"] == 2
    assert "udp.no_port" not in meter.measurable() and "tcp.listen_overflow" in meter.measurable()


def test_namespace_lost_then_back_is_unknown_then_a_new_baseline():
    from dropdoc.errors import UnknownNetns

    host = Host()
    meter = NamespaceMeter(host)
    assert meter.sample() is None
    total = meter.totals["tcp.listen_overflow"]
    meter.fail = UnknownNetns("no network namespace named 'srv'")
    gone = meter.sample()
    assert set(gone.drops.values()) == {None} and "no network namespace" in gone.lost
    assert meter.sample().lost                        # still gone: still nothing known
    meter.fail = None
    host.bump("netstat", "TcpExt.ListenOverflows", 500)   # whatever happened meanwhile ...
    back = meter.sample()
    assert set(back.drops.values()) == {None} and back.lost.startswith("new baseline (no network namespace")
    assert meter.totals["tcp.listen_overflow"] == total  # ... is not counted, nor are totals reset
    host.bump("netstat", "TcpExt.ListenOverflows", 7)
    assert meter.sample().drops["tcp.listen_overflow"] == 7
    assert meter.totals["tcp.listen_overflow"] == total + 7


def test_namespace_missing_at_the_first_sample_is_the_callers_one_line_error():
    from dropdoc.errors import UnknownNetns

    meter = NamespaceMeter(Host())
    meter.fail = UnknownNetns("no network namespace named 'srv'")
    with pytest.raises(UnknownNetns):
        meter.sample()


def test_namespace_recreated_between_samples_is_a_new_baseline():
    host = Host()
    meter = NamespaceMeter(host)
    meter.sample()
    meter._namespace_identity = lambda: 4026532999     # another namespace under the same name
    host.bump("netstat", "TcpExt.ListenOverflows", 40)  # its counters are not a delta of the old one's
    interval = meter.sample()
    assert interval.drops["tcp.listen_overflow"] is None and "re-created" in interval.lost
    host.bump("netstat", "TcpExt.ListenOverflows", 2)
    assert meter.sample().drops["tcp.listen_overflow"] == 2
