"""Parameters from a real system instead of guesses: `dropdoc sim --from-host` / `--from BUNDLE`.

A snapshot gives the settings (sysctls, listen backlogs in force, socket buffers, qdisc
limits, ring sizes, CPUs); a window (two snapshots) also gives the rates (new connections,
accepted, datagrams, packets, transmitted). Every parameter is reported as measured (with
where it came from) or defaulted, so nobody mistakes a default for a fact.

Limits of what counters can tell (said in the notes): a window gives averages, so bursts
are invisible; ListenOverflows counts retransmitted SYNs and ACKs again, so arrivals
estimated from it are an upper bound. The per-packet softirq cost is in no counter; over a
live window (--from-host) it is the CPU's softirq time over the packets it processed
(dropdoc.sim.cputime: tick-sampled, so only a CPU that received a lot gives it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DropdocError
from ..sources import sysctls as sysctls_source
from . import cputime
from .params import SimParams

# The retransmission counts shape how often a refused handshake is counted again.
sysctls_source.want(("net.ipv4.tcp_syn_retries", "net.ipv4.tcp_synack_retries"))


@dataclass
class Calibration:
    params: SimParams
    measured: dict[str, str] = field(default_factory=dict)   # parameter -> where it came from
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def defaulted(self) -> list[str]:
        from dataclasses import fields
        skip = {"seed", "poisson"}
        return [f.name for f in fields(SimParams) if f.name not in self.measured and f.name not in skip]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "params": self.params.to_dict(), "measured": dict(self.measured),
                "defaulted": self.defaulted, "notes": list(self.notes)}


def params_from_host(netns: str | None = None, seconds: float = 5.0, on_tick=None) -> Calibration:
    """Measure this host (or `netns`) for `seconds` and calibrate from the window."""
    from ..window import measure

    before = cputime.read()
    window = measure(netns, seconds, on_tick=on_tick)
    calibration = params_from_snapshot(window, cpu_times=cputime.delta(before, cputime.read()))
    calibration.source = f"host{f' netns {netns}' if netns else ''}, {window.seconds:.1f} s window"
    return calibration


def params_from_bundle(path: str) -> Calibration:
    """Calibrate from a bundle written by `dropdoc collect -o` (offline, any machine)."""
    from ..bundle import read_bundle

    window = read_bundle(path)
    calibration = params_from_snapshot(window)
    calibration.source = f"bundle {path}, {window.seconds:.1f} s window"
    return calibration


def params_from_snapshot(window_or_snapshot: Any, base: SimParams | None = None,
                         cpu_times: cputime.CpuTimes | None = None) -> Calibration:
    """Settings from a Snapshot; settings and rates from a Window (dropdoc.window.Window).
    cpu_times: per-CPU /proc/stat deltas over the same window (dropdoc.sim.cputime), which
    give the per-packet softirq cost; a bundle or a snapshot has none."""
    if hasattr(window_or_snapshot, "after") and hasattr(window_or_snapshot, "deltas"):
        window, snap = window_or_snapshot, window_or_snapshot.after
    elif hasattr(window_or_snapshot, "results"):
        window, snap = None, window_or_snapshot
    else:
        raise DropdocError(f"cannot calibrate from a {type(window_or_snapshot).__name__}: "
                           "expected a snapshot or a measurement window")
    values = (base or SimParams()).to_dict()
    cal = Calibration(SimParams(), source="snapshot")
    _settings(snap, window, values, cal)
    if window is not None:
        _softirq_cost(window, cpu_times or {}, values, cal)
        _rates(window, values, cal)
    else:
        cal.notes.append("a single snapshot has no rates: the load parameters are defaults (all 0)")
    cal.params = SimParams.from_dict(values)
    return cal


# ---- settings ---------------------------------------------------------------------------------

_SYSCTLS = {
    "net.core.somaxconn": "somaxconn",
    "net.ipv4.tcp_max_syn_backlog": "tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies": "syncookies",
    "net.core.netdev_max_backlog": "netdev_max_backlog",
    "net.core.netdev_budget": "netdev_budget",
    "net.core.netdev_budget_usecs": "netdev_budget_usecs",
    "net.core.rmem_default": "rmem_default",
    "net.core.rmem_max": "rmem_max",
    "net.ipv4.tcp_syn_retries": "syn_retries",
    "net.ipv4.tcp_synack_retries": "synack_retries",
}


def _set(values: dict, cal: Calibration, name: str, value: Any, how: str) -> None:
    if isinstance(value, float):
        value = round(value, 3)     # a measured rate: more digits would be noise
    values[name] = value
    cal.measured[name] = how


def _settings(snap: Any, window: Any, values: dict, cal: Calibration) -> None:
    sysctls = snap.data("sysctls") or {}
    for key, name in _SYSCTLS.items():
        value = sysctls.get(key)
        if isinstance(value, int):
            _set(values, cal, name, value, f"sysctl {key}")
    softnet = snap.data("softnet") or []
    if softnet:
        _set(values, cal, "cpus", len(softnet), "/proc/net/softnet_stat rows")
    else:
        _set(values, cal, "cpus", os.cpu_count(), "os.cpu_count() of this machine")
    _listener(snap, window, values, cal)
    _udp_socket(snap, window, values, cal)
    _nic(snap, window, values, cal)
    _qdisc(snap, window, values, cal)


def _busiest_listener(snap: Any, window: Any) -> tuple[Any, Any]:
    if window is not None and window.listeners:
        stats = max(window.listeners.values(), key=lambda s: (s.full_samples, s.peak_queue))
        return stats.listener, stats
    listeners = snap.data("tcp_listeners") or []
    if not listeners:
        return None, None
    return max(listeners, key=lambda lst: lst.accept_queue), None


def _listener(snap: Any, window: Any, values: dict, cal: Calibration) -> None:
    listener, stats = _busiest_listener(snap, window)
    if listener is None or listener.backlog is None:
        return
    _set(values, cal, "app_backlog", listener.backlog,
         f"backlog in force of {listener.endpoint} (sock_diag; the kernel keeps min(requested, somaxconn))")
    if listener.backlog >= values["somaxconn"]:
        cal.notes.append(f"{listener.endpoint}: backlog {listener.backlog} = somaxconn: the app may have "
                         "asked for more (raise both to test a larger queue)")
    if stats is not None and stats.samples:
        cal.notes.append(f"{listener.endpoint}: accept queue peaked at {stats.peak_queue}, full in "
                         f"{stats.full_samples}/{stats.samples} samples")


def _udp_socket(snap: Any, window: Any, values: dict, cal: Calibration) -> None:
    sockets = snap.data("udp_socket_memory") or []
    candidates = [s for s in sockets if getattr(s, "rcvbuf", None)]
    if not candidates:
        return
    # the socket that dropped most, else the one with most queued
    sock = max(candidates, key=lambda s: ((s.drops or 0), s.rmem_alloc or 0))
    if sock.rcvbuf != values["rmem_default"]:
        _set(values, cal, "udp_rcvbuf", sock.rcvbuf // 2, f"sk_rcvbuf {sock.rcvbuf} of UDP port {sock.port} / 2")
        _set(values, cal, "rcvbuf_force", True, "sk_rcvbuf taken as in force (not re-capped by rmem_max)")
    else:
        _set(values, cal, "udp_rcvbuf", None, f"UDP port {sock.port} uses rmem_default")


def _nic(snap: Any, window: Any, values: dict, cal: Calibration) -> None:
    """The interface that received most: its kind (veth or a NIC), ring and queues."""
    ethtool = snap.data("ethtool")
    interfaces = getattr(ethtool, "interfaces", {}) if ethtool is not None else {}
    busiest = None
    if window is not None:
        rx = {}
        for name, delta in window.deltas.values.items():
            if name.startswith("link.") and name.endswith(".rx_packets") and delta:
                rx[name[5:-11]] = delta
        if rx:
            busiest = max(rx, key=rx.get)
    if busiest is None:
        links = snap.data("link_stats") or {}
        totals = {name: table.get("rx_packets") or 0 for name, table in links.items() if name != "lo"}
        if totals and max(totals.values()) > 0:
            busiest = max(totals, key=totals.get)
    if busiest is None:
        return
    nic = interfaces.get(busiest)
    driver = getattr(nic, "driver", None)
    if driver in ("veth", None) and (busiest == "lo" or driver == "veth" or busiest.startswith("veth")):
        _set(values, cal, "rx_path", "veth", f"{busiest} is {driver or 'loopback'}: packets go through netif_rx")
    elif nic is not None:
        _set(values, cal, "rx_path", "nic", f"{busiest} driver {driver}")
        ring = getattr(nic, "ring", None)
        if ring is not None and getattr(ring, "rx", 0):
            _set(values, cal, "ring_size", ring.rx, f"ethtool -g {busiest}: rx {ring.rx}")
        channels = getattr(nic, "channels", None)
        if channels is not None:
            queues = (channels.combined or 0) + (channels.rx or 0)
            if queues:
                _set(values, cal, "rx_queues", queues, f"ethtool -l {busiest}: {queues} RX queue(s)")


def _qdisc(snap: Any, window: Any, values: dict, cal: Calibration) -> None:
    qdiscs = [q for q in (snap.data("qdisc") or []) if not q.is_ingress and q.kind not in ("noqueue", "mq")]
    if not qdiscs:
        return
    sent = {}
    if window is not None:
        for q in qdiscs:
            delta = window.deltas.values.get(f"{q.counter_prefix}.packets")
            drops = window.deltas.values.get(f"{q.counter_prefix}.drops")
            sent[q.counter_prefix] = (delta or 0) + (drops or 0)
    q = max(qdiscs, key=lambda x: (sent.get(x.counter_prefix, 0), x.packets or 0))
    where = f"qdisc {q.kind} {q.qid} on {q.dev}"
    if q.limit is not None and q.limit_unit == "bytes":
        _set(values, cal, "qdisc_limit_bytes", q.limit, f"{where}: limit {q.limit} bytes")
        _set(values, cal, "qdisc_limit", None, f"{where}: limited in bytes")
    elif q.limit is not None:
        _set(values, cal, "qdisc_limit", q.limit, f"{where}: limit {q.limit} packets")
    elif q.txqueuelen:
        _set(values, cal, "qdisc_limit", q.txqueuelen, f"txqueuelen of {q.dev}")
    if q.rate:
        _set(values, cal, "link_rate_bps", float(q.rate) * 8, f"{where}: rate {q.rate * 8 / 1e6:g} Mbit/s")
    if q.burst:
        _set(values, cal, "shaper_burst_bytes", q.burst, f"{where}: burst {q.burst} bytes")
    if window is not None:
        packets = window.deltas.values.get(f"{q.counter_prefix}.packets")
        drops = window.deltas.values.get(f"{q.counter_prefix}.drops")
        nbytes = window.deltas.values.get(f"{q.counter_prefix}.bytes")
        seconds = window.deltas.seconds
        if packets is not None and seconds > 0:
            _set(values, cal, "tx_rate", (packets + (drops or 0)) / seconds,
                 f"{where}: (sent {packets} + dropped {drops or 0}) / {seconds:.1f} s")
            if packets and nbytes:
                _set(values, cal, "tx_packet_bytes", max(1, round(nbytes / packets)),
                     f"{where}: bytes / packets sent")


# ---- the per-packet softirq cost ---------------------------------------------------------------

def _softnet_column(window: Any, column: str) -> dict[int, int | None]:
    out = {}
    for name, value in window.deltas.values.items():
        if name.startswith("softnet.cpu") and name.endswith(f".{column}"):
            index = name.split(".")[1][3:]
            if index.isdigit():
                out[int(index)] = value
    return out


def _softirq_cost(window: Any, cpu_times: cputime.CpuTimes, values: dict, cal: Calibration) -> None:
    """rx_cost_us = softirq time / packets processed on the CPU whose backlog dropped (else
    the busiest one), measured over the same window; softirq_share from its steal time."""
    if not cpu_times:
        return
    cost = cputime.softirq_cost(cpu_times, _softnet_column(window, "processed"),
                                _softnet_column(window, "dropped"))
    if cost is None:
        cal.notes.append(f"per-packet softirq cost: too little softirq time or too few packets on any CPU "
                         f"to measure it (at least {cputime.MIN_SOFTIRQ_S:g} s and {cputime.MIN_PACKETS} "
                         "packets: /proc/stat is sampled by the timer tick)")
        return
    _set(values, cal, "rx_cost_us", max(cost.cost_us, 1e-3), cost.describe())
    share = cputime.softirq_share(cost, window.deltas.seconds)
    if share is not None:
        _set(values, cal, "softirq_share", share, f"1 - steal time {cost.steal_s:.2f} s of CPU {cost.cpu} "
             f"over the {window.deltas.seconds:.1f} s window (/proc/stat)")


# ---- rates --------------------------------------------------------------------------------------

def _rate(window: Any, *names: str) -> float | None:
    seconds = window.deltas.seconds
    known = [window.deltas.values.get(n) for n in names]
    known = [v for v in known if v is not None]
    if not known or seconds <= 0:
        return None
    return sum(known) / seconds


def _listener_full_share(window: Any) -> float | None:
    if not window.listeners:
        return None
    stats = max(window.listeners.values(), key=lambda s: (s.full_samples, s.peak_queue))
    return stats.full_samples / stats.samples if stats.samples else None


def _rates(window: Any, values: dict, cal: Calibration) -> None:
    seconds = window.deltas.seconds
    passive = _rate(window, "Tcp.PassiveOpens")
    drops = _rate(window, "TcpExt.ListenDrops")
    if passive is not None:
        arrival = passive + (drops or 0.0)
        _set(values, cal, "conn_rate", arrival,
             f"(Tcp.PassiveOpens + TcpExt.ListenDrops) / {seconds:.1f} s")
        if drops:
            cal.notes.append("connection arrivals include retransmitted SYNs/ACKs counted again in "
                             "ListenDrops: an upper bound")
            # the queue overflowed: the app took what it could, that is its accept rate
            _set(values, cal, "accept_rate", passive, "Tcp.PassiveOpens/s while the accept queue overflowed "
                 "(the app took what it could)")
            busy = _listener_full_share(window)
            if busy is not None and busy < 0.5:
                cal.notes.append(f"the accept queue was full in only {busy:.0%} of the samples: the load came "
                                 "in bursts, and accept_rate (an average over the window) underestimates "
                                 "how fast the app accepts while connections wait")
    delivered = _rate(window, "Udp.InDatagrams")
    rcvbuf_errors = _rate(window, "Udp.RcvbufErrors")
    if delivered is not None:
        _set(values, cal, "udp_rate", delivered + (rcvbuf_errors or 0.0),
             f"(Udp.InDatagrams + Udp.RcvbufErrors) / {seconds:.1f} s")
        if rcvbuf_errors:
            _set(values, cal, "read_rate", delivered, "Udp.InDatagrams/s while the buffer overflowed "
                 "(the app read what it could)")
    rx_packets = sum(v for n, v in window.deltas.values.items()
                     if n.startswith("link.") and n.endswith(".rx_packets") and v and not n.startswith("link.lo."))
    if rx_packets and seconds > 0:
        known = values["udp_rate"] + 2 * values["conn_rate"]
        other = max(rx_packets / seconds - known, 0.0)
        _set(values, cal, "other_rate", other, "link rx_packets/s minus datagrams and handshakes")
        rx_bytes = sum(v for n, v in window.deltas.values.items()
                       if n.startswith("link.") and n.endswith(".rx_bytes") and v and not n.startswith("link.lo."))
        if values["udp_rate"] >= 0.8 * rx_packets / seconds and rx_bytes:
            # mostly datagrams: the average frame minus Ethernet 14 + IPv4 20 + UDP 8 bytes
            size = max(0, round(rx_bytes / rx_packets) - 42)
            _set(values, cal, "udp_size", size, "link rx_bytes/rx_packets - 42 header bytes (mostly UDP)")
    rps = [n for n, v in window.deltas.values.items() if n.startswith("softnet.") and n.endswith("received_rps") and v]
    if rps:
        _set(values, cal, "rps_cpus", len(rps), "CPUs whose softnet received_rps grew")
    squeeze = _rate(window, *[n for n in window.deltas.values if n.endswith(".time_squeeze")])
    if squeeze:
        cal.notes.append(f"softirq rounds ran out of budget {squeeze:.0f} times/s (time_squeeze)")
    cal.notes.append("rates are averages over the window: bursts are invisible to counters; set "
                     "burst_peak/burst_length_s to test them")
    if "rx_cost_us" not in cal.measured:
        cal.notes.append("per-packet softirq cost (rx_cost_us) not measured (it needs /proc/stat over the "
                         f"window: --from-host): default {SimParams().rx_cost_us} us")


def describe_calibration(cal: Calibration) -> list[str]:
    """Lines for the user: what was measured and from where, what is a default."""
    lines = [f"calibrated from {cal.source}:"]
    for name, how in cal.measured.items():
        lines.append(f"  measured  {name} = {getattr(cal.params, name)!r}  ({how})")
    defaulted = cal.defaulted
    if defaulted:
        lines.append(f"  defaults  {', '.join(defaulted)}")
    for note in cal.notes:
        lines.append(f"  note: {note}")
    return lines


__all__ = ["Calibration", "params_from_host", "params_from_bundle", "params_from_snapshot",
           "describe_calibration"]
