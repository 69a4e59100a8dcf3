"""Rule test cases: hand-built windows (counters, sockets, sysctls) -> expected findings.

Every catalogue id has a positive and a negative case here (test_every_rule_has_cases
fails when a rule is added without one).
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from dropdoc import delta, rules
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.model import EXIT_CRITICAL, EXIT_HEALTHY, EXIT_NOT_MEASURED, EXIT_WARNING
from dropdoc.rules.engine import load_rules, parse_rules
from dropdoc.sources.process_sockets import SocketOwners

from windows import Host, cpu, listener, make_window, quiet_window, stats, udp_socket

PAYMENTS = SocketOwners({40001: (4242, "payments")})


ORIGINAL_IDS = {"tcp.listen_overflow", "tcp.syn_queue_full", "udp.rcvbuf_full", "udp.no_port",
                "cpu.backlog_drop", "nic.rx_missed"}


def evaluate(window):
    """All rules run (a new rule firing here would show in ids), but not_evaluated is
    limited to the rules this file is about: the test Host carries only their sources;
    the other areas' rules are covered by tests/unit/test_rules_<area>.py."""
    findings, not_evaluated = rules.evaluate(window)
    mine = {k: v for k, v in not_evaluated.items() if k in ORIGINAL_IDS}
    return {f.id: f for f in findings}, [f.id for f in findings], mine


def fixes_of(finding, kind):
    return [f for f in finding.fixes if f["kind"] == kind]


def sysctl_fix(finding, key):
    matches = [f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == key]
    assert len(matches) <= 1
    return matches[0] if matches else None


def evidence_delta(finding, counter):
    return next(e["delta"] for e in finding.evidence if e.get("counter") == counter)


# --- one positive scenario per catalogue id -----------------------------------------------
# Each bumps the counters of one kind of drop on a Host between two snapshots 5 s apart.

def listen_overflow(host: Host) -> None:
    host.bump("netstat", "TcpExt.ListenOverflows", 286)
    host.bump("netstat", "TcpExt.ListenDrops", 286)
    host.bump("snmp", "Tcp.PassiveOpens", 1500)


def syn_queue_full(host: Host) -> None:
    host.bump("netstat", "TcpExt.TCPReqQFullDrop", 40)
    host.bump("netstat", "TcpExt.ListenDrops", 40)


def rcvbuf_full(host: Host) -> None:
    host.bump("snmp", "Udp.RcvbufErrors", 5000)
    host.bump("snmp", "Udp.InErrors", 5000)


def no_port(host: Host) -> None:
    host.bump("snmp", "Udp.NoPorts", 500)
    host.bump("snmp", "Icmp.OutDestUnreachs", 500)


def backlog_drop(host: Host) -> None:
    host.set_cpu(2, dropped=300, time_squeeze=12)


def rx_missed(host: Host) -> None:
    host.bump("link", "eth0.rx_missed_errors", 120)


SCENARIOS = {
    "tcp.listen_overflow": listen_overflow,
    "tcp.syn_queue_full": syn_queue_full,
    "udp.rcvbuf_full": rcvbuf_full,
    "udp.no_port": no_port,
    "cpu.backlog_drop": backlog_drop,
    "nic.rx_missed": rx_missed,
}


def window_with(*scenarios, host: Host | None = None, seconds: float = 5.0, listeners=()):
    host = host or Host()
    before = host.snapshot(0.0)
    for scenario in scenarios:
        scenario(host)
    return make_window(before, host.snapshot(seconds), list(listeners))


def test_every_rule_has_cases():
    """Every catalogue id is exercised by a rule test (this file or tests/unit/test_rules_<area>.py)."""
    import pathlib

    here = pathlib.Path(__file__).parent
    text = "\n".join(p.read_text(encoding="utf-8") for p in here.glob("test_rules*.py"))
    missing = [rule.id for rule in load_rules() if f'"{rule.id}"' not in text]
    assert missing == []
    assert set(SCENARIOS) <= {rule.id for rule in load_rules()}


@pytest.mark.parametrize("rule_id", sorted(SCENARIOS))
def test_positive_fires_only_its_rule(rule_id):
    by_id, ids, not_evaluated = evaluate(window_with(SCENARIOS[rule_id]))
    assert ids == [rule_id]
    assert not_evaluated == {}
    finding = by_id[rule_id]
    assert finding.drops > 0
    assert finding.rate_per_s == pytest.approx(finding.drops / 5.0)
    assert finding.runbook.startswith("docs/runbook.md#")
    assert str(finding.drops) in finding.summary


@pytest.mark.parametrize("rule_id", sorted(SCENARIOS))
def test_negative_quiet_window_fires_nothing(rule_id):
    by_id, ids, not_evaluated = evaluate(quiet_window())
    assert rule_id not in by_id
    assert ids == []
    assert not_evaluated == {}


# --- tcp.listen_overflow ------------------------------------------------------------------

def reference_case(somaxconn=128, backlog=128, stat=None, owners=PAYMENTS, drops=286):
    """The payment service: accept queue of 0.0.0.0:8080 overflows, backlog capped at 128."""
    host = Host()
    host.sysctls["net.core.somaxconn"] = somaxconn
    host.owners = owners
    lst = listener(port=8080, backlog=backlog, queue=backlog + 1, inode=40001)
    host.tcp_listeners = [lst]

    def overflow(h):
        h.bump("netstat", "TcpExt.ListenOverflows", drops)
        h.bump("netstat", "TcpExt.ListenDrops", drops)

    if stat is None:
        stat = stats(lst, peak=backlog + 1, full=10, samples=50, full_at_end=False)
    listeners = [stat] if stat is not False else []
    return window_with(overflow, host=host, listeners=listeners)


def test_listen_overflow_capped_by_somaxconn():
    by_id, ids, _ = evaluate(reference_case())
    f = by_id["tcp.listen_overflow"]
    assert (f.layer, f.severity, f.drops, f.benign) == ("transport", "critical", 286, False)
    assert f.rate_per_s == pytest.approx(57.2)
    assert evidence_delta(f, "TcpExt.ListenOverflows") == 286
    assert evidence_delta(f, "TcpExt.ListenDrops") == 286
    assert len(f.subjects) == 1
    subject = f.subjects[0]
    assert subject["socket"] == "0.0.0.0:8080"
    assert (subject["pid"], subject["process"]) == (4242, "payments")
    assert (subject["backlog"], subject["somaxconn"], subject["capped_by"]) == (128, 128, "somaxconn")
    assert subject["accept_queue"] == 129
    assert "suspected" not in subject
    fix = sysctl_fix(f, "net.core.somaxconn")
    assert fix["current"] == 128
    # room for what was dropped on top of what fitted: next power of two >= 128 + 286
    assert fix["proposed"] == 512 > fix["current"]
    assert fix["netns"] == "srv"
    assert fix["scope"] == "per network namespace"
    assert "pid 4242" in fix["note"] and "listen() again" in fix["note"]
    app = fixes_of(f, "app")
    assert len(app) == 1
    assert "pid 4242 (payments)" in app[0]["text"] and "512" in app[0]["text"]
    assert any(e.get("source") == "sock_diag" and e["accept_queue_peak"] == 129 for e in f.evidence)


def test_listen_overflow_capped_by_app_backlog():
    host_window = reference_case(somaxconn=4096, backlog=511, drops=100)
    f = evaluate(host_window)[0]["tcp.listen_overflow"]
    subject = f.subjects[0]
    assert (subject["backlog"], subject["somaxconn"], subject["capped_by"]) == (511, 4096, "listen() backlog")
    # 2 * 511 -> 1024 fits under somaxconn 4096: the fix is in the app only
    assert sysctl_fix(f, "net.core.somaxconn") is None
    app = fixes_of(f, "app")
    assert len(app) == 1
    assert "asked listen() for a backlog of 511" in app[0]["text"]
    assert "backlog=1024" in app[0]["text"]


def test_listen_overflow_app_cap_needs_somaxconn_too_when_proposal_exceeds_it():
    # backlog 511 < somaxconn 1024, but the proposed backlog (4096) would be clamped to
    # somaxconn: both the app setting and the sysctl must change.
    f = evaluate(reference_case(somaxconn=1024, backlog=511, drops=2000))[0]["tcp.listen_overflow"]
    assert f.subjects[0]["capped_by"] == "listen() backlog"
    fix = sysctl_fix(f, "net.core.somaxconn")
    assert (fix["current"], fix["proposed"]) == (1024, 4096)
    assert "pid 4242" in fix["note"]
    assert "backlog=4096" in fixes_of(f, "app")[0]["text"]


def test_listen_overflow_burst():
    f = evaluate(reference_case())[0]["tcp.listen_overflow"]
    assert f.explanation.startswith("bursts")
    assert not any("accepts more slowly" in fix["text"] for fix in fixes_of(f, "app"))


def test_listen_overflow_sustained():
    lst = listener(backlog=128, queue=129, inode=40001)
    f = evaluate(reference_case(stat=stats(lst, peak=129, full=50, samples=50, full_at_end=True)))[0][
        "tcp.listen_overflow"]
    assert f.explanation.startswith("sustained overload")
    slow = [fix for fix in fixes_of(f, "app") if "accepts more slowly" in fix["text"]]
    assert len(slow) == 1 and "0.0.0.0:8080" in slow[0]["text"]
    # the bigger queue is still proposed (it absorbs the bursts on top), not instead
    assert sysctl_fix(f, "net.core.somaxconn")["proposed"] == 512


def test_listen_overflow_full_most_of_window_but_drained_at_end_is_not_sustained():
    lst = listener(backlog=128, queue=3, inode=40001)
    f = evaluate(reference_case(stat=stats(lst, peak=129, full=49, samples=50, full_at_end=False)))[0][
        "tcp.listen_overflow"]
    assert f.explanation.startswith("bursts")


def test_listen_overflow_full_only_at_the_end_is_a_burst():
    lst = listener(backlog=128, queue=129, inode=40001)
    f = evaluate(reference_case(stat=stats(lst, peak=129, full=5, samples=50, full_at_end=True)))[0][
        "tcp.listen_overflow"]
    assert f.explanation.startswith("bursts")
    assert not any("accepts more slowly" in fix["text"] for fix in fixes_of(f, "app"))


def test_listen_overflow_no_listener_seen():
    f = evaluate(reference_case(stat=False))[0]["tcp.listen_overflow"]
    assert f.subjects == []
    assert f.severity == "critical" and f.drops == 286
    assert "no listening socket was seen" in f.explanation
    # without a socket the sysctl fix is still derived from the numbers
    fix = sysctl_fix(f, "net.core.somaxconn")
    assert (fix["current"], fix["proposed"]) == (128, 512)
    assert "the listening application" in fix["note"]


def test_listen_overflow_suspected_listener_when_never_seen_full():
    busy = listener(port=8080, backlog=128, queue=0, inode=40001)
    idle = listener(port=22, backlog=128, queue=0, inode=40002)
    window = reference_case(stat=stats(busy, peak=90, full=0, samples=50, full_at_end=False))
    window.listeners[40002] = stats(idle, peak=0, full=0, samples=50, full_at_end=False)
    f = evaluate(window)[0]["tcp.listen_overflow"]
    assert [s["socket"] for s in f.subjects] == ["0.0.0.0:8080"]
    assert f.subjects[0]["suspected"] is True
    assert f.subjects[0]["accept_queue"] == 90


def test_listen_overflow_owner_unknown_without_root():
    f = evaluate(reference_case(owners=SocketOwners(unreadable_pids=12)))[0]["tcp.listen_overflow"]
    assert (f.subjects[0]["pid"], f.subjects[0]["process"]) == (None, None)
    assert "owner unknown" in sysctl_fix(f, "net.core.somaxconn")["note"]


def test_listen_overflow_listen_drops_alone_is_not_an_overflow():
    def drops_only(h):
        h.bump("netstat", "TcpExt.ListenDrops", 7)  # e.g. SYN to a listener being closed
    by_id, _, not_evaluated = evaluate(window_with(drops_only))
    assert "tcp.listen_overflow" not in by_id
    assert "tcp.listen_overflow" not in not_evaluated


# --- tcp.syn_queue_full -------------------------------------------------------------------

def test_syn_queue_full_with_syncookies_off():
    host = Host()
    host.sysctls["net.ipv4.tcp_syncookies"] = 0
    f = evaluate(window_with(syn_queue_full, host=host))[0]["tcp.syn_queue_full"]
    assert (f.severity, f.drops, f.layer) == ("critical", 40, "transport")
    assert f.rate_per_s == pytest.approx(8.0)
    backlog = sysctl_fix(f, "net.ipv4.tcp_max_syn_backlog")
    assert (backlog["current"], backlog["proposed"]) == (2048, 4096)
    assert "listen backlog" in backlog["note"]
    cookies = sysctl_fix(f, "net.ipv4.tcp_syncookies")
    assert (cookies["current"], cookies["proposed"]) == (0, 1)
    assert "no kernel drop reason" in f.explanation


def test_syn_queue_full_with_syncookies_on_proposes_no_cookie_change():
    f = evaluate(window_with(syn_queue_full))[0]["tcp.syn_queue_full"]
    assert sysctl_fix(f, "net.ipv4.tcp_syncookies") is None
    assert sysctl_fix(f, "net.ipv4.tcp_max_syn_backlog")["current"] == 2048


def test_syn_cookies_sent_are_not_drops():
    def cookies(h):
        h.bump("netstat", "TcpExt.TCPReqQFullDoCookies", 900)
        h.bump("netstat", "TcpExt.SyncookiesSent", 900)
    by_id, ids, not_evaluated = evaluate(window_with(cookies))
    assert ids == [] and not_evaluated == {}


def test_syn_queue_full_not_evaluated_on_kernel_without_counter():
    host = Host()
    del host.netstat["TcpExt"]["TCPReqQFullDrop"]
    by_id, _, not_evaluated = evaluate(window_with(listen_overflow, host=host))
    assert not_evaluated == {"tcp.syn_queue_full": "counters not available"}
    assert "tcp.syn_queue_full" not in by_id
    assert "tcp.listen_overflow" in by_id


# --- udp.rcvbuf_full ----------------------------------------------------------------------

def test_udp_rcvbuf_full_names_socket_and_process():
    host = Host()
    host.owners = SocketOwners({50001: (777, "rsyslogd")})
    host.udp_sockets = [udp_socket(514, 50001, drops=10, rx_queue=0),
                        udp_socket(53, 50002, drops=0)]

    def flood(h):
        rcvbuf_full(h)
        h.udp_sockets = [udp_socket(514, 50001, drops=5010, rx_queue=212_992),
                         udp_socket(53, 50002, drops=0)]

    f = evaluate(window_with(flood, host=host))[0]["udp.rcvbuf_full"]
    assert (f.severity, f.drops) == ("critical", 5000)
    assert evidence_delta(f, "Udp.InErrors") == 5000
    assert f.subjects == [{"socket": "0.0.0.0:514", "pid": 777, "process": "rsyslogd",
                           "drops": 5000, "rx_queue": 212_992}]
    default = sysctl_fix(f, "net.core.rmem_default")
    assert (default["current"], default["proposed"]) == (212_992, 524_288)
    maximum = sysctl_fix(f, "net.core.rmem_max")
    assert (maximum["current"], maximum["proposed"]) == (212_992, 524_288)
    assert "pid 777 (rsyslogd)" in fixes_of(f, "app")[0]["text"]


def test_udp_rcvbuf_full_counts_ipv4_and_ipv6():
    def both(h):
        h.bump("snmp", "Udp.RcvbufErrors", 5)
        h.bump("snmp6", "Udp6.RcvbufErrors", 10)
    f = evaluate(window_with(both))[0]["udp.rcvbuf_full"]
    assert f.drops == 15
    assert evidence_delta(f, "Udp6.RcvbufErrors") == 10


def test_udp_rcvbuf_full_no_rmem_max_fix_when_already_large():
    host = Host()
    host.sysctls["net.core.rmem_max"] = 4_194_304
    f = evaluate(window_with(rcvbuf_full, host=host))[0]["udp.rcvbuf_full"]
    assert sysctl_fix(f, "net.core.rmem_max") is None
    assert sysctl_fix(f, "net.core.rmem_default")["proposed"] == 524_288
    assert f.subjects == []


def test_udp_traffic_without_errors_is_not_a_finding():
    def busy(h):
        h.bump("snmp", "Udp.InDatagrams", 2_000_000)
        h.bump("snmp", "Udp.OutDatagrams", 2_000_000)
    _, ids, not_evaluated = evaluate(window_with(busy))
    assert ids == [] and not_evaluated == {}


# --- udp.no_port --------------------------------------------------------------------------

def test_udp_no_port_low_rate_is_benign_and_healthy():
    def few(h):
        h.bump("snmp", "Udp.NoPorts", 20)  # 4/s
    window = window_with(few)
    f = evaluate(window)[0]["udp.no_port"]
    assert (f.severity, f.benign, f.drops) == ("info", True, 20)
    assert "normal" in f.explanation
    diagnosis = diagnosis_from_window(window)
    assert diagnosis.healthy is True
    assert diagnosis.exit_code() == EXIT_HEALTHY
    assert diagnosis.to_dict()["findings"][0]["benign"] is True


def test_udp_no_port_high_rate_is_a_warning():
    window = window_with(no_port)  # 100/s
    f = evaluate(window)[0]["udp.no_port"]
    assert (f.severity, f.benign, f.drops) == ("warning", False, 500)
    assert f.rate_per_s == pytest.approx(100.0)
    assert f.explanation is None
    assert evidence_delta(f, "Icmp.OutDestUnreachs") == 500
    diagnosis = diagnosis_from_window(window)
    assert diagnosis.healthy is False
    assert diagnosis.exit_code() == EXIT_WARNING


def test_udp_no_port_flood_is_critical_and_counts_ipv6():
    def flood(h):
        h.bump("snmp", "Udp.NoPorts", 4000)
        h.bump("snmp6", "Udp6.NoPorts", 1000)
    f = evaluate(window_with(flood))[0]["udp.no_port"]
    assert (f.severity, f.drops) == ("critical", 5000)


def test_udp_no_port_threshold_edge():
    def exactly(h):
        h.bump("snmp", "Udp.NoPorts", 50)  # 10.0/s: not below the benign threshold
    f = evaluate(window_with(exactly))[0]["udp.no_port"]
    assert (f.severity, f.benign) == ("warning", False)


# --- cpu.backlog_drop ---------------------------------------------------------------------

def _cpu_drops(finding):
    """The CPU and its drops of each subject (the enricher adds load fields beside them)."""
    return [{"cpu": s["cpu"], "drops": s["drops"]} for s in finding.subjects]


def test_cpu_backlog_drop_on_one_cpu():
    f = evaluate(window_with(backlog_drop))[0]["cpu.backlog_drop"]
    assert (f.layer, f.severity, f.drops) == ("kernel", "critical", 300)
    assert _cpu_drops(f) == [{"cpu": 2, "drops": 300}]
    assert evidence_delta(f, "softnet.cpu2.time_squeeze") == 12
    fix = sysctl_fix(f, "net.core.netdev_max_backlog")
    assert (fix["current"], fix["proposed"]) == (1000, 2048)
    assert fix["scope"].startswith("global")
    rps = fixes_of(f, "config")
    assert len(rps) == 1 and "CPU 2" in rps[0]["text"] and "rps_cpus" in rps[0]["text"]


def test_cpu_backlog_drop_on_several_cpus_has_no_single_cpu_advice():
    def spread(h):
        h.set_cpu(0, dropped=10)
        h.set_cpu(3, dropped=30)
    f = evaluate(window_with(spread))[0]["cpu.backlog_drop"]
    assert f.drops == 40
    assert _cpu_drops(f) == [{"cpu": 0, "drops": 10}, {"cpu": 3, "drops": 30}]
    assert fixes_of(f, "config") == []


def test_time_squeeze_alone_is_not_a_backlog_drop():
    def squeeze(h):
        h.set_cpu(1, time_squeeze=500)
    _, ids, not_evaluated = evaluate(window_with(squeeze))
    assert "cpu.backlog_drop" not in ids and not_evaluated == {}
    assert set(ids) <= {"cpu.time_squeeze"}  # squeezing is reported by its own rule


def test_softnet_u32_wrap_gives_the_right_delta():
    host = Host()
    host.set_cpu(1, dropped=0xFFFF_FF00)
    before = host.snapshot(0.0)
    host.set_cpu(1, dropped=0x40)  # wrapped: 0x100 + 0x40 = 320 drops
    window = make_window(before, host.snapshot(5.0))
    assert window.deltas.get("softnet.cpu1.dropped") == 320
    assert window.deltas.resets == []
    f = evaluate(window)[0]["cpu.backlog_drop"]
    assert f.drops == 320
    assert _cpu_drops(f) == [{"cpu": 1, "drops": 320}]


def test_softnet_two_cpus_wrapping_in_one_window():
    # the host-wide sum is not a u32: two wraps at once made it negative (finding lost)
    host = Host()
    host.set_cpu(0, dropped=0xFFFF_FFF0)
    host.set_cpu(1, dropped=0xFFFF_FFF0)
    before = host.snapshot(0.0)
    host.set_cpu(0, dropped=0x10)
    host.set_cpu(1, dropped=0x10)
    f = evaluate(make_window(before, host.snapshot(5.0)))[0]["cpu.backlog_drop"]
    assert f.drops == 64
    assert _cpu_drops(f) == [{"cpu": 0, "drops": 32}, {"cpu": 1, "drops": 32}]


def test_softnet_cpu_coming_online_does_not_count_its_history():
    host = Host()
    before = host.snapshot(0.0)
    host.softnet.append(cpu(4, dropped=5000))  # hot-plugged during the window
    host.set_cpu(1, dropped=7)
    f = evaluate(make_window(before, host.snapshot(5.0)))[0]["cpu.backlog_drop"]
    assert f.drops == 7
    assert _cpu_drops(f) == [{"cpu": 1, "drops": 7}]


@given(before=st.integers(0, 2**32 - 1), moved=st.integers(0, 2**31 - 1))
def test_u32_counter_wrap_property(before, moved):
    assert delta.counter_delta(before, (before + moved) % 2**32, bits=32) == (moved, False)


def test_softnet_counter_going_back_is_a_reset_not_a_wrap():
    host = Host()
    host.set_cpu(0, dropped=100_000)
    before = host.snapshot(0.0)
    host.set_cpu(0, dropped=5)  # far below: CPU counters cleared, not 2**32 drops in 5 s
    window = make_window(before, host.snapshot(5.0))
    assert window.deltas.get("softnet.cpu0.dropped") is None
    assert "softnet.cpu0.dropped" in window.deltas.resets
    by_id, _, not_evaluated = evaluate(window)
    assert "cpu.backlog_drop" not in by_id
    assert not_evaluated["cpu.backlog_drop"] == "counter reset during the window"


# --- nic.rx_missed ------------------------------------------------------------------------

def test_nic_rx_missed_counts_a_drop_counted_twice_by_the_driver_once():
    def both(h):
        h.bump("link", "eth0.rx_missed_errors", 120)
        h.bump("link", "eth0.rx_fifo_errors", 120)
        h.bump("link", "eth0.rx_dropped", 120)
    f = evaluate(window_with(both))[0]["nic.rx_missed"]
    assert (f.layer, f.severity, f.drops) == ("link", "critical", 120)
    assert f.subjects == [{"interface": "eth0", "rx_missed_errors": 120, "rx_fifo_errors": 120}]
    assert evidence_delta(f, "link.eth0.rx_dropped") == 120
    commands = fixes_of(f, "command")
    assert len(commands) == 1 and "ethtool -G eth0" in commands[0]["text"]


def test_nic_rx_missed_sums_devices_including_vlan_names_with_dots():
    host = Host()
    host.link["eth0.100"] = dict(host.link["lo"])

    def two(h):
        h.bump("link", "eth0.rx_missed_errors", 40)
        h.bump("link", "eth0.100.rx_over_errors", 10)
    f = evaluate(window_with(two, host=host))[0]["nic.rx_missed"]
    assert f.drops == 50
    assert [s["interface"] for s in f.subjects] == ["eth0", "eth0.100"]
    assert f.subjects[1]["rx_over_errors"] == 10


def test_rx_dropped_alone_is_not_a_ring_overflow():
    def dropped(h):
        h.bump("link", "eth0.rx_dropped", 999)  # e.g. unknown protocol, not a full ring
    _, ids, not_evaluated = evaluate(window_with(dropped))
    assert ids == [] and not_evaluated == {}


def test_nic_rx_missed_not_evaluated_without_link_stats():
    host = Host(broken={"link_stats": ("unavailable", "rtnetlink link dump: no such namespace")})
    _, ids, not_evaluated = evaluate(window_with(rx_missed, host=host))
    assert ids == []
    assert not_evaluated == {"nic.rx_missed": "counters not available"}


def test_link_counter_reset_gives_none_and_lands_in_resets():
    host = Host()
    host.link["eth0"]["rx_missed_errors"] = 5_000
    before = host.snapshot(0.0)
    host.link["eth0"]["rx_missed_errors"] = 3  # device re-created during the window
    window = make_window(before, host.snapshot(5.0))
    assert window.deltas.get("link.eth0.rx_missed_errors") is None
    assert window.deltas.resets == ["link.eth0.rx_missed_errors"]
    by_id, _, not_evaluated = evaluate(window)
    assert "nic.rx_missed" not in by_id  # never a finding built on a wrong number
    # lo's counters did not move, but eth0's are unknown: not "no drops"
    assert not_evaluated == {"nic.rx_missed": "counter reset during the window"}
    assert diagnosis_from_window(window).counter_resets == ["link.eth0.rx_missed_errors"]


# --- missing counters, resets ---------------------------------------------------------------

def test_failed_source_means_not_evaluated_never_zero():
    host = Host(broken={"netstat": ("failed", "mismatched section 'TcpExt' / 'IpExt'")})
    by_id, ids, not_evaluated = evaluate(window_with(listen_overflow, host=host))
    assert not_evaluated == {"tcp.listen_overflow": "counters not available",
                             "tcp.syn_queue_full": "counters not available"}
    assert ids == []
    diagnosis = diagnosis_from_window(window_with(listen_overflow, host=host))
    assert diagnosis.coverage["netstat"] == "failed"
    assert "mismatched section" in diagnosis.coverage_errors["netstat"]
    assert diagnosis.to_dict()["not_evaluated"]["tcp.listen_overflow"] == "counters not available"


def test_source_failing_only_in_the_second_snapshot_is_not_evaluated():
    host = Host()
    before = host.snapshot(0.0)
    listen_overflow(host)
    host.broken["netstat"] = ("needs-privilege", "/proc/net/netstat: permission denied")
    by_id, _, not_evaluated = evaluate(make_window(before, host.snapshot(5.0)))
    assert "tcp.listen_overflow" not in by_id
    assert not_evaluated["tcp.listen_overflow"] == "counters not available"


def test_snmp_counter_reset_is_not_evaluated():
    host = Host()
    before = host.snapshot(0.0)
    host.netstat["TcpExt"]["ListenOverflows"] = 2  # was 1532: namespace re-created
    window = make_window(before, host.snapshot(5.0))
    assert window.deltas.get("TcpExt.ListenOverflows") is None
    assert "TcpExt.ListenOverflows" in window.deltas.resets
    by_id, _, not_evaluated = evaluate(window)
    assert "tcp.listen_overflow" not in by_id
    assert not_evaluated["tcp.listen_overflow"] == "counter reset during the window"


# --- ranking --------------------------------------------------------------------------------

def test_ranking_severity_before_rate():
    # udp.no_port at 100/s is a warning; the listen overflow at 57/s is critical: it comes first
    _, ids, _ = evaluate(window_with(no_port, listen_overflow))
    assert ids == ["tcp.listen_overflow", "udp.no_port"]


def test_ranking_same_severity_by_rate():
    _, ids, _ = evaluate(window_with(listen_overflow, rcvbuf_full, backlog_drop))
    # 1000/s, 60/s, 57.2/s: all critical
    assert ids == ["udp.rcvbuf_full", "cpu.backlog_drop", "tcp.listen_overflow"]


def test_ranking_benign_last_even_when_faster():
    def slow_overflow(h):
        h.bump("netstat", "TcpExt.ListenOverflows", 1)  # 0.2/s: warning
    def few_no_port(h):
        h.bump("snmp", "Udp.NoPorts", 45)  # 9/s: benign info
    by_id, ids, _ = evaluate(window_with(few_no_port, slow_overflow))
    assert ids == ["tcp.listen_overflow", "udp.no_port"]
    assert by_id["tcp.listen_overflow"].severity == "warning"


def test_ranking_benign_info_after_harmless_info():
    # two made-up rules over the same counters: a benign finding never outranks a real one,
    # even at the same severity and a higher rate
    custom = tuple(parse_rules("""
[[rule]]
id = "test.benign"
layer = "transport"
title = "t"
summary = "{drops}"
drop_counters = ["Udp.NoPorts"]
warning_per_s = 1000.0
critical_per_s = 10000.0
benign_below_per_s = 500.0
benign_reason = "normal"

[[rule]]
id = "test.real"
layer = "transport"
title = "t"
summary = "{drops}"
drop_counters = ["TcpExt.ListenOverflows"]
warning_per_s = 1000.0
critical_per_s = 10000.0
"""))
    def both(h):
        h.bump("snmp", "Udp.NoPorts", 1000)  # 200/s, benign
        h.bump("netstat", "TcpExt.ListenOverflows", 10)  # 2/s, info but not benign
    findings, _ = rules.evaluate(window_with(both), custom)
    assert [(f.id, f.severity, f.benign) for f in findings] == [
        ("test.real", "info", False), ("test.benign", "info", True)]


# --- diagnosis: exit codes and the JSON contract --------------------------------------------

def test_exit_code_healthy():
    diagnosis = diagnosis_from_window(quiet_window())
    assert diagnosis.exit_code() == EXIT_HEALTHY == 0
    assert diagnosis.healthy is True


def test_exit_code_warning():
    def slow_overflow(h):
        h.bump("netstat", "TcpExt.ListenOverflows", 2)  # 0.4/s
    diagnosis = diagnosis_from_window(window_with(slow_overflow))
    assert diagnosis.exit_code() == EXIT_WARNING == 1


def test_exit_code_critical():
    diagnosis = diagnosis_from_window(window_with(no_port, listen_overflow))
    assert diagnosis.exit_code() == EXIT_CRITICAL == 2
    assert diagnosis.healthy is False


def test_exit_code_not_measured_when_snmp_and_netstat_failed():
    host = Host(broken={"snmp": ("needs-privilege", "/proc/net/snmp: permission denied"),
                        "netstat": ("unavailable", "/proc/net/netstat: no such file")})
    diagnosis = diagnosis_from_window(window_with(backlog_drop, host=host))
    assert diagnosis.exit_code() == EXIT_NOT_MEASURED == 3
    assert diagnosis.healthy is False
    assert diagnosis.to_dict()["healthy"] is False


def test_exit_code_one_core_source_is_enough():
    host = Host(broken={"snmp": ("failed", "odd number of lines (3)")})
    diagnosis = diagnosis_from_window(window_with(host=host))
    assert diagnosis.exit_code() == EXIT_HEALTHY
    assert diagnosis.coverage["snmp"] == "failed"
    assert diagnosis.to_dict()["coverage"]["netstat"] == "ok"


CONTRACT_FINDING_KEYS = {"id", "layer", "severity", "drops", "rate_per_s", "benign", "summary",
                         "evidence", "subjects", "fixes"}


def test_json_contract():
    diagnosis = diagnosis_from_window(reference_case())
    out = diagnosis.to_dict()
    assert {"schema", "host", "window", "coverage", "healthy", "findings"} <= set(out)
    assert out["schema"] == "dropdoc.diagnosis/1"
    assert out["host"]["kernel"] == "6.8.0-45-generic"
    assert out["host"]["netns"] == "srv"
    assert out["window"] == {"seconds": 5.0}
    assert out["coverage"]["snmp"] == "ok" and out["coverage"]["netstat"] == "ok"
    assert out["coverage"]["listener_sampling"] == "ok"
    assert out["healthy"] is False
    assert [f["id"] for f in out["findings"]] == ["tcp.listen_overflow"]
    finding = out["findings"][0]
    assert CONTRACT_FINDING_KEYS <= set(finding)
    assert finding["layer"] == "transport"
    assert finding["severity"] == "critical"
    assert finding["drops"] == 286 and isinstance(finding["drops"], int)
    assert finding["rate_per_s"] == 57.2
    assert finding["benign"] is False
    assert isinstance(finding["summary"], str) and "286" in finding["summary"]
    assert {"source": "counters", "counter": "TcpExt.ListenOverflows", "delta": 286,
            "rate_per_s": 57.2} in finding["evidence"]
    subject = finding["subjects"][0]
    assert {k: subject[k] for k in ("socket", "pid", "process", "backlog", "somaxconn",
                                    "capped_by", "accept_queue")} == {
        "socket": "0.0.0.0:8080", "pid": 4242, "process": "payments", "backlog": 128,
        "somaxconn": 128, "capped_by": "somaxconn", "accept_queue": 129}
    sysctl = next(f for f in finding["fixes"] if f["kind"] == "sysctl")
    assert {k: sysctl[k] for k in ("key", "current", "proposed", "netns")} == {
        "key": "net.core.somaxconn", "current": 128, "proposed": 512, "netns": "srv"}
    assert "note" in sysctl
    assert all("text" in f for f in finding["fixes"] if f["kind"] == "app")


def test_json_contract_is_json_serialisable():
    import json
    window = window_with(*SCENARIOS.values(), host=Host(owners=PAYMENTS))
    text = json.dumps(diagnosis_from_window(window).to_dict())
    assert [f["id"] for f in json.loads(text)["findings"]] == [
        "udp.rcvbuf_full", "cpu.backlog_drop", "tcp.listen_overflow", "nic.rx_missed",
        "tcp.syn_queue_full", "udp.no_port"]


def test_listener_sampling_failure_is_a_coverage_gap():
    window = reference_case(stat=False)
    window.listener_sampling = "unavailable: sock_diag TCP dump: permission denied"
    diagnosis = diagnosis_from_window(window)
    assert diagnosis.coverage["listener_sampling"] == "unavailable"
    assert "permission denied" in diagnosis.coverage_errors["listener_sampling"]
    f = diagnosis.finding("tcp.listen_overflow")
    assert "unavailable" in f.explanation
