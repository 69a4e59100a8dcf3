"""Queue sizing (used by `dropdoc fix` to justify values) and property tests over parameter ranges."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.sim import SimParams, SimParamsError, simulate
from dropdoc.sim.sizing import changes_for_slots, size_queue, smallest_queue_without_drops

BURST = dict(rx_path="veth", udp_rate=1000, burst_peak=2.0, burst_length_s=0.1, burst_interval_s=100,
             burst_start_s=0.5, read_rate=1000, udp_truesize=1000, rcvbuf_force=True, poisson=False)


def test_smallest_udp_buffer_for_a_burst():
    p = SimParams(udp_rcvbuf=10 * 500, **BURST)            # 10 slots, the burst needs 100
    sizing = size_queue(p, "udp.rcvbuf_full", seconds=2.0)
    assert sizing.drops_before == pytest.approx(90, abs=1)
    assert sizing.slots in (100, 101)
    assert sizing.drops_after < 0.5
    # the request is half of sk_rcvbuf: 100 slots x 1000 bytes / 2
    assert sizing.changes["udp_rcvbuf"] == pytest.approx(sizing.slots * 500)
    assert smallest_queue_without_drops(p, "udp.rcvbuf_full", seconds=2.0) == sizing.changes["udp_rcvbuf"]
    # and the proposed value really does not drop
    after = simulate(p.replace(**sizing.changes), seconds=2.0)
    assert after.drops["udp.rcvbuf_full"] < 0.5


def test_smallest_accept_queue_for_the_reference_case():
    p = SimParams(rx_path="veth", conn_rate=400, conn_total=400, somaxconn=16, app_backlog=1024, accept_rate=100,
                  rtt_s=1e-4, poisson=False)
    sizing = size_queue(p, "tcp.listen_overflow", seconds=5.0)
    assert sizing.value is not None and 250 <= sizing.value <= 320   # ~300 above the 100/s accept rate
    assert sizing.changes["app_backlog"] == 1024                       # never lowered
    assert simulate(p.replace(**sizing.changes), seconds=5.0).drops["tcp.listen_overflow"] < 0.5


def test_sustained_overload_has_no_queue_size():
    p = SimParams(rx_path="veth", rps_cpus=1, udp_rate=2_000_000, rx_cost_us=1.0, netdev_max_backlog=100,
                  poisson=False)
    sizing = size_queue(p, "cpu.backlog_drop", seconds=0.5, upper_slots=1 << 16)
    assert sizing.slots is None and sizing.value is None
    assert "sustained overload" in sizing.reason


def test_no_drops_keeps_the_current_size():
    p = SimParams(rx_path="veth", rps_cpus=1, udp_rate=1000)
    sizing = size_queue(p, "cpu.backlog_drop", seconds=0.5)
    assert sizing.probes == 0 and sizing.slots == p.backlog_limit


def test_changes_for_slots_encode_the_kernel_rules():
    p = SimParams(somaxconn=128, app_backlog=511, syncookies=0, tcp_max_syn_backlog=128)
    assert changes_for_slots(p, "cpu.backlog_drop", 2001) == {"netdev_max_backlog": 2000}
    assert changes_for_slots(p, "tcp.listen_overflow", 1025) == {"somaxconn": 1024, "app_backlog": 1024}
    syn = changes_for_slots(p, "tcp.syn_queue_full", 1025)
    m = syn["tcp_max_syn_backlog"]
    assert p.replace(**syn).syn_queue_limit >= 1025 and m - (m >> 2) + 1 >= 1025
    assert changes_for_slots(p, "qdisc.drop", 5000) == {"qdisc_limit": 5000}
    udp = changes_for_slots(SimParams(udp_size=512, rmem_max=212992), "udp.rcvbuf_full", 1000)
    assert udp["udp_rcvbuf"] == 1000 * 1280 // 2 and udp["rmem_max"] == udp["udp_rcvbuf"]
    with pytest.raises(SimParamsError):
        changes_for_slots(p, "ip.no_route", 10)


def test_sizing_a_stage_this_path_does_not_have():
    with pytest.raises(SimParamsError):
        size_queue(SimParams(rx_path="veth"), "nic.rx_missed", seconds=0.1)


# ---- properties over parameter ranges ----------------------------------------------------------

params_strategy = st.builds(
    SimParams,
    udp_rate=st.floats(0, 5e6), udp_size=st.integers(0, 9000), conn_rate=st.floats(0, 5000),
    half_open_rate=st.floats(0, 500), other_rate=st.floats(0, 2e6), tx_rate=st.floats(0, 2e6),
    burst_peak=st.floats(1, 20), burst_length_s=st.floats(0, 0.5), burst_interval_s=st.floats(0.01, 2),
    arrival_batch=st.floats(1, 8), poisson=st.booleans(), seed=st.integers(0, 1000),
    rx_path=st.sampled_from(["nic", "veth"]), cpus=st.integers(1, 64), rx_queues=st.integers(1, 64),
    flows=st.integers(1, 10_000), ring_size=st.integers(1, 8192), rps_cpus=st.integers(0, 8),
    netdev_budget=st.integers(1, 1000), netdev_max_backlog=st.integers(0, 100_000),
    rx_cost_us=st.floats(0.01, 20), squeeze_overhead_us=st.floats(0, 50),
    somaxconn=st.integers(0, 65535), app_backlog=st.integers(0, 65535), syncookies=st.integers(0, 2),
    tcp_max_syn_backlog=st.integers(1, 65535), accept_rate=st.one_of(st.none(), st.floats(0, 1e5)),
    rtt_s=st.floats(0, 0.3), client_sends_after_s=st.one_of(st.none(), st.floats(0, 2)),
    client_close_at_s=st.one_of(st.none(), st.floats(0, 3)),
    udp_rcvbuf=st.one_of(st.none(), st.integers(1, 1 << 26)), read_rate=st.one_of(st.none(), st.floats(0, 1e6)),
    qdisc_limit=st.one_of(st.none(), st.integers(0, 100_000)), link_rate_bps=st.floats(1e3, 1e11),
    shaper_burst_bytes=st.integers(0, 1 << 20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params_strategy, st.floats(0.01, 1.5))
def test_any_parameters_give_sane_results(params, seconds):
    result = simulate(params, seconds=seconds)
    for key, stage in result.stages.items():
        for name in ("offered", "delivered", "dropped", "queued_end", "peak", "expired"):
            value = getattr(stage, name)
            assert math.isfinite(value) and value >= -1e-6, (key, name, value)
        assert stage.peak <= stage.limit + 1e-6 or math.isinf(stage.limit), key
        if key in ("nic.rx_missed", "cpu.backlog_drop", "udp.rcvbuf_full", "qdisc.drop"):
            assert math.isclose(stage.offered, stage.delivered + stage.dropped + stage.queued_end,
                                rel_tol=1e-6, abs_tol=1e-3), key
    assert all(v >= 0 for v in result.drops_per_s.values())
    assert result.squeezes_per_s >= 0
    assert result.bottleneck is None or result.bottleneck in result.stages
    assert isinstance(result.explain, str) and result.explain
    result.to_dict()
