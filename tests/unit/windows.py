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


# --- network layer (tests/unit/test_rules_network.py) --------------------------------------
# A Host that also carries the network-layer sources: host-wide neighbour statistics and the
# namespace's interfaces/routes/neighbour entries, plus the counters the network rules read
# that base_snmp/base_netstat leave out.

def neigh_table(table: str = "arp", entries: int = 12, **counters: int):
    from dropdoc.sources.neighbour import KNOWN_COLUMNS, NeighTable

    values = dict.fromkeys(KNOWN_COLUMNS[1:], 0) | {"lookups": 4_000, "hits": 3_500, "allocs": 40}
    values.update(counters)
    return NeighTable(table=table, entries=entries, counters=values, cpus=4, path=f"proc/net/stat/{table}_cache")


def net_interface(name: str, index: int, mtu: int = 1500, rp_filter: int = 0, unres_qlen_bytes: int = 212992):
    from dropdoc.sources.network_conf import Interface

    return Interface(name=name, index=index, mtu=mtu, rp_filter=rp_filter, unres_qlen_bytes=unres_qlen_bytes)


def route(destination: str, interface: str, gateway: str | None = None, family: int = 4, reject: bool = False):
    from dropdoc.sources.network_conf import RTF_GATEWAY, RTF_REJECT, RTF_UP, Route

    flags = RTF_UP | (RTF_GATEWAY if gateway else 0) | (RTF_REJECT if reject else 0)
    return Route(family=family, destination=destination, gateway=gateway, interface=interface, metric=0, flags=flags)


def neighbour(address: str, interface: str, state: str = "REACHABLE", lladdr: str | None = "02:00:00:00:00:01"):
    from dropdoc.sources.network_conf import Neighbour

    return Neighbour(family=6 if ":" in address else 4, address=address, interface=interface, state=state,
                     lladdr=None if state in ("INCOMPLETE", "FAILED") else lladdr)


def base_network_conf():
    from dropdoc.sources.network_conf import NetworkConf

    return NetworkConf(
        interfaces={"lo": net_interface("lo", 1, mtu=65536), "eth0": net_interface("eth0", 2),
                    "eth1": net_interface("eth1", 3)},
        rp_filter_all=0, rp_filter_default=0,
        routes=[route("default", "eth0", gateway="10.0.0.1"), route("10.0.0.0/24", "eth0"),
                route("10.1.0.0/24", "eth1")],
        neighbours=[neighbour("10.0.0.1", "eth0")],
    )


NETWORK_SYSCTLS = {
    "net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 0,
    "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.ipfrag_time": 30, "net.ipv4.ipfrag_high_thresh": 4_194_304, "net.ipv4.ipfrag_low_thresh": 3_145_728,
    "net.ipv6.ip6frag_time": 60, "net.ipv6.ip6frag_high_thresh": 4_194_304, "net.ipv6.ip6frag_low_thresh": 3_145_728,
    "net.ipv4.ip_no_pmtu_disc": 0, "net.ipv4.ip_default_ttl": 64,
    "net.ipv4.neigh.default.gc_thresh1": 128, "net.ipv4.neigh.default.gc_thresh2": 512,
    "net.ipv4.neigh.default.gc_thresh3": 1024, "net.ipv6.neigh.default.gc_thresh1": 128,
    "net.ipv6.neigh.default.gc_thresh2": 512, "net.ipv6.neigh.default.gc_thresh3": 1024,
    "net.ipv4.neigh.default.unres_qlen_bytes": 212992, "net.ipv6.neigh.default.unres_qlen_bytes": 212992,
}


@dataclass
class NetHost(Host):
    """A Host (a router with eth0/eth1) with the network-layer sources as well."""

    neighbour: Any = None
    network_conf: Any = field(default_factory=base_network_conf)

    def __post_init__(self) -> None:
        from dropdoc.sources.neighbour import NeighbourStats

        if self.neighbour is None:
            self.neighbour = NeighbourStats({"arp": neigh_table("arp"), "ndisc": neigh_table("ndisc", entries=4)})
        self.snmp["Icmp"].update({"OutRateLimitHost": 0, "OutRateLimitGlobal": 0, "OutRedirects": 0,
                                  "InTimeExcds": 0})
        self.netstat["TcpExt"].setdefault("IPReversePathFilter", 0)
        self.netstat["IpExt"].setdefault("ReasmOverlaps", 0)
        for name in ("Ip6.InHdrErrors", "Ip6.InNoRoutes", "Ip6.OutNoRoutes", "Ip6.OutForwDatagrams",
                     "Ip6.ReasmTimeout", "Ip6.ReasmReqds", "Ip6.ReasmOKs", "Ip6.ReasmFails", "Ip6.FragOKs",
                     "Ip6.FragFails", "Ip6.FragCreates", "Icmp6.OutTimeExcds", "Icmp6.OutPktTooBigs"):
            self.snmp6.setdefault(name, 0)
        self.sysctls.update(NETWORK_SYSCTLS)
        self.link.setdefault("eth1", dict(self.link["eth0"]) | {"rx_packets": 1_000, "tx_packets": 1_000})

    def bump_neigh(self, table: str, counter: str, by: int) -> None:
        """Add `by` to one neighbour-table counter ("arp", "unresolved_discards")."""
        from dropdoc.sources.neighbour import NeighbourStats, NeighTable

        old = self.neighbour.tables[table]
        counters = dict(old.counters)
        counters[counter] += by
        tables = dict(self.neighbour.tables)
        tables[table] = NeighTable(old.table, old.entries, counters, old.cpus, old.host_wide, old.path)
        self.neighbour = NeighbourStats(tables)

    def snapshot(self, t: float) -> Snapshot:
        snap = super().snapshot(t)
        for name in ("neighbour", "network_conf"):
            if name in self.broken:
                status, error = self.broken[name]
                snap.results[name] = SourceResult(status, error=error)
            else:
                snap.results[name] = SourceResult("ok", copy.deepcopy(getattr(self, name)))
        return snap


# --- kernel layer (tests/unit/test_rules_kernel.py) -----------------------------------------
# The qdisc source (sources/qdisc.py) of the same server: noqueue on lo, the default
# pfifo_fast on eth0 (limit = txqueuelen). KernelHost carries it in every snapshot.

def qdisc(dev: str = "eth0", kind: str = "pfifo_fast", handle: int = 0, parent: int = 0xFFFFFFFF,
          ifindex: int = 2, **values: Any):
    from dropdoc.sources.qdisc import Qdisc

    defaults = dict(bytes=9_000_000_000, packets=6_000_000, qlen=0, backlog=0, drops=1_000, requeues=5,
                    overlimits=0, txqueuelen=1000)
    return Qdisc(ifindex=ifindex, dev=dev, kind=kind, handle=handle, parent=parent, **{**defaults, **values})


def base_qdiscs() -> list:
    return [qdisc("lo", "noqueue", ifindex=1, bytes=0, packets=0, drops=0, requeues=0),
            qdisc("eth0", "pfifo_fast", limit=1000, limit_unit="packets")]


@dataclass
class KernelHost(Host):
    """A Host with the qdisc source as well."""

    qdisc: list = field(default_factory=base_qdiscs)

    def snapshot(self, t: float) -> Snapshot:
        snap = super().snapshot(t)
        if "qdisc" in self.broken:
            status, error = self.broken["qdisc"]
            snap.results["qdisc"] = SourceResult(status, error=error)
        else:
            snap.results["qdisc"] = SourceResult("ok", copy.deepcopy(self.qdisc))
        return snap
