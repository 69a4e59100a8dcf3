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
