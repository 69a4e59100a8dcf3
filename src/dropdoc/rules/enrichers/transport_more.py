"""The rest of the transport and socket layers: TCP backlog, receive queue, memory
pressure and PAWS drops; UDP memory and send-buffer errors; socket filter drops.

Per-socket evidence comes from sock_diag skmem (sources/socket_memory.py): sk_drops rose
on the sockets that dropped, rb/tb are the buffers in force. Protocol memory comes from
/proc/net/sockstat against tcp_mem/udp_mem (sources/sockstat.py), both in pages and
host-wide.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ...model import Finding
from ...sources.proc_sockets import TCP_LISTEN
from ...sources.socket_memory import SockMem, drops_in_window
from ...sources.sockstat import Sockstat
from ...window import Window
from ..engine import Rule, evaluate_rule, matching, new_finding
from . import enricher, evaluator
from .common import next_power_of_two, owner_fields, sysctl, sysctl_fix, who

MAX_SUBJECTS = 5
APPROACHING_FRACTION = 0.8  # of tcp_mem[1]: reported (info) before pressure starts
ZERO_WINDOW_REASON = (
    "flow control: a receiver that reads slowly makes TCP advertise a zero window; segments the "
    "peer sends into it are dropped (TCPZeroWindowDrop, and TCP_OLD_SEQUENCE for its window "
    "probes) and sent again when the window opens - nothing is lost")


# --- shared helpers -------------------------------------------------------------------------

def _tcp_sockets(window: Window) -> tuple[list[SockMem] | None, list[SockMem] | None]:
    return window.before.data("tcp_socket_memory"), window.after.data("tcp_socket_memory")


def _tcp_drop_subjects(finding: Finding, window: Window, listeners: bool = False) -> list[dict[str, Any]]:
    """Sockets whose own drop counter (sk_drops) rose during the window, most first."""
    before, after = _tcp_sockets(window)
    moved = [(d, s, c) for d, s, c in drops_in_window(before, after)
             if (s.state == TCP_LISTEN) == listeners]
    subjects = []
    for drops, sock, cumulative in moved[:MAX_SUBJECTS]:
        subject = {"socket": sock.endpoint, "peer": sock.peer, **owner_fields(window, sock.inode),
                   "drops": drops, "rx_queue": sock.rqueue, "rcvbuf": sock.rcvbuf, "sndbuf": sock.sndbuf}
        if cumulative:
            subject["drops_since_socket_start"] = True  # no first dump to subtract
        subjects.append(subject)
        finding.evidence.append({"source": "sock_diag", "socket": sock.endpoint, "peer": sock.peer,
                                 "sk_drops": drops, "rmem_queued": sock.rmem_alloc, "rcvbuf": sock.rcvbuf,
                                 "backlog_bytes": sock.backlog})
    finding.subjects.extend(subjects)
    return subjects


def _sockstat(window: Window) -> tuple[Sockstat | None, Sockstat | None]:
    return window.before.data("sockstat"), window.after.data("sockstat")


def _limit(window: Window, key: str) -> tuple[int, int, int] | None:
    """tcp_mem / udp_mem: the sysctls source, else what sockstat read from the host."""
    value = sysctl(window, key)
    if isinstance(value, tuple) and len(value) == 3:
        return value
    for stat in reversed(_sockstat(window)):
        if stat is not None and stat.limit(key):
            return stat.limit(key)
    return None


def _peak_pages(window: Window, proto: str) -> int | None:
    values = [getattr(s, f"{proto}_mem_pages") for s in _sockstat(window) if s is not None]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _page_size(window: Window) -> int:
    for stat in reversed(_sockstat(window)):
        if stat is not None:
            return stat.page_size
    return 4096


def _mib(pages: int, page_size: int) -> str:
    return f"{pages * page_size / (1 << 20):.0f} MiB"


def _scaled_limits(limits: tuple[int, int, int], peak: int | None, floor: int = 2) -> tuple[int, ...]:
    """tcp_mem/udp_mem scaled so the measured peak sits at most at half the pressure mark."""
    factor = floor
    if peak:
        factor = max(floor, math.ceil(2 * peak / max(limits[1], 1)))
    return tuple(v * factor for v in limits)


def _counter_evidence(window: Window, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"source": "counters", "counter": name, "delta": value}
            for name, value in sorted(matching(names, window.deltas.values).items()) if value]


def _rmem_fix(finding: Finding, window: Window, subjects: list[dict[str, Any]], why: str) -> None:
    """Raise tcp_rmem's maximum when the sockets' receive buffers grew up to it (autotuning
    is capped there); with no per-socket data, propose it conditionally."""
    rmem = sysctl(window, "net.ipv4.tcp_rmem")
    if not (isinstance(rmem, tuple) and len(rmem) == 3):
        return
    at_max = [s for s in subjects if s.get("rcvbuf") and s["rcvbuf"] >= 0.9 * rmem[2]]
    if subjects and not at_max:
        return
    proposed = (rmem[0], rmem[1], next_power_of_two(2 * rmem[2]))
    note = why if at_max else why + " - only if `ss -tm` shows rb at the maximum for the affected sockets"
    finding.fixes.append(sysctl_fix(window, "net.ipv4.tcp_rmem", rmem, proposed, note))


# --- tcp.backlog_drop -------------------------------------------------------------------------

@enricher("tcp_backlog")
def tcp_backlog(finding: Finding, window: Window) -> None:
    subjects = _tcp_drop_subjects(finding, window)
    segments = window.deltas.get("Tcp.InSegs")
    if segments:
        finding.evidence.append({"source": "ratio", "dropped_per_received_segment":
                                 f"{finding.drops / segments:.3%}", "segments_received": segments})
    names = ", ".join(f"{who(s)} on {s['socket']}" for s in subjects) or "the receiving application"
    finding.explanation = (
        "segments arrived while the application held the socket (inside recv/send, or preempted "
        "while holding it) faster than its backlog could take them; the peer retransmits them")
    finding.fixes.append({"kind": "app", "text": (
        f"{names}: keep each recv()/send() call short and give the thread CPU (check CPU "
        "saturation and cgroup throttling of the process); read with one thread per socket")})
    _rmem_fix(finding, window, subjects,
              "the backlog limit grows with the receive buffer (about 2 x rcvbuf + sndbuf/2 + 64 KiB)")


# --- tcp.rcvq_drop ----------------------------------------------------------------------------

def _under_pressure(window: Window) -> bool:
    moved = any(window.deltas.get(name) for name in ("TcpExt.TCPMemoryPressures", "TcpExt.TCPMemoryPressuresChrono"))
    limits, peak = _limit(window, "net.ipv4.tcp_mem"), _peak_pages(window, "tcp")
    return moved or bool(limits and peak is not None and peak >= limits[1])


@evaluator("tcp_rcvq")
def tcp_rcvq(rule: Rule, window: Window) -> Finding | None | str:
    loss = evaluate_rule(replace(rule, drop_counters=("TcpExt.TCPRcvQDrop",), evaluator=None), window)
    if isinstance(loss, Finding):
        _enrich_rcvq(loss, window)
        return loss
    flow = evaluate_rule(replace(rule, drop_counters=("TcpExt.TCPZeroWindowDrop",), evaluator=None,
                                 evidence_counters=("TcpExt.TCPToZeroWindowAdv", "TcpExt.TCPWantZeroWindowAdv",
                                                    "TcpExt.TCPFromZeroWindowAdv")), window)
    if isinstance(flow, Finding):
        flow.severity, flow.benign, flow.explanation = "info", True, ZERO_WINDOW_REASON
        flow.summary = (f"{flow.drops} TCP segments sent into a zero receive window were dropped "
                        f"and will be resent ({flow.rate_per_s:.1f}/s): flow control")
        return flow
    if isinstance(loss, str) and (loss.startswith("counter reset") or isinstance(flow, str)):
        return loss
    return None


def _enrich_rcvq(finding: Finding, window: Window) -> None:
    subjects = _tcp_drop_subjects(finding, window)
    if _under_pressure(window):
        finding.explanation = ("TCP is under memory pressure host-wide (see tcp.memory_pressure): "
                               "receive buffers cannot grow, so segments that fit the window are dropped")
    else:
        finding.explanation = ("the socket's receive memory was used up (queued data plus per-packet "
                               "overhead) before the advertised window was: the application reads more "
                               "slowly than data arrives, or many small segments waste the buffer")
    for subject in subjects:
        fill = (f" ({subject['rx_queue']} bytes unread, rcvbuf {subject['rcvbuf']})"
                if subject.get("rcvbuf") else "")
        finding.fixes.append({"kind": "app", "text": (
            f"{who(subject)} reads {subject['socket']} (peer {subject['peer']}) more slowly than data "
            f"arrives{fill}: read more often or in larger chunks, or spread the work over more threads")})
    if not subjects:
        finding.fixes.append({"kind": "app", "text": (
            "an application reads more slowly than its peers send: find it with `ss -tmn` "
            "(skmem r close to rb, d rising)")})
    _rmem_fix(finding, window, subjects, "lets receive buffers autotune further (bytes; per namespace)")


# --- tcp.memory_pressure ------------------------------------------------------------------------

@evaluator("tcp_memory")
def tcp_memory(rule: Rule, window: Window) -> Finding | None | str:
    deltas = window.deltas
    names = ("TcpExt.TCPMemoryPressures", "TcpExt.TCPMemoryPressuresChrono", "TcpExt.TCPAbortOnMemory")
    known = {n: deltas.get(n) for n in names if deltas.get(n) is not None}
    limits, peak = _limit(window, "net.ipv4.tcp_mem"), _peak_pages(window, "tcp")
    gauge = limits is not None and peak is not None
    if not known and not gauge:
        if any(n in deltas.resets for n in names):
            return "counter reset during the window"
        return "counters not available"
    entered = known.get("TcpExt.TCPMemoryPressures", 0)
    chrono_ms = known.get("TcpExt.TCPMemoryPressuresChrono", 0)
    aborts = known.get("TcpExt.TCPAbortOnMemory", 0)
    level = None
    if gauge:
        level = ("above the hard limit" if peak >= limits[2] else "under pressure" if peak >= limits[1]
                 else "approaching pressure" if peak >= APPROACHING_FRACTION * limits[1] else None)
    pressure = bool(entered or chrono_ms or aborts or level in ("above the hard limit", "under pressure"))
    if not pressure and level is None:
        return None
    rcvq = (deltas.get("TcpExt.TCPRcvQDrop") or 0) if pressure else 0
    drops = aborts + rcvq
    evidence = _counter_evidence(window, rule.evidence_counters)
    finding = new_finding(rule, window, drops, evidence)
    page = _page_size(window)
    if gauge:
        finding.evidence.append({"source": "sockstat", "tcp_mem_pages": peak, "tcp_mem_bytes": _mib(peak, page),
                                 "tcp_mem_limits_pages": list(limits),
                                 "of_pressure_mark": f"{peak / max(limits[1], 1):.0%}"})
    if not pressure:
        finding.severity = "info"
        finding.summary = (f"TCP memory at {peak / max(limits[1], 1):.0%} of the pressure mark "
                           f"({peak} of {limits[1]} pages): no pressure yet")
    elif level == "above the hard limit" or aborts:
        finding.severity = "critical"
    elif finding.severity == "info":
        finding.severity = "warning"  # pressure shrinks every socket's buffers even without drops
    if pressure:
        parts = [f"{entered} {'entry' if entered == 1 else 'entries'} into pressure" if entered else "",
                 f"{chrono_ms / 1000:.1f} s under pressure" if chrono_ms else "",
                 f"{aborts} connections aborted" if aborts else "",
                 f"{rcvq} segments dropped" if rcvq else "",
                 f"memory {level} ({peak} pages, limits {'/'.join(map(str, limits))})" if level else ""]
        finding.summary = "TCP memory pressure: " + ", ".join(p for p in parts if p) + f" ({finding.rate_per_s:.1f} lost/s)"
        finding.explanation = ("above tcp_mem[1] TCP shrinks every socket's buffers host-wide; above "
                               "tcp_mem[2] allocations fail: segments are dropped (PROTO_MEM) and "
                               "orphaned connections aborted ('TCP: out of memory' in dmesg)")
    _memory_holders(finding, window)
    if limits is not None and pressure:
        proposed = _scaled_limits(limits, peak)
        finding.fixes.append(sysctl_fix(window, "net.ipv4.tcp_mem", limits, proposed, (
            f"pages of {page} bytes: the high mark lets TCP buffers take up to {_mib(proposed[2], page)} "
            "of RAM - check MemTotal first")))
    return finding


def _memory_holders(finding: Finding, window: Window) -> None:
    """The sockets holding the most memory (unread receive data, unsent write queue)."""
    after = window.after.data("tcp_socket_memory") or []
    holders = sorted((s for s in after if s.memory > 0), key=lambda s: -s.memory)[:MAX_SUBJECTS]
    for sock in holders:
        subject = {"socket": sock.endpoint, "peer": sock.peer, **owner_fields(window, sock.inode),
                   "memory_bytes": sock.memory, "rx_queue": sock.rqueue}
        finding.subjects.append(subject)
        finding.evidence.append({"source": "sock_diag", "socket": sock.endpoint, "peer": sock.peer,
                                 "rmem_queued": sock.rmem_alloc, "write_queue": sock.wmem_queued})
    if holders and finding.severity != "info":
        top = finding.subjects[0]
        finding.fixes.append({"kind": "app", "text": (
            f"{who(top)} holds {top['memory_bytes']} bytes on {top['socket']} (peer {top['peer']}): "
            "sockets with large unread or unsent queues are what fills tcp_mem - make their "
            "readers keep up, or close idle connections")})


# --- tcp.paws_drop -------------------------------------------------------------------------

@enricher("tcp_paws")
def tcp_paws(finding: Finding, window: Window) -> None:
    subjects = _tcp_drop_subjects(finding, window)
    active = window.deltas.get("TcpExt.PAWSActive") or 0
    established = window.deltas.get("TcpExt.PAWSEstab") or 0
    if finding.benign:
        pass  # keep the rule's explanation of why a few are normal
    elif active >= established:
        finding.explanation = (
            f"{active} SYN-ACKs to this host's own connection attempts carried a timestamp older than "
            "an earlier connection's to the same peer: the peer (or a NAT in front of several peers) "
            "reuses the tuple with timestamps that do not increase")
    else:
        finding.explanation = (
            f"{established} segments on established connections carried an older timestamp than the "
            "last one seen: a middlebox rewrites or reorders timestamps, or several hosts share one "
            "address (NAT) and the same connection tuple")
    peers = sorted({s["peer"].rsplit(":", 1)[0] for s in subjects})
    target = f" (peers {', '.join(peers)})" if peers else ""
    finding.fixes.append({"kind": "config", "text": (
        f"find the NAT or middlebox in front of the peers{target} that rewrites or strips TCP "
        "timestamps, or that maps several clients to one address; compare TSval in `tcpdump -v`")})
    timestamps = sysctl(window, "net.ipv4.tcp_timestamps")
    if timestamps:
        finding.fixes.append({"kind": "config", "text": (
            f"last resort: net.ipv4.tcp_timestamps={timestamps} -> 0 on this host disables PAWS, but "
            "also RTT measurement and protection against wrapped sequence numbers on fast links")})


# --- udp.memory ----------------------------------------------------------------------------

def _udp_holders(window: Window) -> list[dict[str, Any]]:
    """UDP sockets with the most unread data: sock_diag skmem, else /proc/net/udp rx_queue."""
    diag = window.after.data("udp_socket_memory")
    if diag is not None:
        rows = [(s.rmem_alloc or 0, s) for s in diag]
    else:
        rows = [(s.rx_queue, s) for s in window.after.data("udp_sockets") or []]
    holders = []
    for queued, sock in sorted(rows, key=lambda r: -r[0])[:MAX_SUBJECTS]:
        if queued <= 0:
            break
        subject = {"socket": sock.endpoint, **owner_fields(window, sock.inode), "rx_queue": queued}
        if getattr(sock, "rcvbuf", None):
            subject["rcvbuf"] = sock.rcvbuf
        holders.append(subject)
    return holders


@enricher("udp_memory")
def udp_memory(finding: Finding, window: Window) -> None:
    limits, peak = _limit(window, "net.ipv4.udp_mem"), _peak_pages(window, "udp")
    page = _page_size(window)
    if limits is not None and peak is not None:
        finding.evidence.append({"source": "sockstat", "udp_mem_pages": peak, "udp_mem_bytes": _mib(peak, page),
                                 "udp_mem_limits_pages": list(limits),
                                 "of_hard_limit": f"{peak / max(limits[2], 1):.0%}"})
    holders = _udp_holders(window)
    finding.subjects.extend(holders)
    for subject in holders:
        finding.evidence.append({"source": "sockets", "socket": subject["socket"], "rx_queue": subject["rx_queue"]})
    finding.explanation = ("all UDP sockets together hold more memory than udp_mem allows (host-wide, "
                           "pages); any socket above udp_rmem_min then drops, even with room in its own buffer")
    if holders:
        top = holders[0]
        finding.fixes.append({"kind": "app", "text": (
            f"{who(top)} leaves {top['rx_queue']} bytes unread on {top['socket']}: sockets nobody reads "
            "fill udp_mem for everyone - fix or close them first")})
    if limits is not None:
        proposed = _scaled_limits(limits, peak)
        finding.fixes.append(sysctl_fix(window, "net.ipv4.udp_mem", limits, proposed, (
            f"pages of {page} bytes: up to {_mib(proposed[2], page)} of RAM for UDP buffers - check "
            "MemTotal first; inside a container the cgroup's memory limit can also cause these drops")))


# --- udp.sndbuf ----------------------------------------------------------------------------

@enricher("udp_sndbuf")
def udp_sndbuf(finding: Finding, window: Window) -> None:
    diag = window.after.data("udp_socket_memory") or []
    busy = sorted((s for s in diag if s.wmem_alloc and s.sndbuf),
                  key=lambda s: -(s.wmem_alloc or 0) / max(s.sndbuf or 1, 1))[:MAX_SUBJECTS]
    for sock in busy:
        finding.subjects.append({"socket": sock.endpoint, **owner_fields(window, sock.inode),
                                 "send_queue": sock.wmem_alloc, "sndbuf": sock.sndbuf})
        finding.evidence.append({"source": "sock_diag", "socket": sock.endpoint,
                                 "wmem_alloc": sock.wmem_alloc, "sndbuf": sock.sndbuf})
    sent = (window.deltas.get("Udp.OutDatagrams") or 0) + (window.deltas.get("Udp6.OutDatagrams") or 0)
    if sent:
        finding.evidence.append({"source": "ratio", "failed_per_sent": f"{finding.drops / (sent + finding.drops):.2%}",
                                 "datagrams_sent": sent})
    finding.explanation = ("a send failed for lack of send buffer (EAGAIN on a non-blocking socket) "
                           "or the device queue refused the datagram (ENOBUFS, silently dropped unless "
                           "the socket set IP_RECVERR): check `tc -s qdisc` (qdisc.drop) too")
    default, maximum = sysctl(window, "net.core.wmem_default"), sysctl(window, "net.core.wmem_max")
    if isinstance(default, int):
        proposed = next_power_of_two(2 * default)
        finding.fixes.append(sysctl_fix(window, "net.core.wmem_default", default, proposed,
                                        "applies to sockets created afterwards: restart the sender"))
        if isinstance(maximum, int) and maximum < proposed:
            finding.fixes.append(sysctl_fix(window, "net.core.wmem_max", maximum, proposed,
                                            "caps what an application may ask for with SO_SNDBUF"))
    names = ", ".join(who(s) for s in finding.subjects) or "the sending application"
    finding.fixes.append({"kind": "app", "text": (
        f"{names} sends faster than the device drains: pace the sender or batch (sendmmsg), "
        "and handle EAGAIN/ENOBUFS by retrying rather than dropping")})


# --- socket.filter_drop ----------------------------------------------------------------------

UDP_TABLES = ("Udp", "Udp6")


@evaluator("socket_filter")
def socket_filter(rule: Rule, window: Window) -> Finding | None | str:
    deltas = window.deltas
    inferred: dict[str, int] = {}
    for table in UDP_TABLES:
        in_errors = deltas.get(f"{table}.InErrors")
        if in_errors is None:
            continue
        explained = sum(deltas.get(f"{table}.{name}") or 0 for name in ("RcvbufErrors", "MemErrors", "InCsumErrors"))
        inferred[table] = max(in_errors - explained, 0)
    if not inferred:
        if any(c.endswith(".InErrors") and c.startswith("Udp") for c in deltas.resets):
            return "counter reset during the window"
        return "counters not available"
    drops = sum(inferred.values())
    if drops <= 0:
        return None
    evidence = [{"source": "counters", "counter": f"{t}.InErrors", "delta": deltas.get(f"{t}.InErrors"),
                 "rate_per_s": round((deltas.get(f"{t}.InErrors") or 0) / (window.seconds or 1.0), 3)}
                for t in inferred if inferred[t]]
    evidence += _counter_evidence(window, rule.evidence_counters)
    evidence.append({"source": "inferred", "drops": drops,
                     "formula": "InErrors - RcvbufErrors - MemErrors - InCsumErrors",
                     "note": "no counter names socket-filter drops; a trace with reason SOCKET_FILTER confirms them"})
    finding = new_finding(rule, window, drops, evidence)
    _filter_subjects(finding, window)
    return finding


def _filter_subjects(finding: Finding, window: Window) -> None:
    sockets = {s.inode: s for s in window.after.data("udp_sockets") or []}
    moved = sorted(((v, int(k.split(".")[1])) for k, v in window.deltas.values.items()
                    if k.startswith("udpsock.") and k.endswith(".drops") and v), reverse=True)
    rcvbuf_moved = any(window.deltas.get(f"{t}.RcvbufErrors") or window.deltas.get(f"{t}.MemErrors")
                       for t in UDP_TABLES)
    named = 0
    for drops, inode in moved[:MAX_SUBJECTS]:
        sock = sockets.get(inode)
        if sock is None:
            continue
        subject = {"socket": sock.endpoint, **owner_fields(window, inode), "drops": drops, "rx_queue": sock.rx_queue}
        if rcvbuf_moved:
            subject["may_include_buffer_drops"] = True
        finding.subjects.append(subject)
        named += drops
    if finding.subjects:
        finding.evidence.append({"source": "udp_sockets", "per_socket_drops": named, "inferred_drops": finding.drops})
        finding.explanation = (
            f"datagrams were rejected after they reached the socket: {named} drops on the named socket(s) "
            "without a full buffer or memory limit; the usual cause is a BPF filter the application "
            "attached (SO_ATTACH_FILTER / SO_ATTACH_BPF)")
        for subject in finding.subjects:
            finding.fixes.append({"kind": "app", "text": (
                f"{who(subject)} has a socket filter on {subject['socket']} that rejects what it receives: "
                "check the filter the application attaches (or detach it, SO_DETACH_FILTER) if these "
                "datagrams are wanted; `bpftool prog show` lists eBPF socket filters")})
    else:
        finding.explanation = (
            "no socket's drop counter rose: the InErrors not explained by buffer, memory or checksum "
            "errors may also be malformed datagrams (bad length) or IPsec policy drops")
        finding.fixes.append({"kind": "app", "text": (
            "find the receiving socket with `ss -uam` (skmem d rising) and check the BPF filter its "
            "application attaches")})
