"""Hand-built measurement windows for rule tests: no /proc, no netlink, no traffic.

A `Host` holds the counters and socket state of an imaginary server (values in the shape
each source's parse() returns). `host.snapshot(t)` freezes it into a Snapshot; tests bump
counters between two snapshots and build a Window from the pair:

    host = Host()
    before = host.snapshot(0.0)
    host.bump("netstat", "TcpExt.ListenOverflows", 286)
    after = host.snapshot(5.0)
    window = make_window(before, after, listeners=[...])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from dropdoc import delta
from dropdoc.snapshot import Snapshot
from dropdoc.sources import SourceResult
from dropdoc.sources.process_sockets import SocketOwners
from dropdoc.sources.proc_sockets import TCP_CLOSE, ProcSocket
from dropdoc.sources.softnet import CpuSoftnet
from dropdoc.sources.tcp_listeners import Listener
from dropdoc.window import ListenerStats, Window

KERNEL = "6.8.0-45-generic"
NETNS = "srv"
WALL0 = 1_700_000_000.0


def base_snmp() -> dict[str, dict[str, int]]:
    """/proc/net/snmp of a busy server (values as snmp.parse returns them)."""
    return {
        "Ip": {"Forwarding": 2, "DefaultTTL": 64, "InReceives": 91_234_567, "InHdrErrors": 0,
               "InAddrErrors": 0, "ForwDatagrams": 0, "InUnknownProtos": 0, "InDiscards": 0,
               "InDelivers": 91_230_001, "OutRequests": 88_765_432, "OutDiscards": 12,
               "OutNoRoutes": 0, "ReasmTimeout": 0, "ReasmReqds": 0, "ReasmOKs": 0,
               "ReasmFails": 0, "FragOKs": 0, "FragFails": 0, "FragCreates": 0},
        "Icmp": {"InMsgs": 120, "InErrors": 0, "InDestUnreachs": 100, "OutMsgs": 340,
                 "OutErrors": 0, "OutDestUnreachs": 321, "OutTimeExcds": 0},
        "Tcp": {"RtoAlgorithm": 1, "RtoMin": 200, "RtoMax": 120000, "MaxConn": -1,
                "ActiveOpens": 10_021, "PassiveOpens": 1_204_332, "AttemptFails": 33,
                "EstabResets": 210, "CurrEstab": 87, "InSegs": 80_000_000, "OutSegs": 79_000_000,
                "RetransSegs": 4_411, "InErrs": 0, "OutRsts": 1_020, "InCsumErrors": 0},
        "Udp": {"InDatagrams": 4_400_123, "NoPorts": 321, "InErrors": 0, "OutDatagrams": 4_399_000,
                "RcvbufErrors": 0, "SndbufErrors": 0, "InCsumErrors": 0, "IgnoredMulti": 0,
                "MemErrors": 0},
    }


def base_netstat() -> dict[str, dict[str, int]]:
    """/proc/net/netstat (TcpExt, IpExt) of the same server."""
    return {
        "TcpExt": {"SyncookiesSent": 0, "SyncookiesRecv": 0, "SyncookiesFailed": 0,
                   "PAWSActive": 0, "PAWSEstab": 0, "ListenOverflows": 1_532, "ListenDrops": 1_532,
                   "TCPBacklogDrop": 0, "TCPReqQFullDoCookies": 0, "TCPReqQFullDrop": 0,
                   "TCPRcvQDrop": 0, "TCPZeroWindowDrop": 0, "TCPMemoryPressures": 0},
        "IpExt": {"InNoRoutes": 0, "InTruncatedPkts": 0, "InMcastPkts": 0, "InOctets": 9_876_543_210,
                  "OutOctets": 8_765_432_109},
    }


def base_snmp6() -> dict[str, int]:
    return {"Ip6.InReceives": 1_234, "Icmp6.OutDestUnreachs": 2, "Udp6.InDatagrams": 800,
            "Udp6.NoPorts": 1, "Udp6.InErrors": 0, "Udp6.RcvbufErrors": 0, "Udp6.SndbufErrors": 0}


def base_sysctls(somaxconn: int = 4096) -> dict[str, Any]:
    return {
        "net.core.somaxconn": somaxconn,
        "net.ipv4.tcp_max_syn_backlog": 2048,
        "net.ipv4.tcp_syncookies": 1,
        "net.ipv4.tcp_abort_on_overflow": 0,
        "net.core.netdev_max_backlog": 1000,
        "net.core.netdev_budget": 300,
        "net.core.netdev_budget_usecs": 2000,
        "net.core.rmem_max": 212992,
        "net.core.rmem_default": 212992,
        "net.core.wmem_max": 212992,
        "net.core.wmem_default": 212992,
        "net.ipv4.udp_mem": (764_514, 1_019_353, 1_529_028),
        "net.ipv4.udp_rmem_min": 4096,
        "net.ipv4.tcp_rmem": (4096, 131072, 6291456),
        "net.ipv4.tcp_mem": (382_257, 509_678, 764_514),
        "net.core.rps_sock_flow_entries": 0,
    }


def base_link() -> dict[str, dict[str, int]]:
    names = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
             "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_length_errors",
             "rx_over_errors", "rx_crc_errors", "rx_frame_errors", "rx_fifo_errors",
             "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors")
    eth0 = dict.fromkeys(names, 0) | {"rx_packets": 95_000_000, "tx_packets": 90_000_000,
                                      "rx_bytes": 10_000_000_000, "tx_bytes": 9_000_000_000}
    lo = dict.fromkeys(names, 0) | {"rx_packets": 5_000, "tx_packets": 5_000}
    return {"lo": lo, "eth0": eth0}


def cpu(index: int, processed: int = 1_000_000, dropped: int = 0, time_squeeze: int = 0) -> CpuSoftnet:
    return CpuSoftnet(cpu=index, cpu_known=True, processed=processed, dropped=dropped,
                      time_squeeze=time_squeeze, received_rps=0, flow_limit_count=0, backlog_len=0)


def listener(port: int = 8080, backlog: int | None = 128, queue: int = 0, inode: int = 40001,
             address: str = "0.0.0.0") -> Listener:
    return Listener(family=6 if ":" in address else 4, address=address, port=port,
                    accept_queue=queue, backlog=backlog, uid=1000, inode=inode)


def stats(lst: Listener, peak: int, full: int, samples: int, full_at_end: bool) -> ListenerStats:
    """What window.measure() would have accumulated for one listener."""
    return ListenerStats(lst, peak_queue=peak, full_samples=full, samples=samples, full_at_end=full_at_end)


def udp_socket(port: int, inode: int, drops: int, rx_queue: int = 0, address: str = "0.0.0.0") -> ProcSocket:
    return ProcSocket(family=4, local=address, port=port, remote="0.0.0.0", remote_port=0,
                      state=TCP_CLOSE, tx_queue=0, rx_queue=rx_queue, uid=1000, inode=inode, drops=drops)


@dataclass
class Host:
    """Mutable state of an imaginary server; snapshot() copies it."""

    netns: str | None = NETNS
    kernel: str = KERNEL
    snmp: dict = field(default_factory=base_snmp)
    netstat: dict = field(default_factory=base_netstat)
    snmp6: dict = field(default_factory=base_snmp6)
    sysctls: dict = field(default_factory=base_sysctls)
    softnet: list = field(default_factory=lambda: [cpu(i) for i in range(4)])
    link: dict = field(default_factory=base_link)
    udp_sockets: list = field(default_factory=list)
    tcp_listeners: list = field(default_factory=list)
    owners: SocketOwners = field(default_factory=SocketOwners)
    # source name -> (status, error) for sources that do not answer
    broken: dict = field(default_factory=dict)

    def bump(self, source: str, counter: str, by: int) -> None:
        """Add `by` to one counter: ("netstat", "TcpExt.ListenOverflows"), ("snmp6", "Udp6.NoPorts"),
        ("link", "eth0.rx_missed_errors")."""
        if source == "snmp6":
            self.snmp6[counter] += by
            return
        table, name = counter.rsplit(".", 1)
        getattr(self, source)[table][name] += by

    def set_cpu(self, index: int, **values: int) -> None:
        self.softnet = [cpu(c.cpu, **{"processed": c.processed, "dropped": c.dropped,
                                      "time_squeeze": c.time_squeeze, **values})
                        if c.cpu == index else c for c in self.softnet]

    def snapshot(self, t: float) -> Snapshot:
        data = {
            "snmp": self.snmp, "netstat": self.netstat, "snmp6": self.snmp6,
            "sysctls": self.sysctls, "softnet": self.softnet, "link_stats": self.link,
            "udp_sockets": self.udp_sockets, "tcp_listeners": self.tcp_listeners,
            "process_sockets": self.owners,
        }
        results = {}
        for name, value in data.items():
            if name in self.broken:
                status, error = self.broken[name]
                results[name] = SourceResult(status, error=error)
            else:
                results[name] = SourceResult("ok", copy.deepcopy(value))
        return Snapshot(monotonic=1000.0 + t, wall=WALL0 + t, netns=self.netns, kernel=self.kernel,
                        results=results)


def make_window(before: Snapshot, after: Snapshot, listeners: list[ListenerStats] = (),
                sampling: str = "ok") -> Window:
    return Window(before, after, delta.compute(before, after),
                  listeners={s.listener.inode: s for s in listeners}, listener_sampling=sampling)


def quiet_window(host: Host | None = None, seconds: float = 5.0) -> Window:
    """A window in which nothing moved."""
    host = host or Host()
    return make_window(host.snapshot(0.0), host.snapshot(seconds))
