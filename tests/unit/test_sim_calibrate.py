"""Calibration from hand-built windows: which parameters are measured, from what, and which
stay defaults."""

from __future__ import annotations

import pytest

from dropdoc.errors import DropdocError
from dropdoc.sim import simulate
from dropdoc.sim.calibrate import describe_calibration, params_from_snapshot
from tests.unit.windows import Host, listener, make_window, stats


def overflowing_window():
    """The reference case seen by counters: 5 s, 1213 ListenOverflows, 480 passive opens,
    a listener with backlog 16 full in most samples; UDP delivering 250/s and dropping 750/s."""
    host = Host()
    host.sysctls["net.core.somaxconn"] = 16
    before = host.snapshot(0.0)
    host.bump("netstat", "TcpExt.ListenOverflows", 1213)
    host.bump("netstat", "TcpExt.ListenDrops", 1213)
    host.bump("snmp", "Tcp.PassiveOpens", 480)
    host.bump("snmp", "Udp.InDatagrams", 1250)
    host.bump("snmp", "Udp.RcvbufErrors", 3750)
    host.bump("link", "eth0.rx_packets", 20_000)
    after = host.snapshot(5.0)
    lst = listener(port=8080, backlog=16, queue=17)
    return make_window(before, after, listeners=[stats(lst, peak=17, full=40, samples=50, full_at_end=True)])


def test_window_gives_settings_and_rates():
    cal = params_from_snapshot(overflowing_window())
    p = cal.params
    assert p.somaxconn == 16 and "somaxconn" in cal.measured
    assert p.app_backlog == 16 and "sock_diag" in cal.measured["app_backlog"]
    assert p.conn_rate == pytest.approx((480 + 1213) / 5)
    assert p.accept_rate == pytest.approx(480 / 5)            # the queue overflowed: what the app took
    assert p.udp_rate == pytest.approx((1250 + 3750) / 5)
    assert p.read_rate == pytest.approx(1250 / 5)
    assert p.cpus == 4
    assert "rx_cost_us" in cal.defaulted and "burst_peak" in cal.defaulted
    assert any("upper bound" in note for note in cal.notes)
    text = "\n".join(describe_calibration(cal))
    assert "measured  conn_rate" in text and "defaults" in text
    # the calibrated model reproduces the finding the counters show
    result = simulate(p, seconds=5.0)
    assert result.bottleneck in ("tcp.listen_overflow", "udp.rcvbuf_full")
    assert result.drops["tcp.listen_overflow"] > 0 and result.drops["udp.rcvbuf_full"] > 0


def test_quiet_host_measures_no_load_and_no_accept_rate():
    host = Host()
    window = make_window(host.snapshot(0.0), host.snapshot(5.0))
    cal = params_from_snapshot(window)
    assert cal.params.conn_rate == 0 and cal.params.udp_rate == 0
    assert cal.params.accept_rate is None and "accept_rate" not in cal.measured
    assert simulate(cal.params, seconds=1.0).bottleneck is None


def test_single_snapshot_gives_settings_only():
    host = Host()
    host.sysctls["net.core.netdev_max_backlog"] = 4096
    cal = params_from_snapshot(host.snapshot(0.0))
    assert cal.params.netdev_max_backlog == 4096
    assert "conn_rate" in cal.defaulted
    assert any("no rates" in note for note in cal.notes)


def test_missing_sources_stay_defaults():
    host = Host(broken={"sysctls": ("needs-privilege", "no root"), "softnet": ("unavailable", "gone")})
    cal = params_from_snapshot(make_window(host.snapshot(0.0), host.snapshot(5.0)))
    assert "somaxconn" in cal.defaulted and cal.params.somaxconn == 4096


def test_not_a_snapshot_is_a_clear_error():
    with pytest.raises(DropdocError, match="cannot calibrate"):
        params_from_snapshot({"not": "a window"})


def backlog_window(processed: int, dropped: int):
    """The cpu-backlog lab seen by counters: RPS puts every datagram on CPU 1, whose backlog
    drains `processed` and drops `dropped` in a 3 s window."""
    host = Host()
    host.sysctls["net.core.netdev_max_backlog"] = 1
    before = host.snapshot(0.0)
    host.set_cpu(1, processed=1_000_000 + processed, dropped=dropped)
    host.set_cpu(0, processed=1_000_000 + 4 * processed)   # busier, but it dropped nothing
    return make_window(before, host.snapshot(3.0))


def test_softirq_time_gives_the_per_packet_cost_of_the_cpu_that_dropped():
    cpu_times = {"cpu0": {"softirq": 0.04, "steal": 0.0}, "cpu1": {"softirq": 0.12, "steal": 0.3}}
    cal = params_from_snapshot(backlog_window(3000, 37_000), cpu_times=cpu_times)
    assert cal.params.rx_cost_us == pytest.approx(40.0)
    assert "softirq 0.12 s / softnet processed 3000 on CPU 1" in cal.measured["rx_cost_us"]
    assert cal.params.softirq_share == pytest.approx(0.9) and "steal" in cal.measured["softirq_share"]
    assert cal.params.netdev_max_backlog == 1
    assert "rx_cost_us" not in cal.defaulted


def test_cost_stays_a_default_without_cpu_times_or_with_too_few_ticks():
    window = backlog_window(3000, 37_000)
    cal = params_from_snapshot(window)                       # a bundle: no /proc/stat
    assert "rx_cost_us" in cal.defaulted and any("not measured" in note for note in cal.notes)
    cal = params_from_snapshot(window, cpu_times={"cpu1": {"softirq": 0.01, "steal": 0.0}})
    assert "rx_cost_us" in cal.defaulted and any("too little softirq time" in note for note in cal.notes)


def test_measured_cost_makes_the_backlog_a_bottleneck_the_default_does_not():
    """The point of measuring it: at 1 us a packet a CPU drains 1 Mpps and 300k/s pass; at
    the measured 40 us it drains 25k/s and most of a 300k/s burst is dropped."""
    cpu_times = {"cpu1": {"softirq": 0.12, "steal": 0.0}}
    measured = params_from_snapshot(backlog_window(3000, 37_000), cpu_times=cpu_times).params
    load = dict(udp_rate=300_000, udp_total=40_000, rx_path="veth", rps_cpus=1, flows=2, poisson=False,
                udp_rcvbuf=1 << 26, rcvbuf_force=True)
    with_cost = simulate(measured.replace(**load), seconds=3.0).drops["cpu.backlog_drop"]
    default = simulate(measured.replace(rx_cost_us=1.0, **load), seconds=3.0).drops["cpu.backlog_drop"]
    assert 0.85 * 40_000 < with_cost < 40_000 and default < 0.01 * 40_000
