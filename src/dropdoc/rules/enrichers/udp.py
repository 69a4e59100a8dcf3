"""UDP sockets whose receive buffer overflowed."""

from __future__ import annotations

from typing import Any

from ...model import Finding
from ...window import Window
from . import enricher
from .bursts import find_bursts
from .common import next_power_of_two, owner_fields, sysctl, sysctl_fix, who

SUSTAINED_READ_FRACTION = 0.5

# --- udp.rcvbuf_full ----------------------------------------------------------------------

@enricher("udp_sockets")
def udp_sockets(finding: Finding, window: Window) -> None:
    sockets = {s.inode: s for s in (window.after.data("udp_sockets") or [])}
    in_force = {s.inode: s.rcvbuf for s in (window.after.data("udp_socket_memory") or []) if s.rcvbuf}
    per_socket = []
    for name, value in window.deltas.values.items():
        if name.startswith("udpsock.") and value:
            inode = int(name.split(".")[1])
            if inode in sockets:
                per_socket.append((value, sockets[inode]))
    for drops, sock in sorted(per_socket, key=lambda item: -item[0])[:5]:
        subject = {"socket": sock.endpoint, **owner_fields(window, sock.inode),
                   "drops": drops, "rx_queue": sock.rx_queue}
        if sock.inode in in_force:
            subject["rcvbuf"] = in_force[sock.inode]  # sock_diag skmem rb: the buffer in force
        finding.subjects.append(subject)
    default = sysctl(window, "net.core.rmem_default")
    maximum = sysctl(window, "net.core.rmem_max")
    proposed = next_power_of_two(2 * default) if isinstance(default, int) else None
    own = proposed is not None and _all_set_their_own(finding, default)
    # A socket at twice rmem_max asked SO_RCVBUF for at least rmem_max: the cap is what to raise.
    capped = own and isinstance(maximum, int) and any(s.get("rcvbuf") == 2 * maximum for s in finding.subjects)
    if proposed is not None and not own:
        finding.fixes.append(sysctl_fix(window, "net.core.rmem_default", default, proposed,
                                        "applies to sockets created afterwards: restart the receiving application"))
    if proposed is not None and isinstance(maximum, int) and ((not own and maximum < proposed) or capped):
        finding.fixes.append(sysctl_fix(window, "net.core.rmem_max", maximum,
                                        max(proposed, next_power_of_two(2 * maximum)) if capped else proposed,
                                        "caps what an application may ask for with SO_RCVBUF"
                                        + ("; the socket's buffer is at this cap: restart the application"
                                           if capped else "")))
    names = ", ".join(who(s) for s in finding.subjects) or "the receiving application"
    finding.fixes.append({"kind": "app", "setting": "reader speed", "text": (
        f"{names} reads datagrams more slowly than they arrive: set SO_RCVBUF, read in batches "
        "(recvmmsg), or spread the load over more sockets (SO_REUSEPORT)")})
    finding.fixes.extend(_own_rcvbuf_fixes(finding, default, proposed))
    finding.explanation = _burst_or_sustained(finding, window)
    finding.evidence.extend(_load_evidence(finding, window, default, maximum))


def _all_set_their_own(finding: Finding, default: int) -> bool:
    """Every dropping socket has a buffer in force other than rmem_default: each set it with
    SO_RCVBUF, so a new rmem_default (for sockets created afterwards) reaches none of them -
    proposing it would change the host for nothing (the app fixes below say what does)."""
    known = [s.get("rcvbuf") for s in finding.subjects]
    return bool(known) and all(isinstance(r, int) and r != default for r in known)


def _own_rcvbuf_fixes(finding: Finding, default: Any, proposed: int | None) -> list[dict[str, Any]]:
    """A socket whose buffer in force is not rmem_default set it itself with SO_RCVBUF
    (the kernel doubles the value): rmem_default does not reach it, only the app can."""
    fixes = []
    for subject in finding.subjects:
        rcvbuf = subject.get("rcvbuf")
        if not rcvbuf or not isinstance(default, int) or rcvbuf == default:
            continue
        asked = rcvbuf // 2
        wanted = next_power_of_two(max(2 * asked, proposed or 0, 2 * rcvbuf))
        fixes.append({"kind": "app", "setting": "SO_RCVBUF", "socket": subject["socket"],
                      "current": asked, "proposed": wanted, "text": (
            f"{who(subject)} sets SO_RCVBUF={asked} on {subject['socket']} ({rcvbuf} bytes in force: the "
            f"kernel doubles it), so net.core.rmem_default ({default}) does not apply to it: make it ask for "
            f"at least {wanted} (capped by net.core.rmem_max) and restart it")})
    return fixes


def _burst_or_sustained(finding: Finding, window: Window) -> str | None:
    """Udp InDatagrams counts datagrams the applications read (udp_recvmsg); what arrived
    is that plus what the buffers dropped. Reading much slower than the arrivals is
    sustained overload: a bigger buffer only delays the drops."""
    seconds = window.seconds or 1.0
    read = sum(window.deltas.get(f"{t}.InDatagrams") or 0 for t in ("Udp", "Udp6"))
    arrived = read + finding.drops
    if not arrived:
        return None
    read_rate, arrival_rate = read / seconds, arrived / seconds
    capacity = _reader_capacity(window)
    if capacity is not None and capacity >= arrival_rate:
        return (f"bursts: the receivers read {capacity:.1f}/s while their buffers were full, faster than the "
                f"{arrival_rate:.1f}/s that arrived on average, but bursts overflow the buffer; a larger buffer "
                "absorbs bursts of this size")
    if read_rate < SUSTAINED_READ_FRACTION * arrival_rate:
        return (f"sustained: the receivers read {read_rate:.1f}/s while {arrival_rate:.1f}/s arrived; a bigger "
                "buffer only delays the drops - the reader must get faster (or the senders slower)")
    return (f"bursts: on average the receivers keep up ({read_rate:.1f}/s read of {arrival_rate:.1f}/s arrived) "
            "but bursts overflow the buffer; a larger buffer absorbs bursts of this size")


def _reader_capacity(window: Window) -> float | None:
    """Datagrams/s read during the worst burst of drops (from the counters sampled tick by
    tick): the readers' speed while busy. A burst that heavy drops made look like slow
    reading on average (most datagrams never reached the reader) shows here as a reader
    faster than the average arrivals. None: not sampled."""
    found = find_bursts(window.intervals, DROPPED, {"read": READ})
    if found is None or found.worst is None or found.worst.seconds <= 0:
        return None
    return found.worst.companions["read"] / found.worst.seconds


# --- the load the buffer met (dropdoc fix replays it in the simulator) --------------------

READ = ("Udp.InDatagrams", "Udp6.InDatagrams")
DROPPED = ("Udp.RcvbufErrors", "Udp6.RcvbufErrors")
# Ethernet + IPv4 + UDP headers in an interface's rx_bytes (IPv6: 20 more).
HEADERS_V4, HEADERS_V6 = 14 + 20 + 8, 14 + 40 + 8
# An interface whose received packets are within this range of the datagrams that
# arrived mostly carried them: its average packet is the datagrams' size.
DOMINANT = (0.9, 1.5)


def datagram_size(deltas: dict[str, int | None], arrived: int, v6_share: float = 0.0) -> dict[str, Any] | None:
    """The average datagram payload from the interface that received them (rx_bytes /
    rx_packets over the window, minus the headers); None when no interface carried
    mostly these datagrams (other traffic would make the average meaningless)."""
    if arrived <= 0:
        return None
    best = None
    for name, packets in deltas.items():
        if not (name.startswith("dev.") and name.endswith(".rx_packets")) or not packets:
            continue
        interface = name[len("dev."):-len(".rx_packets")]
        received = deltas.get(f"dev.{interface}.rx_bytes")
        if received is None or not DOMINANT[0] * arrived <= packets <= DOMINANT[1] * arrived:
            continue
        if best is None or abs(packets - arrived) < abs(best[1] - arrived):
            best = (interface, packets, received)
    if best is None:
        return None
    interface, packets, received = best
    headers = HEADERS_V6 if v6_share > 0.5 else HEADERS_V4
    return {"source": "netdev", "interface": interface, "rx_packets": packets, "rx_bytes": received,
            "datagram_bytes": max(round(received / packets) - headers, 0),
            "note": f"average datagram payload: {interface} received {packets} packets of "
                    f"{received / packets:.0f} bytes in the window, minus {headers} bytes of headers"}


def _load_evidence(finding: Finding, window: Window, default: Any, maximum: Any) -> list[dict[str, Any]]:
    """Datagrams read and arrived, their size, the burst (from the counters sampled tick by
    tick) and the buffer limits: what `dropdoc fix` needs to replay the load."""
    deltas = window.deltas.values
    read = sum(deltas.get(c) or 0 for c in READ)
    v6 = (deltas.get("Udp6.InDatagrams") or 0) + (deltas.get("Udp6.RcvbufErrors") or 0)
    arrived = read + finding.drops
    load: dict[str, Any] = {"source": "window", "datagrams_read": read, "datagrams_arrived": arrived,
                            "rmem_default": default, "rmem_max": maximum}
    found = find_bursts(window.intervals, DROPPED, {"read": READ})
    if found is not None:
        load.update(found.fields())
        if found.worst is not None:
            load["burst_read"] = found.worst.companions["read"]
    out = [load]
    size = datagram_size(deltas, arrived, v6 / arrived if arrived else 0.0)
    if size is not None:
        out.append(size)
    return out
