"""The window's counters sampled tick by tick (window.counter_interval, merge_pairs) and the
bursts found in them (rules/enrichers/bursts.py); and the load fields the softnet and UDP
enrichers add from them for `dropdoc fix`'s simulator. No /proc: hand-built windows."""

from __future__ import annotations

from itertools import pairwise

import pytest
from windows import Host, udp_socket

from dropdoc import delta
from dropdoc.rules import engine as rules
from dropdoc.rules.enrichers.bursts import Burst, find_bursts
from dropdoc.rules.enrichers.udp import datagram_size
from dropdoc.window import CounterInterval, Window, counter_interval, merge_pairs


def intervals(*drops, processed=100, seconds=0.1, name="softnet.cpu1"):
    return [CounterInterval(seconds, {f"{name}.dropped": d, f"{name}.processed": processed}) for d in drops]


# --- bursts ---------------------------------------------------------------------------------

def test_runs_of_intervals_with_drops_are_bursts_and_the_worst_is_kept():
    found = find_bursts(intervals(0, 5, 7, 0, 0, 40, 0), ("softnet.cpu1.dropped",),
                        {"processed": ("softnet.cpu1.processed",)})
    assert (found.samples, found.drop_samples, found.count) == (7, 3, 2)
    assert found.sampled_seconds == pytest.approx(0.7)
    assert found.worst == Burst(pytest.approx(0.1), 40, {"processed": 100})
    assert found.fields() == {"samples": 7, "drop_samples": 3, "sampled_seconds": 0.7, "bursts": 2,
                              "burst_seconds": 0.1, "burst_drops": 40}


def test_a_long_burst_sums_its_intervals():
    found = find_bursts(intervals(3, 3, 3, processed=50), ("softnet.cpu1.dropped",),
                        {"processed": ("softnet.cpu1.processed",)})
    assert found.worst == Burst(pytest.approx(0.3), 9, {"processed": 150}) and found.count == 1


def test_unknown_interval_ends_a_run_and_is_not_a_sample():
    found = find_bursts(intervals(4, None, 4), ("softnet.cpu1.dropped",))
    assert (found.samples, found.drop_samples, found.count, found.worst.drops) == (2, 2, 2, 4)


def test_several_counters_are_summed():
    values = [CounterInterval(0.1, {"Udp.RcvbufErrors": 2, "Udp6.RcvbufErrors": 3, "Udp.InDatagrams": 10})]
    found = find_bursts(values, ("Udp.RcvbufErrors", "Udp6.RcvbufErrors"), {"read": ("Udp.InDatagrams",)})
    assert found.worst.drops == 5 and found.worst.companions == {"read": 10}


@pytest.mark.parametrize("values", [[], intervals(None, None)])
def test_nothing_sampled_is_none(values):
    assert find_bursts(values, ("softnet.cpu1.dropped",)) is None


def test_no_drops_has_no_worst_burst():
    found = find_bursts(intervals(0, 0), ("softnet.cpu1.dropped",))
    assert found.count == 0 and found.worst is None and "burst_seconds" not in found.fields()


# --- sampling helpers (window.py) ---------------------------------------------------------------

def test_counter_interval_keeps_softnet_and_udp_and_handles_u32_wrap():
    host = Host()
    host.set_cpu(1, processed=(1 << 32) - 10)
    before = host.snapshot(0.0)
    host.set_cpu(1, processed=5, dropped=7)
    host.bump("snmp", "Udp.RcvbufErrors", 3)
    host.bump("netstat", "TcpExt.ListenOverflows", 9)        # not sampled
    interval = counter_interval(before, host.snapshot(0.1))
    assert interval.seconds == pytest.approx(0.1)
    assert interval.values["softnet.cpu1.processed"] == 15 and interval.values["softnet.cpu1.dropped"] == 7
    assert interval.values["Udp.RcvbufErrors"] == 3
    assert not any(name.startswith("TcpExt.") for name in interval.values)


def test_counter_interval_missing_counter_is_none():
    host = Host()
    before = host.snapshot(0.0)
    host.broken["softnet"] = ("failed", "gone")
    interval = counter_interval(before, host.snapshot(0.1))
    assert interval.values["softnet.cpu1.dropped"] is None


def test_merge_pairs_halves_resolution_and_keeps_totals():
    merged = merge_pairs(intervals(1, 2, 3, None, 5))
    assert [m.values["softnet.cpu1.dropped"] for m in merged] == [3, None, 5]
    assert [m.seconds for m in merged] == pytest.approx([0.2, 0.2, 0.1])
    assert merged[0].values["softnet.cpu1.processed"] == 200


# --- what the enrichers add ------------------------------------------------------------------------

def sampled_window(host: Host, steps) -> Window:
    """Snapshots 0.1 s apart, `steps` changing the host in between; intervals as measure() keeps them."""
    snaps = [host.snapshot(0.0)]
    for i, step in enumerate(steps, 1):
        step(host)
        snaps.append(host.snapshot(0.1 * i))
    return Window(snaps[0], snaps[-1], delta.compute(snaps[0], snaps[-1]), listeners={},
                  intervals=[counter_interval(a, b) for a, b in pairwise(snaps)])


def findings(window):
    return {f.id: f for f in rules.evaluate(window)[0]}


def test_softnet_subject_has_processed_and_its_worst_burst():
    def cpu1(processed, dropped):
        def step(host):
            c = next(c for c in host.softnet if c.cpu == 1)
            host.set_cpu(1, processed=c.processed + processed, dropped=c.dropped + dropped)
        return step
    window = sampled_window(Host(), [cpu1(10, 0), cpu1(3000, 400), cpu1(2000, 100), cpu1(10, 0)])
    subject = findings(window)["cpu.backlog_drop"].subjects[0]
    assert subject["cpu"] == 1 and subject["drops"] == 500 and subject["processed"] == 5020
    assert subject["burst_seconds"] == pytest.approx(0.2)
    assert (subject["burst_drops"], subject["burst_processed"], subject["bursts"]) == (500, 5000, 1)
    assert (subject["samples"], subject["drop_samples"]) == (4, 2)


def test_softnet_subject_without_samples_has_only_processed():
    host = Host()
    before = host.snapshot(0.0)
    host.set_cpu(1, processed=1_000_500, dropped=20)
    after = host.snapshot(5.0)
    window = Window(before, after, delta.compute(before, after), listeners={})
    assert findings(window)["cpu.backlog_drop"].subjects == [{"cpu": 1, "drops": 20, "processed": 500}]


def test_udp_finding_has_its_load_and_structured_app_fixes():
    host = Host()
    host.udp_sockets = [udp_socket(9000, 50001, 0)]

    def burst(read, dropped):
        def step(h):
            h.bump("snmp", "Udp.InDatagrams", read)
            h.bump("snmp", "Udp.RcvbufErrors", dropped)
            h.bump("snmp", "Udp.InErrors", dropped)
            h.udp_sockets = [udp_socket(9000, 50001, h.udp_sockets[0].drops + dropped)]
        return step
    window = sampled_window(host, [burst(1500, 0), burst(1500, 400), burst(1500, 0)])
    finding = findings(window)["udp.rcvbuf_full"]
    load = next(e for e in finding.evidence if e.get("source") == "window")
    assert load["datagrams_read"] == 4500 and load["datagrams_arrived"] == 4900
    assert (load["burst_drops"], load["burst_read"], load["bursts"]) == (400, 1500, 1)
    assert load["rmem_default"] == load["rmem_max"] == 212992
    reader = next(f for f in finding.fixes if f.get("setting") == "reader speed")
    assert reader["kind"] == "app" and "reads datagrams more slowly" in reader["text"]


@pytest.mark.parametrize("deltas,arrived,expected", [
    ({"dev.eth0.rx_packets": 3004, "dev.eth0.rx_bytes": 3004 * 554, "dev.lo.rx_packets": 4,
      "dev.lo.rx_bytes": 400}, 3000, ("eth0", 512)),
    ({"dev.eth0.rx_packets": 1000, "dev.eth0.rx_bytes": 1000 * 1442}, 900, ("eth0", 1400)),
    ({"dev.eth0.rx_packets": 90000, "dev.eth0.rx_bytes": 90000 * 1000}, 3000, None),   # mostly other traffic
    ({"dev.eth0.rx_packets": 3000, "dev.eth0.rx_bytes": None}, 3000, None),
    ({}, 3000, None),
])
def test_datagram_size_from_the_interface_that_carried_them(deltas, arrived, expected):
    found = datagram_size(deltas, arrived)
    assert (None if found is None else (found["interface"], found["datagram_bytes"])) == expected


def test_datagram_size_ipv6_headers():
    found = datagram_size({"dev.eth0.rx_packets": 100, "dev.eth0.rx_bytes": 100 * 1062}, 100, v6_share=1.0)
    assert found["datagram_bytes"] == 1000


def test_heavy_burst_of_a_fast_reader_is_explained_as_a_burst():
    """Most of a short burst was dropped, so on average the reader took < half of what
    arrived (the unsampled test says sustained); sampled, it read 2,000/s while full -
    far above the 233/s that arrived on average: a burst, which a bigger buffer absorbs."""
    host = Host()
    host.udp_sockets = [udp_socket(9000, 50001, 0)]

    def step(read, dropped):
        def bump(h):
            h.bump("snmp", "Udp.InDatagrams", read)
            h.bump("snmp", "Udp.RcvbufErrors", dropped)
            h.bump("snmp", "Udp.InErrors", dropped)
            h.udp_sockets = [udp_socket(9000, 50001, h.udp_sockets[0].drops + dropped)]
        return bump
    window = sampled_window(host, [step(0, 0)] * 10 + [step(200, 500)] + [step(0, 0)] * 19)
    explanation = findings(window)["udp.rcvbuf_full"].explanation
    assert explanation.startswith("bursts: the receivers read 2000.0/s while their buffers were full, faster "
                                  "than the 233.3/s that arrived on average")
    unsampled = Window(window.before, window.after, window.deltas, listeners={})
    assert findings(unsampled)["udp.rcvbuf_full"].explanation.startswith("sustained:")
