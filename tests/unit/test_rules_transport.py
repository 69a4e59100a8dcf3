"""Rule cases of the transport and socket areas: hand-built windows -> expected findings.

Ids: tcp.backlog_drop, tcp.rcvq_drop, tcp.memory_pressure, tcp.paws_drop, udp.memory,
udp.sndbuf, socket.filter_drop, plus the syn_queue and udp_sockets enricher changes.
Each id has a positive case that fires only that rule and a quiet-window negative.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import pytest
from windows import Host, listener, make_window, stats, udp_socket

from dropdoc import rules
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.model import EXIT_HEALTHY, EXIT_WARNING
from dropdoc.sources import SourceResult
from dropdoc.sources.proc_sockets import TCP_LISTEN
from dropdoc.sources.process_sockets import SocketOwners
from dropdoc.sources.socket_memory import SockMem
from dropdoc.sources.sockstat import Sockstat
from dropdoc.sources.tcp_syn_recv import HalfOpen

TRANSPORT_IDS = ("tcp.backlog_drop", "tcp.rcvq_drop", "tcp.memory_pressure", "tcp.paws_drop",
                 "udp.memory", "udp.sndbuf", "socket.filter_drop")
TCP_MEM = (382_257, 509_678, 764_514)
UDP_MEM = (764_514, 1_019_353, 1_529_028)


def sockstat_of(tcp_pages: int = 1_200, udp_pages: int = 40, limits: bool = True) -> Sockstat:
    tables = {"sockets": {"used": 310}, "TCP": {"inuse": 87, "orphan": 0, "tw": 12, "alloc": 90, "mem": tcp_pages},
              "UDP": {"inuse": 9, "mem": udp_pages}, "UDPLITE": {"inuse": 0}, "RAW": {"inuse": 0},
              "FRAG": {"inuse": 0, "memory": 0}}
    return Sockstat(tables, {"TCP6": {"inuse": 2}, "UDP6": {"inuse": 1}},
                    TCP_MEM if limits else None, UDP_MEM if limits else None, "host" if limits else None, 4096)


def tcp_sock(port=8080, peer_port=51000, inode=70001, drops=0, state=1, rqueue=0, rmem=0, rcvbuf=131072,
             sndbuf=87040, wqueued=0, local="10.0.0.1", remote="10.0.0.9") -> SockMem:
    return SockMem("tcp", 4, local, port, remote, peer_port, state, inode, 1000, rqueue, 0,
                   rmem, rcvbuf, 0, sndbuf, 0, wqueued, 0, 0, drops)


def udp_mem_sock(port=514, inode=50001, rmem=0, rcvbuf=212992, wmem=0, sndbuf=212992, drops=0) -> SockMem:
    return SockMem("udp", 4, "0.0.0.0", port, "0.0.0.0", 0, 7, inode, 1000, rmem, wmem,
                   rmem, rcvbuf, wmem, sndbuf, 0, 0, 0, 0, drops)


@dataclass
class TransportHost(Host):
    """Host plus the transport area's sources (sockstat, sock_diag memory, SYN_RECV)."""

    sockstat: Sockstat | None = field(default_factory=sockstat_of)
    tcp_mem_socks: list = field(default_factory=list)
    udp_mem_socks: list | None = None
    syn_recv: list | None = field(default_factory=list)

    def __post_init__(self):
        # counters this kernel (6.18) has that the shared base host leaves out: present and 0,
        # so a bump is a delta rather than a counter appearing (None)
        for name in ("TCPMemoryPressuresChrono", "TCPAbortOnMemory", "PAWSOldAck", "PAWSTimewait",
                     "TCPACKSkippedPAWS", "TCPToZeroWindowAdv", "TCPWantZeroWindowAdv", "TCPFromZeroWindowAdv",
                     "TCPOFODrop", "PruneCalled", "RcvPruned", "TCPRcvCollapsed"):
            self.netstat["TcpExt"].setdefault(name, 0)
        for name in ("Udp6.MemErrors", "Udp6.InCsumErrors", "Udp6.OutDatagrams"):
            self.snmp6.setdefault(name, 0)

    def snapshot(self, t: float):
        snap = super().snapshot(t)
        extra = {"sockstat": self.sockstat, "tcp_socket_memory": self.tcp_mem_socks,
                 "udp_socket_memory": self.udp_mem_socks, "tcp_syn_recv": self.syn_recv}
        for name, value in extra.items():
            if name in self.broken:
                status, error = self.broken[name]
                snap.results[name] = SourceResult(status, error=error)
            elif value is not None:
                snap.results[name] = SourceResult("ok", copy.deepcopy(value))
        return snap


def bump_all(host, **counters):
    """Add to existing counters ("TcpExt.PAWSEstab": 4); a name the host lacks is an error."""
    for name, value in counters.items():
        if name.startswith("Udp6."):
            host.bump("snmp6", name, value)
        elif name.split(".")[0] in ("Udp", "Tcp", "Ip", "Icmp"):
            host.bump("snmp", name, value)
        else:
            host.bump("netstat", name, value)


def window_of(host: TransportHost, change=None, seconds: float = 5.0, listeners=()):
    before = host.snapshot(0.0)
    if change:
        change(host)
    return make_window(before, host.snapshot(seconds), list(listeners))


def evaluate(window):
    findings, not_evaluated = rules.evaluate(window)
    return {f.id: f for f in findings}, [f.id for f in findings], not_evaluated


def fixes_of(finding, kind):
    return [f for f in finding.fixes if f["kind"] == kind]


def sysctl_fix(finding, key):
    matches = [f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == key]
    assert len(matches) <= 1
    return matches[0] if matches else None


def evidence(finding, source):
    return [e for e in finding.evidence if e.get("source") == source]


def evidence_delta(finding, counter):
    return next(e["delta"] for e in finding.evidence if e.get("counter") == counter)


# --- one positive per id: fires only its rule; quiet window fires nothing -------------------

def backlog_drop(h):
    bump_all(h, **{"TcpExt.TCPBacklogDrop": 120, "Tcp.InSegs": 400_000})


def rcvq_drop(h):
    bump_all(h, **{"TcpExt.TCPRcvQDrop": 300, "TcpExt.TCPZeroWindowDrop": 20})


def memory_pressure(h):
    bump_all(h, **{"TcpExt.TCPMemoryPressures": 3, "TcpExt.TCPMemoryPressuresChrono": 2200,
                   "TcpExt.TCPAbortOnMemory": 5})


def paws_drop(h):
    bump_all(h, **{"TcpExt.PAWSEstab": 400})


def udp_memory(h):
    bump_all(h, **{"Udp.MemErrors": 900, "Udp.InErrors": 900})


def udp_sndbuf(h):
    bump_all(h, **{"Udp.SndbufErrors": 250, "Udp.OutDatagrams": 10_000})


def filter_drop(h):
    bump_all(h, **{"Udp.InErrors": 2000})


POSITIVE = {
    "tcp.backlog_drop": backlog_drop, "tcp.rcvq_drop": rcvq_drop, "tcp.memory_pressure": memory_pressure,
    "tcp.paws_drop": paws_drop, "udp.memory": udp_memory, "udp.sndbuf": udp_sndbuf,
    "socket.filter_drop": filter_drop,
}


def test_every_transport_rule_is_in_the_catalogue_and_has_a_case():
    ids = {r.id for r in rules.load_rules()}
    assert set(TRANSPORT_IDS) <= ids
    assert set(POSITIVE) == set(TRANSPORT_IDS)


@pytest.mark.parametrize("rule_id", TRANSPORT_IDS)
def test_positive_fires_only_its_rule(rule_id):
    by_id, ids, not_evaluated = evaluate(window_of(TransportHost(), POSITIVE[rule_id]))
    assert ids == [rule_id]
    assert not {k for k in not_evaluated if k in TRANSPORT_IDS}
    f = by_id[rule_id]
    assert f.drops > 0 and f.runbook == f"docs/runbook.md#{rule_id.replace('.', '-').replace('_', '-')}"
    assert str(f.drops) in f.summary
    assert f.fixes, "every finding proposes something"


@pytest.mark.parametrize("rule_id", TRANSPORT_IDS)
@pytest.mark.parametrize("host_kind", ["plain", "transport"])
def test_quiet_window_fires_nothing_and_evaluates(rule_id, host_kind):
    host = TransportHost() if host_kind == "transport" else Host()
    by_id, _ids, not_evaluated = evaluate(window_of(host))
    assert rule_id not in by_id
    assert rule_id not in not_evaluated


@pytest.mark.parametrize("rule_id", ["tcp.backlog_drop", "tcp.rcvq_drop", "tcp.memory_pressure", "tcp.paws_drop"])
def test_netstat_missing_means_not_evaluated(rule_id):
    host = TransportHost(sockstat=None, broken={"netstat": ("failed", "truncated")})
    _, _, not_evaluated = evaluate(window_of(host, POSITIVE[rule_id]))
    assert not_evaluated[rule_id] == "counters not available"


@pytest.mark.parametrize("rule_id", ["udp.memory", "udp.sndbuf", "socket.filter_drop"])
def test_snmp_missing_means_not_evaluated(rule_id):
    host = TransportHost(broken={"snmp": ("failed", "truncated"), "snmp6": ("unavailable", "IPv6 off")})
    _, _, not_evaluated = evaluate(window_of(host, lambda h: None))
    assert not_evaluated[rule_id] == "counters not available"


# --- tcp.backlog_drop ------------------------------------------------------------------------

def test_backlog_drop_names_the_socket_whose_drops_rose():
    host = TransportHost(owners=SocketOwners({70001: (5150, "ingest")}))
    host.tcp_mem_socks = [tcp_sock(inode=70001, drops=7), tcp_sock(inode=70002, peer_port=51001, drops=3)]

    def drop(h):
        backlog_drop(h)
        h.tcp_mem_socks = [tcp_sock(inode=70001, drops=127, rcvbuf=6291456), tcp_sock(inode=70002, peer_port=51001, drops=3)]
    f = evaluate(window_of(host, drop))[0]["tcp.backlog_drop"]
    assert (f.severity, f.drops, f.layer) == ("critical", 120, "transport")
    assert f.rate_per_s == pytest.approx(24.0)
    assert len(f.subjects) == 1
    s = f.subjects[0]
    assert (s["socket"], s["peer"], s["pid"], s["process"], s["drops"]) == ("10.0.0.1:8080", "10.0.0.9:51000", 5150, "ingest", 120)
    assert "drops_since_socket_start" not in s
    assert evidence(f, "ratio")[0]["dropped_per_received_segment"] == "0.030%"
    assert "pid 5150 (ingest)" in fixes_of(f, "app")[0]["text"]
    # the receive buffer autotuned up to tcp_rmem[2] (6 MiB): raise the maximum
    rmem = sysctl_fix(f, "net.ipv4.tcp_rmem")
    assert rmem["current"] == (4096, 131072, 6291456) and rmem["proposed"] == (4096, 131072, 16777216)
    assert rmem["scope"] == "per network namespace"


def test_backlog_drop_no_rmem_fix_when_buffer_is_not_at_max():
    host = TransportHost()
    host.tcp_mem_socks = [tcp_sock(drops=0)]

    def drop(h):
        backlog_drop(h)
        h.tcp_mem_socks = [tcp_sock(drops=50, rcvbuf=131072)]
    f = evaluate(window_of(host, drop))[0]["tcp.backlog_drop"]
    assert f.subjects[0]["drops"] == 50 and f.subjects[0]["pid"] is None
    assert sysctl_fix(f, "net.ipv4.tcp_rmem") is None
    assert "owner unknown" in fixes_of(f, "app")[0]["text"] or "the process" in fixes_of(f, "app")[0]["text"]


def test_backlog_drop_without_socket_data_proposes_rmem_conditionally():
    f = evaluate(window_of(TransportHost(tcp_mem_socks=None), backlog_drop))[0]["tcp.backlog_drop"]
    assert f.subjects == []
    assert "only if" in sysctl_fix(f, "net.ipv4.tcp_rmem")["note"]


def test_backlog_drop_low_rate_is_a_warning():
    f = evaluate(window_of(TransportHost(), lambda h: bump_all(h, **{"TcpExt.TCPBacklogDrop": 3})))[0]["tcp.backlog_drop"]
    assert (f.severity, f.benign) == ("warning", False)


# --- tcp.rcvq_drop -----------------------------------------------------------------------------

def test_rcvq_drop_is_loss_with_named_reader():
    host = TransportHost(owners=SocketOwners({70001: (812, "replica")}))
    host.tcp_mem_socks = [tcp_sock(drops=0)]

    def drop(h):
        rcvq_drop(h)
        h.tcp_mem_socks = [tcp_sock(drops=300, rqueue=6_000_000, rmem=6_200_000, rcvbuf=6291456)]
    f = evaluate(window_of(host, drop))[0]["tcp.rcvq_drop"]
    assert (f.severity, f.benign, f.drops) == ("critical", False, 300)
    assert evidence_delta(f, "TcpExt.TCPZeroWindowDrop") == 20  # shown, not counted
    assert f.subjects[0]["pid"] == 812 and f.subjects[0]["rx_queue"] == 6_000_000
    app = fixes_of(f, "app")
    assert "pid 812 (replica)" in app[0]["text"] and "6000000 bytes unread" in app[0]["text"]
    assert sysctl_fix(f, "net.ipv4.tcp_rmem")["proposed"][2] == 16_777_216
    assert "memory pressure" not in f.explanation


def test_zero_window_drops_alone_are_benign_flow_control():
    window = window_of(TransportHost(), lambda h: bump_all(h, **{"TcpExt.TCPZeroWindowDrop": 500,
                                                                  "TcpExt.TCPToZeroWindowAdv": 30}))
    by_id, _ids, _ = evaluate(window)
    f = by_id["tcp.rcvq_drop"]
    assert (f.severity, f.benign, f.drops) == ("info", True, 500)
    assert "flow control" in f.explanation and "nothing is lost" in f.explanation
    assert evidence_delta(f, "TcpExt.TCPToZeroWindowAdv") == 30
    diagnosis = diagnosis_from_window(window)
    assert diagnosis.healthy and diagnosis.exit_code() == EXIT_HEALTHY


def test_rcvq_drop_under_memory_pressure_says_so():
    host = TransportHost(sockstat=sockstat_of(tcp_pages=520_000))
    f = evaluate(window_of(host, rcvq_drop))[0]["tcp.rcvq_drop"]
    assert "memory pressure" in f.explanation


def test_rcvq_drop_on_old_kernel_without_the_counters_is_not_evaluated():
    host = TransportHost()
    del host.netstat["TcpExt"]["TCPRcvQDrop"]
    del host.netstat["TcpExt"]["TCPZeroWindowDrop"]
    _, _, not_evaluated = evaluate(window_of(host))
    assert not_evaluated["tcp.rcvq_drop"] == "counters not available"


def test_rcvq_drop_counter_reset_is_reported():
    host = TransportHost()
    host.netstat["TcpExt"]["TCPRcvQDrop"] = 900
    before = host.snapshot(0.0)
    host.netstat["TcpExt"]["TCPRcvQDrop"] = 4
    _, _, not_evaluated = evaluate(make_window(before, host.snapshot(5.0)))
    assert not_evaluated["tcp.rcvq_drop"] == "counter reset during the window"


# --- tcp.memory_pressure ------------------------------------------------------------------------

def test_memory_pressure_from_counters_only():
    def entered(h):
        bump_all(h, **{"TcpExt.TCPMemoryPressures": 3, "TcpExt.TCPMemoryPressuresChrono": 2200})
    f = evaluate(window_of(TransportHost(sockstat=None), entered))[0]["tcp.memory_pressure"]
    assert (f.severity, f.drops) == ("warning", 0)  # pressure shrinks buffers: never only info
    assert "3 entries into pressure" in f.summary and "2.2 s under pressure" in f.summary
    assert evidence_delta(f, "TcpExt.TCPMemoryPressures") == 3
    assert sysctl_fix(f, "net.ipv4.tcp_mem")["current"] == TCP_MEM  # from the sysctls source


def test_memory_pressure_gauge_above_hard_limit_is_critical_with_holders_and_scaled_limits():
    owners = SocketOwners({70005: (333, "backup")})
    host = TransportHost(sockstat=sockstat_of(tcp_pages=780_000), owners=owners)
    host.sysctls["net.ipv4.tcp_mem"] = None  # inside a namespace: only sockstat has the host's limits
    host.tcp_mem_socks = [tcp_sock(inode=70005, rqueue=900_000_000, rmem=1_000_000_000),
                          tcp_sock(inode=70006, peer_port=51001, wqueued=5_000)]

    def pressure(h):
        bump_all(h, **{"TcpExt.TCPMemoryPressures": 1, "TcpExt.TCPAbortOnMemory": 12, "TcpExt.TCPRcvQDrop": 40})
    by_id, _ids, _ = evaluate(window_of(host, pressure))
    f = by_id["tcp.memory_pressure"]
    assert f.severity == "critical"
    assert f.drops == 52  # 12 aborted connections + 40 receive-queue drops while under pressure
    assert "above the hard limit" in f.summary and "12 connections aborted" in f.summary
    gauge = evidence(f, "sockstat")[0]
    assert gauge["tcp_mem_pages"] == 780_000 and gauge["tcp_mem_limits_pages"] == list(TCP_MEM)
    assert gauge["of_pressure_mark"] == "153%"
    assert gauge["tcp_mem_bytes"] == "3047 MiB"
    assert [s["pid"] for s in f.subjects] == [333, None]
    assert f.subjects[0]["memory_bytes"] == 1_000_000_000
    fix = sysctl_fix(f, "net.ipv4.tcp_mem")
    # peak 780000 pages at most half of the new pressure mark: factor ceil(2*780000/509678) = 4
    assert fix["current"] == TCP_MEM and fix["proposed"] == tuple(4 * v for v in TCP_MEM)
    assert fix["scope"].startswith("global")
    assert "pid 333 (backup)" in fixes_of(f, "app")[0]["text"]
    # the receive-queue drops are also their own finding, which points here
    assert "memory pressure" in by_id["tcp.rcvq_drop"].explanation


def test_memory_approaching_pressure_is_info_only():
    window = window_of(TransportHost(sockstat=sockstat_of(tcp_pages=450_000)))
    f = evaluate(window)[0]["tcp.memory_pressure"]
    assert (f.severity, f.drops, f.benign) == ("info", 0, False)
    assert "88% of the pressure mark" in f.summary
    assert fixes_of(f, "sysctl") == []
    assert diagnosis_from_window(window).healthy


def test_memory_gauge_under_pressure_without_counter_movement_is_a_warning():
    f = evaluate(window_of(TransportHost(sockstat=sockstat_of(tcp_pages=600_000))))[0]["tcp.memory_pressure"]
    assert f.severity == "warning" and "under pressure" in f.summary


def test_memory_pressure_not_evaluated_without_counters_or_gauge():
    host = TransportHost(sockstat=None)
    for name in ("TCPMemoryPressures", "TCPMemoryPressuresChrono", "TCPAbortOnMemory"):
        del host.netstat["TcpExt"][name]  # kernel 3.10: only TCPMemoryPressures, here not even that
    _, _, not_evaluated = evaluate(window_of(host))
    assert not_evaluated["tcp.memory_pressure"] == "counters not available"


def test_memory_gauge_alone_is_enough_on_a_kernel_without_the_counters():
    host = TransportHost(sockstat=sockstat_of(tcp_pages=600_000))
    for name in ("TCPMemoryPressures", "TCPMemoryPressuresChrono", "TCPAbortOnMemory"):
        del host.netstat["TcpExt"][name]
    by_id, _, not_evaluated = evaluate(window_of(host))
    assert "tcp.memory_pressure" in by_id and "tcp.memory_pressure" not in not_evaluated


# --- tcp.paws_drop -----------------------------------------------------------------------------

def test_paws_estab_names_peers_and_timestamps():
    host = TransportHost()
    host.sysctls["net.ipv4.tcp_timestamps"] = 1
    host.tcp_mem_socks = [tcp_sock(drops=0, remote="203.0.113.7")]

    def drop(h):
        paws_drop(h)
        h.tcp_mem_socks = [tcp_sock(drops=380, remote="203.0.113.7")]
    f = evaluate(window_of(host, drop))[0]["tcp.paws_drop"]
    assert (f.severity, f.drops) == ("critical", 400)
    assert "400 segments on established connections" in f.explanation
    assert f.subjects[0]["peer"] == "203.0.113.7:51000"
    texts = [x["text"] for x in fixes_of(f, "config")]
    assert "203.0.113.7" in texts[0]
    assert "tcp_timestamps=1 -> 0" in texts[1]


def test_paws_active_explains_outgoing_connections():
    f = evaluate(window_of(TransportHost(), lambda h: bump_all(h, **{"TcpExt.PAWSActive": 30})))[0]["tcp.paws_drop"]
    assert f.severity == "warning" and "SYN-ACKs" in f.explanation


def test_paws_low_rate_is_benign():
    window = window_of(TransportHost(), lambda h: bump_all(h, **{"TcpExt.PAWSEstab": 4}))
    f = evaluate(window)[0]["tcp.paws_drop"]
    assert (f.severity, f.benign) == ("info", True) and "RFC 7323" in f.explanation
    assert diagnosis_from_window(window).healthy


# --- udp.memory ---------------------------------------------------------------------------------

def test_udp_memory_names_the_unread_socket_and_scales_udp_mem():
    host = TransportHost(sockstat=sockstat_of(udp_pages=1_600_000), owners=SocketOwners({50009: (91, "collector")}))
    host.udp_mem_socks = [udp_mem_sock(inode=50009, rmem=700_000_000), udp_mem_sock(port=53, inode=50010, rmem=0)]
    f = evaluate(window_of(host, udp_memory))[0]["udp.memory"]
    assert (f.severity, f.drops) == ("critical", 900)
    assert f.subjects == [{"socket": "0.0.0.0:514", "pid": 91, "process": "collector", "rx_queue": 700_000_000,
                           "rcvbuf": 212992}]
    gauge = evidence(f, "sockstat")[0]
    assert gauge["udp_mem_pages"] == 1_600_000 and gauge["of_hard_limit"] == "105%"
    fix = sysctl_fix(f, "net.ipv4.udp_mem")
    assert fix["current"] == UDP_MEM and fix["proposed"] == tuple(4 * v for v in UDP_MEM)  # ceil(2*1.6M/1.019M)
    assert fix["scope"].startswith("global")
    assert "pid 91 (collector)" in fixes_of(f, "app")[0]["text"]


def test_udp_memory_falls_back_to_proc_net_udp_queues():
    host = TransportHost(udp_sockets=[udp_socket(514, 50001, drops=0, rx_queue=9000)])
    f = evaluate(window_of(host, udp_memory))[0]["udp.memory"]
    assert f.subjects[0]["rx_queue"] == 9000 and "rcvbuf" not in f.subjects[0]


# --- udp.sndbuf ----------------------------------------------------------------------------------

def test_udp_sndbuf_derives_wmem_and_names_the_sender():
    host = TransportHost(owners=SocketOwners({50020: (66, "statsd")}))
    host.udp_mem_socks = [udp_mem_sock(port=8125, inode=50020, wmem=200_000, sndbuf=212_992),
                          udp_mem_sock(port=53, inode=50021)]
    f = evaluate(window_of(host, udp_sndbuf))[0]["udp.sndbuf"]
    assert (f.severity, f.drops) == ("critical", 250)
    assert f.subjects == [{"socket": "0.0.0.0:8125", "pid": 66, "process": "statsd", "send_queue": 200_000,
                           "sndbuf": 212_992}]
    assert evidence(f, "ratio")[0]["failed_per_sent"] == "2.44%"
    assert (sysctl_fix(f, "net.core.wmem_default")["proposed"], sysctl_fix(f, "net.core.wmem_max")["proposed"]) == (524288, 524288)
    assert "qdisc" in f.explanation
    assert "pid 66 (statsd)" in fixes_of(f, "app")[0]["text"]


def test_udp_sndbuf_counts_ipv6():
    f = evaluate(window_of(TransportHost(), lambda h: bump_all(h, **{"Udp6.SndbufErrors": 7})))[0]["udp.sndbuf"]
    assert f.drops == 7 and f.severity == "warning"


# --- socket.filter_drop ---------------------------------------------------------------------------

def test_filter_drop_inferred_and_named_by_per_socket_drops():
    host = TransportHost(owners=SocketOwners({50030: (404, "filtered")}),
                         udp_sockets=[udp_socket(9001, 50030, drops=0), udp_socket(53, 50031, drops=0)])

    def drop(h):
        filter_drop(h)
        h.udp_sockets = [udp_socket(9001, 50030, drops=2000), udp_socket(53, 50031, drops=0)]
    window = window_of(host, drop)
    by_id, ids, _ = evaluate(window)
    assert ids == ["socket.filter_drop"]
    f = by_id["socket.filter_drop"]
    assert (f.layer, f.severity, f.drops) == ("socket", "critical", 2000)
    inferred = evidence(f, "inferred")[0]
    assert inferred["drops"] == 2000 and "SOCKET_FILTER" in inferred["note"]
    assert f.subjects == [{"socket": "0.0.0.0:9001", "pid": 404, "process": "filtered", "drops": 2000, "rx_queue": 0}]
    assert evidence(f, "udp_sockets")[0] == {"source": "udp_sockets", "per_socket_drops": 2000, "inferred_drops": 2000}
    assert "pid 404 (filtered)" in fixes_of(f, "app")[0]["text"]


def test_filter_drop_subtracts_buffer_memory_and_checksum_errors():
    def mixed(h):
        bump_all(h, **{"Udp.InErrors": 1000, "Udp.RcvbufErrors": 600, "Udp.MemErrors": 100,
                       "Udp.InCsumErrors": 50, "Udp6.InErrors": 30})
    by_id, _, _ = evaluate(window_of(TransportHost(), mixed))
    f = by_id["socket.filter_drop"]
    assert f.drops == 250 + 30
    assert {"udp.rcvbuf_full", "udp.memory"} <= set(by_id)


def test_rcvbuf_errors_are_not_filter_drops():
    def rcvbuf(h):
        bump_all(h, **{"Udp.InErrors": 5000, "Udp.RcvbufErrors": 5000})
    by_id, _, _ = evaluate(window_of(TransportHost(), rcvbuf))
    assert "socket.filter_drop" not in by_id and "udp.rcvbuf_full" in by_id


def test_filter_drop_without_socket_movement_says_it_may_be_malformed_datagrams():
    f = evaluate(window_of(TransportHost(), filter_drop))[0]["socket.filter_drop"]
    assert f.subjects == [] and "malformed" in f.explanation


def test_filter_drop_in_errors_reset():
    host = TransportHost()
    host.snmp["Udp"]["InErrors"] = 100
    before = host.snapshot(0.0)
    host.snmp["Udp"]["InErrors"] = 1
    del host.snmp6["Udp6.InErrors"]
    _, _, not_evaluated = evaluate(make_window(before, host.snapshot(5.0)))
    assert not_evaluated["socket.filter_drop"] == "counter reset during the window"


# --- tcp.syn_queue_full: the listener and its backlog ----------------------------------------------

def syn_flood(h):
    bump_all(h, **{"TcpExt.TCPReqQFullDrop": 371, "TcpExt.ListenDrops": 371})


def syn_host(backlog=8, somaxconn=4096, cookies=0, retrans=9):
    lst = listener(port=8080, backlog=backlog, queue=0, inode=40001)
    host = TransportHost(owners=SocketOwners({40001: (4242, "gateway")}), tcp_listeners=[lst])
    host.sysctls["net.core.somaxconn"] = somaxconn
    host.sysctls["net.ipv4.tcp_syncookies"] = cookies
    host.tcp_mem_socks = [tcp_sock(port=8080, inode=40001, state=TCP_LISTEN, drops=10, local="0.0.0.0",
                                   remote="0.0.0.0", peer_port=0),
                          tcp_sock(port=9090, inode=40002, state=TCP_LISTEN, drops=0, local="0.0.0.0",
                                   remote="0.0.0.0", peer_port=0)]
    host.syn_recv = [HalfOpen(4, "198.18.0.1", 8080, count=backlog + 1, retransmitted=retrans,
                              max_retrans=2, peers=["198.18.0.2"], peer_count=1)]

    def change(h):
        syn_flood(h)
        h.tcp_mem_socks = [replace(h.tcp_mem_socks[0], drops=381), h.tcp_mem_socks[1]]
    return host, change, lst


def test_syn_queue_names_listener_backlog_and_half_open_connections():
    host, change, lst = syn_host()
    f = evaluate(window_of(host, change, listeners=[stats(lst, peak=0, full=0, samples=35, full_at_end=False)]))[0][
        "tcp.syn_queue_full"]
    assert (f.severity, f.drops) == ("critical", 371)
    assert len(f.subjects) == 1
    s = f.subjects[0]
    assert (s["socket"], s["pid"], s["process"]) == ("0.0.0.0:8080", 4242, "gateway")
    assert (s["backlog"], s["capped_by"], s["syn_queue"], s["listen_drops"]) == (8, "listen() backlog", 9, 371)
    assert (s["accept_queue"], s["full_samples"], s["samples"]) == (0, 0, 35)
    ev = evidence(f, "sock_diag")[0]
    assert ev["syn_queue_full"] is True and ev["half_open"] == 9 and ev["peers"] == 1
    # the SYN queue is capped by the backlog in force: the app's listen() argument here
    app = fixes_of(f, "app")
    assert len(app) == 1 and "pid 4242 (gateway)" in app[0]["text"]
    assert "backlog of 8" in app[0]["text"] and "at least 512" in app[0]["text"]  # 8 + 371 -> 512
    assert sysctl_fix(f, "net.core.somaxconn") is None  # 4096 already allows 512
    assert sysctl_fix(f, "net.ipv4.tcp_syncookies")["proposed"] == 1
    assert sysctl_fix(f, "net.ipv4.tcp_max_syn_backlog")["proposed"] == 4096
    assert "no kernel drop reason" in f.explanation
    assert "9 of the 9 half-open connections on 0.0.0.0:8080" in f.explanation


def test_syn_queue_capped_by_somaxconn_proposes_it_with_restart():
    host, change, _ = syn_host(backlog=128, somaxconn=128, cookies=1, retrans=0)
    f = evaluate(window_of(host, change))[0]["tcp.syn_queue_full"]
    s = f.subjects[0]
    assert (s["capped_by"], s["samples"]) == ("somaxconn", 0)  # taken from the final listener dump
    fix = sysctl_fix(f, "net.core.somaxconn")
    assert (fix["current"], fix["proposed"]) == (128, 512)
    assert "pid 4242" in fix["note"] and "listen() again" in fix["note"]
    assert sysctl_fix(f, "net.ipv4.tcp_syncookies") is None
    assert "half-open" not in f.explanation  # SYN-ACKs were not retransmitted


def test_syn_queue_without_socket_data_keeps_generic_advice():
    host = TransportHost(tcp_mem_socks=None, syn_recv=None)
    f = evaluate(window_of(host, syn_flood))[0]["tcp.syn_queue_full"]
    assert f.subjects == []
    assert "Send-Q" in fixes_of(f, "app")[0]["text"]


def test_syn_queue_listener_found_by_half_open_only():
    host, _, _lst = syn_host()
    host.tcp_mem_socks = []
    f = evaluate(window_of(host, syn_flood))[0]["tcp.syn_queue_full"]
    assert [(s["socket"], s["listen_drops"], s["syn_queue"]) for s in f.subjects] == [("0.0.0.0:8080", 0, 9)]


def test_syn_queue_ipv6_wildcard_does_not_take_ipv4_requests_of_an_ipv4_listener():
    host, change, lst = syn_host()
    six = listener(port=8080, backlog=8, inode=40003, address="::")
    host.tcp_listeners = [lst, six]
    f = evaluate(window_of(host, change))[0]["tcp.syn_queue_full"]
    assert [s["socket"] for s in f.subjects] == ["0.0.0.0:8080"]


# --- udp.rcvbuf_full: buffer in force -----------------------------------------------------------

def rcvbuf_host(rcvbuf_in_force):
    host = TransportHost(owners=SocketOwners({50001: (777, "metrics")}),
                         udp_sockets=[udp_socket(9000, 50001, drops=0)])
    host.udp_mem_socks = [udp_mem_sock(port=9000, inode=50001, rcvbuf=rcvbuf_in_force, rmem=rcvbuf_in_force - 512)]

    def flood(h):
        bump_all(h, **{"Udp.RcvbufErrors": 2600, "Udp.InErrors": 2600, "Udp.InDatagrams": 150})
        h.udp_sockets = [udp_socket(9000, 50001, drops=2600, rx_queue=7680)]
    return host, flood


def test_rcvbuf_set_by_the_application_is_named_with_a_derived_request():
    host, flood = rcvbuf_host(8192)
    f = evaluate(window_of(host, flood))[0]["udp.rcvbuf_full"]
    assert f.subjects[0]["rcvbuf"] == 8192 and f.subjects[0]["pid"] == 777
    app = fixes_of(f, "app")
    assert "pid 777 (metrics)" in app[0]["text"]
    so = [x["text"] for x in app if "sets SO_RCVBUF=" in x["text"]]
    assert so and "4096" in so[0] and "524288" in so[0]
    # sustained: the reader took 30/s while 550/s arrived
    assert "30.0/s" in f.explanation and "550.0/s" in f.explanation


def test_rcvbuf_default_sized_socket_gets_no_so_rcvbuf_advice():
    host, flood = rcvbuf_host(212992)
    f = evaluate(window_of(host, flood))[0]["udp.rcvbuf_full"]
    assert not [x for x in fixes_of(f, "app") if "sets SO_RCVBUF" in x["text"]]
    assert sysctl_fix(f, "net.core.rmem_default")["proposed"] == 524288


def test_rcvbuf_set_by_every_application_gets_no_rmem_default():
    # rmem_default only sizes sockets that do not set SO_RCVBUF: raising it (host-wide) would
    # reach none of them - the lab's udp-rcvbuf scenario showed it not effective, rolled back
    host, flood = rcvbuf_host(8192)
    f = evaluate(window_of(host, flood))[0]["udp.rcvbuf_full"]
    assert sysctl_fix(f, "net.core.rmem_default") is None and sysctl_fix(f, "net.core.rmem_max") is None
    assert any("sets SO_RCVBUF=4096" in x["text"] for x in fixes_of(f, "app"))


def test_rcvbuf_capped_by_rmem_max_proposes_rmem_max():
    # in force = 2 x rmem_max: the application asked for at least rmem_max and was capped
    host, flood = rcvbuf_host(2 * 212992)
    host.sysctls["net.core.rmem_max"] = 212992
    f = evaluate(window_of(host, flood))[0]["udp.rcvbuf_full"]
    assert sysctl_fix(f, "net.core.rmem_default") is None
    maximum = sysctl_fix(f, "net.core.rmem_max")
    assert (maximum["current"], maximum["proposed"]) == (212992, 524288)
    assert "at this cap" in maximum["note"]


def test_warning_level_exit_code_for_a_slow_backlog_drop():
    diagnosis = diagnosis_from_window(window_of(TransportHost(), lambda h: bump_all(h, **{"TcpExt.TCPBacklogDrop": 2})))
    assert diagnosis.exit_code() == EXIT_WARNING
