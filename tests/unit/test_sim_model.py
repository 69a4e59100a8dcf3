"""The packet-path model: conservation, monotonicity, analytic cases, determinism."""

from __future__ import annotations

import math

import pytest

from dropdoc.sim import SimParams, SimParamsError, simulate, udp_truesize
from dropdoc.sim.model import mm1k_excess_loss

SMOOTH = dict(poisson=False)           # a fluid without random arrivals: exact arithmetic
PACKET_STAGES = ("nic.rx_missed", "cpu.backlog_drop", "udp.rcvbuf_full", "qdisc.drop")


def conserved(st, rel: float = 1e-6) -> bool:
    left = st.offered
    right = st.delivered + st.dropped + st.queued_end + st.expired
    return math.isclose(left, right, rel_tol=rel, abs_tol=1e-6)


# ---- conservation -------------------------------------------------------------------------------

def test_every_packet_stage_conserves_packets():
    p = SimParams(udp_rate=2e6, other_rate=5e5, tx_rate=2e5, rps_cpus=2, ring_size=256,
                  read_rate=1e6, netdev_max_backlog=300, burst_peak=3, burst_length_s=0.05,
                  burst_interval_s=0.5, seed=7)
    result = simulate(p, seconds=2.0)
    for key in PACKET_STAGES:
        assert conserved(result.stages[key]), key
    assert any(result.stages[k].dropped > 0 for k in PACKET_STAGES)


def test_udp_end_to_end_every_datagram_is_accounted_for():
    p = SimParams(udp_rate=3e6, udp_total=1_000_000, rps_cpus=1, ring_size=128, read_rate=2e5,
                  udp_rcvbuf=1 << 20, rcvbuf_force=True, **SMOOTH)
    r = simulate(p, seconds=1.0).stages
    lost = sum(r[k].dropped for k in ("nic.rx_missed", "cpu.backlog_drop", "udp.rcvbuf_full"))
    queued = sum(r[k].queued_end for k in ("nic.rx_missed", "cpu.backlog_drop", "udp.rcvbuf_full"))
    assert math.isclose(lost + queued + r["udp.rcvbuf_full"].delivered, 1_000_000, rel_tol=1e-9)
    assert r["nic.rx_missed"].offered == pytest.approx(1_000_000)


def test_accept_queue_conserves_connections_without_receive_stages():
    p = SimParams(rx_path="veth", conn_rate=500, accept_rate=100, somaxconn=64, seed=3)
    st = simulate(p, seconds=3.0).stages["tcp.listen_overflow"]
    assert st.dropped > 0
    assert math.isclose(st.offered, st.delivered + st.dropped + st.queued_end, rel_tol=1e-9)


# ---- analytic cases ------------------------------------------------------------------------------

def test_constant_overload_drops_arrival_minus_service():
    # 1000 datagrams/s into a socket read at 400/s: once its 100 slots are full, 600/s are dropped
    p = SimParams(rx_path="veth", udp_rate=1000, read_rate=400, udp_truesize=1000, udp_rcvbuf=50_000,
                  rcvbuf_force=True, **SMOOTH)
    assert p.udp_queue_limit == 100
    st = simulate(p, seconds=10.0).stages["udp.rcvbuf_full"]
    assert st.dropped == pytest.approx(10 * (1000 - 400) - 100, abs=1.0)
    assert st.delivered == pytest.approx(4000, abs=1.0)
    assert st.peak == pytest.approx(100)


def test_constant_overload_at_the_cpu_backlog():
    # one RPS CPU at 2 us/packet drains 500k/s (no squeeze overhead); 800k/s arrive
    p = SimParams(rx_path="veth", rps_cpus=1, udp_rate=800_000, rx_cost_us=2.0, squeeze_overhead_us=0,
                  netdev_max_backlog=999, **SMOOTH)
    st = simulate(p, seconds=2.0).stages["cpu.backlog_drop"]
    assert st.capacity_per_s == pytest.approx(500_000)
    assert st.dropped == pytest.approx(2 * 300_000 - 1000, abs=1.0)   # after the 1000 slots filled


@pytest.mark.parametrize("slots, absorbed", [(100, True), (101, True), (90, False)])
def test_a_burst_of_b_above_service_is_absorbed_iff_the_queue_holds_b(slots, absorbed):
    # read 1000/s; for 0.1 s datagrams arrive at 2000/s: 100 above service
    p = SimParams(rx_path="veth", udp_rate=1000, burst_peak=2.0, burst_length_s=0.1, burst_interval_s=100,
                  burst_start_s=0.5, read_rate=1000, udp_truesize=1000, udp_rcvbuf=slots * 500,
                  rcvbuf_force=True, **SMOOTH)
    assert p.udp_queue_limit == slots
    st = simulate(p, seconds=2.0, dt=0.001).stages["udp.rcvbuf_full"]
    if absorbed:
        assert st.dropped < 0.5
    else:
        assert st.dropped == pytest.approx(100 - slots, abs=1.0)
    assert st.needed == pytest.approx(100, abs=1.0)


def test_accept_queue_holds_backlog_plus_one():
    # 10 connections at once, nobody accepts: backlog 4 keeps 5
    p = SimParams(rx_path="veth", conn_rate=10_000, conn_total=10, accept_rate=0.0, somaxconn=4,
                  app_backlog=128, syn_retries=0, client_sends_after_s=None, **SMOOTH)
    st = simulate(p, seconds=0.5).stages["tcp.listen_overflow"]
    assert p.listen_backlog == 4 and p.accept_queue_limit == 5
    assert st.peak == pytest.approx(5)
    assert st.queued_end == pytest.approx(5)


def test_syn_queue_full_with_syncookies_off_drops_half_open():
    p = SimParams(rx_path="veth", half_open_rate=100, half_open_total=150, app_backlog=8, syncookies=0,
                  client_give_up_s=3, **SMOOTH)
    r = simulate(p, seconds=3.5)
    syn = r.stages["tcp.syn_queue_full"]
    assert syn.peak == pytest.approx(9)
    # 141 refused at first, each retried after 1 s and after 3 s (give-up 3 s): ~2-3 drops each
    assert 2 * 141 <= syn.dropped <= 3 * 141 + 1
    assert r.bottleneck == "tcp.syn_queue_full"
    # the same load with SYN cookies: nothing dropped at the SYN queue
    cookies = simulate(p.replace(syncookies=1), seconds=3.5).stages["tcp.syn_queue_full"]
    assert cookies.dropped < 0.5


def test_listen_overflow_burst_fixed_by_a_bigger_backlog():
    base = SimParams(rx_path="veth", conn_rate=400, conn_total=400, somaxconn=16, app_backlog=1024,
                     accept_rate=100, rtt_s=1e-4)
    before = simulate(base, seconds=5.0)
    after = simulate(base.replace(somaxconn=1024), seconds=5.0)
    assert before.bottleneck == "tcp.listen_overflow"
    assert before.drops["tcp.listen_overflow"] > 300
    assert after.drops["tcp.listen_overflow"] < 0.5
    assert "burst" in before.explain.lower()


def test_sustained_overload_is_named_as_such():
    p = SimParams(rx_path="veth", conn_rate=1000, accept_rate=200, rtt_s=1e-4)
    r = simulate(p, seconds=5.0)
    assert r.bottleneck == "tcp.listen_overflow"
    assert "Sustained overload" in r.explain


def test_small_queue_loses_random_arrivals_below_saturation_but_not_a_smooth_flow():
    p = SimParams(rx_path="veth", rps_cpus=1, udp_rate=250_000, udp_total=40_000, netdev_max_backlog=1,
                  rx_cost_us=1.5)
    random_loss = simulate(p, seconds=1.0).drops["cpu.backlog_drop"]
    smooth_loss = simulate(p.replace(poisson=False), seconds=1.0).drops["cpu.backlog_drop"]
    assert smooth_loss < 0.5
    assert 0.02 * 40_000 < random_loss < 0.3 * 40_000


def test_qdisc_shaper_tail_drops_a_burst():
    # 2000 packets of 1042 bytes at 250k/s into tbf 100 Mbit/s, burst 16 KiB, limit 20 KiB
    p = SimParams(rx_path="veth", tx_rate=250_000, tx_total=2000, qdisc_limit=None, qdisc_limit_bytes=20_480,
                  link_rate_bps=100e6, shaper_burst_bytes=16_384, **SMOOTH)
    st = simulate(p, seconds=1.0).stages["qdisc.drop"]
    assert st.limit == 19
    sent_during_burst = 2000 / 250_000 * 100e6 / 8 / 1042 + 16_384 / 1042
    assert st.delivered == pytest.approx(sent_during_burst + 19, rel=0.1)


def test_time_squeeze_counted_when_a_cpu_stays_busy():
    # random arrivals at 40 % of the CPU: runs of more than 4 packets end rounds early
    p = SimParams(rx_path="veth", rps_cpus=1, udp_rate=400_000, netdev_budget=4, rx_cost_us=1.0)
    r = simulate(p, seconds=1.0)
    assert 1000 < r.squeezes_per_s < 10_000
    assert simulate(p.replace(netdev_budget=300), seconds=1.0).squeezes_per_s < 1
    # overloaded: every round is cut short
    busy = simulate(p.replace(udp_rate=2_000_000), seconds=1.0)
    assert busy.squeezes_per_s > 100_000


# ---- monotonicity ------------------------------------------------------------------------------

@pytest.mark.parametrize("poisson", [False, True])
def test_bigger_backlog_never_drops_more(poisson):
    base = SimParams(rx_path="veth", rps_cpus=1, udp_rate=400_000, burst_peak=3, burst_length_s=0.02,
                     burst_interval_s=0.2, rx_cost_us=1.5, poisson=poisson, seed=11)
    drops = [simulate(base.replace(netdev_max_backlog=n), seconds=1.0).drops["cpu.backlog_drop"]
             for n in (1, 10, 100, 1000, 10_000)]
    assert all(a >= b - 1e-6 for a, b in zip(drops, drops[1:]))
    assert drops[0] > drops[-1]


def test_bigger_accept_queue_never_drops_more():
    base = SimParams(rx_path="veth", conn_rate=300, conn_total=600, accept_rate=150, rtt_s=1e-4, seed=5)
    drops = [simulate(base.replace(somaxconn=n), seconds=6.0).drops["tcp.listen_overflow"]
             for n in (8, 32, 128, 512)]
    assert all(a >= b - 1e-6 for a, b in zip(drops, drops[1:]))


def test_bigger_ring_and_qdisc_never_drop_more():
    base = SimParams(udp_rate=9e6, burst_peak=2, burst_length_s=0.01, burst_interval_s=0.1, tx_rate=150_000,
                     burst_start_s=0.0, **SMOOTH)
    rings = [simulate(base.replace(ring_size=n), seconds=0.5).drops["nic.rx_missed"] for n in (64, 512, 4096)]
    assert rings[0] >= rings[1] >= rings[2]
    limits = [simulate(base.replace(qdisc_limit=n), seconds=0.5).drops["qdisc.drop"] for n in (10, 100, 10_000)]
    assert limits[0] >= limits[1] >= limits[2]


# ---- determinism and API ---------------------------------------------------------------------------

def test_same_seed_same_result_other_seed_other_result():
    p = SimParams(udp_rate=1e6, conn_rate=2000, rps_cpus=1, netdev_max_backlog=50, seed=42)
    a, b = simulate(p, seconds=1.0).to_dict(), simulate(p, seconds=1.0).to_dict()
    assert a == b
    c = simulate(p.replace(seed=43), seconds=1.0).to_dict()
    assert c["drops"] != a["drops"]


def test_result_shape_for_callers():
    r = simulate(SimParams(udp_rate=1000), seconds=2.0)
    assert set(r.drops) == set(r.drops_per_s) == set(r.delivered_per_s) == set(r.occupancy)
    assert {"nic.rx_missed", "tcp.listen_overflow", "tcp.syn_queue_full", "udp.rcvbuf_full",
            "qdisc.drop"} <= set(r.drops)
    assert all(len(points) <= 500 for points in r.occupancy.values())
    assert r.occupancy["udp.rcvbuf_full"][-1][0] == pytest.approx(2.0)
    assert r.bottleneck is None and "No drops" in r.explain
    assert r.to_dict()["schema"] == "dropdoc.sim/1"


def test_rps_adds_the_backlog_stage_and_veth_without_rps_notes_it():
    assert "cpu.backlog_drop" not in simulate(SimParams(), seconds=0.1).stages
    assert "cpu.backlog_drop" in simulate(SimParams(rps_cpus=2), seconds=0.1).stages
    veth = simulate(SimParams(rx_path="veth"), seconds=0.1)
    assert "nic.rx_missed" not in veth.stages and veth.notes


@pytest.mark.parametrize("seconds, dt", [(0, None), (-1, None), (float("nan"), None), (1.0, 0), (1.0, -0.1),
                                         (1e9, 1e-6)])
def test_bad_run_lengths_are_one_line_errors(seconds, dt):
    with pytest.raises(SimParamsError):
        simulate(SimParams(), seconds=seconds, dt=dt)


# ---- kernel rules encoded in the parameters ---------------------------------------------------------

def test_kernel_limits_from_settings():
    p = SimParams(somaxconn=16, app_backlog=1024)
    assert p.listen_backlog == 16 and p.accept_queue_limit == 17
    assert SimParams(somaxconn=4096, app_backlog=511).listen_backlog == 511
    assert SimParams(netdev_max_backlog=1).backlog_limit == 2
    # SO_RCVBUF doubled, capped by rmem_max unless forced; rmem_default as is
    assert SimParams(udp_rcvbuf=4096).rcvbuf_bytes == 8192
    assert SimParams(udp_rcvbuf=1 << 24, rmem_max=212992).rcvbuf_bytes == 2 * 212992
    assert SimParams(udp_rcvbuf=1 << 24, rmem_max=212992, rcvbuf_force=True).rcvbuf_bytes == 1 << 25
    assert SimParams(udp_rcvbuf=None, rmem_default=212992).rcvbuf_bytes == 212992
    # measured: a 4 KiB SO_RCVBUF holds 6 datagrams of 512 bytes (truesize 1280)
    assert SimParams(udp_rcvbuf=4096, udp_size=512).udp_queue_limit == 6
    # syncookies off: tcp_max_syn_backlog's last quarter is kept free
    assert SimParams(syncookies=0, tcp_max_syn_backlog=128, app_backlog=4096, somaxconn=4096).syn_queue_limit == 97
    # budget: packets per round, or fewer when the time limit comes first
    assert SimParams(netdev_budget=300, netdev_budget_usecs=100, rx_cost_us=1.0).round_packets == 100


@pytest.mark.parametrize("payload, truesize", [(0, 832), (64, 832), (196, 832), (200, 1280), (512, 1280),
                                               (644, 1280), (648, 2304), (1472, 2304), (1672, 4352),
                                               (3720, 8448), (7816, 16640)])
def test_udp_truesize_matches_measurements(payload, truesize):
    assert udp_truesize(payload) == truesize


def test_mm1k_excess_loss_properties():
    assert mm1k_excess_loss(0.0, 5) == 0.0
    assert mm1k_excess_loss(1.0, 1) == pytest.approx(0.5)
    # continuous at rho = 1
    assert mm1k_excess_loss(1.0 - 1e-7, 4) == pytest.approx(0.2, abs=1e-4)
    assert mm1k_excess_loss(1.0 + 1e-7, 4) == pytest.approx(0.2, abs=1e-4)
    # small for big queues, in [0, 1], never overflows
    assert mm1k_excess_loss(0.9, 1000) < 1e-40
    assert mm1k_excess_loss(50.0, 1000) < 1e-40
    for rho in (0.01, 0.5, 0.99, 1.5, 10, 1e6):
        for k in (1, 2, 10, 1e5):
            assert 0.0 <= mm1k_excess_loss(rho, k) <= 1.0
