"""Per-rule enrichment: name the affected sockets, processes, CPUs or devices and derive
fixes from the measured numbers (never a fixed magic value).

Each enricher takes the finding the engine built from counters and the window, and adds
subjects, evidence, fixes and an explanation. They only read the window.
"""

from __future__ import annotations

from typing import Any, Callable

from ..model import Finding
from ..sources.process_sockets import SocketOwners
from ..sources.sysctls import GLOBAL_KEYS
from ..window import ListenerStats, Window

# Linux clamps somaxconn to what fits; 65535 is the largest value that was ever honoured
# by every kernel still in service (sk_max_ack_backlog was u16 before 4.x).
SOMAXCONN_CEILING = 65535
SUSTAINED_FULL_FRACTION = 0.9

ENRICHERS: dict[str, Callable[[Finding, Window], None]] = {}


def enricher(name: str):
    def register(func: Callable[[Finding, Window], None]):
        ENRICHERS[name] = func
        return func
    return register


def next_power_of_two(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def sysctl(window: Window, key: str) -> Any:
    values = window.after.data("sysctls") or {}
    return values.get(key)


def owner_fields(window: Window, inode: int) -> dict[str, Any]:
    owners: SocketOwners | None = window.after.data("process_sockets")
    owner = owners.owner(inode) if owners else None
    return {"pid": owner[0] if owner else None, "process": owner[1] if owner else None}


def who(subject: dict[str, Any]) -> str:
    if subject.get("pid") is None:
        return f"the process listening on {subject['socket']} (owner unknown: run as root)"
    return f"pid {subject['pid']} ({subject['process']})"


def sysctl_fix(window: Window, key: str, current: Any, proposed: Any, note: str) -> dict[str, Any]:
    scope = "global: changes the whole host" if key in GLOBAL_KEYS else "per network namespace"
    return {"kind": "sysctl", "key": key, "current": current, "proposed": proposed,
            "netns": window.after.netns, "scope": scope, "note": note}


# --- tcp.listen_overflow ------------------------------------------------------------------

def capped_by(backlog: int | None, somaxconn: int | None) -> str:
    """Which limit set the backlog in force: min(listen() argument, somaxconn at listen time)."""
    if backlog is None or somaxconn is None:
        return "unknown"
    if backlog == somaxconn:
        return "somaxconn"
    if backlog < somaxconn:
        return "listen() backlog"
    return "unknown"  # somaxconn was lowered after the socket started listening


def _listen_candidates(window: Window) -> tuple[list[ListenerStats], bool]:
    """Sockets seen full; else the fullest ones, marked as suspected."""
    stats = list(window.listeners.values())
    full = [s for s in stats if s.full_samples > 0]
    if full:
        return sorted(full, key=lambda s: -s.full_samples), False

    def fill(s: ListenerStats) -> float:
        backlog = s.listener.backlog
        return s.peak_queue / backlog if backlog else 0.0
    busy = [s for s in stats if s.peak_queue > 0]
    return sorted(busy, key=fill, reverse=True)[:3], True


@enricher("listen_queue")
def listen_queue(finding: Finding, window: Window) -> None:
    somaxconn = sysctl(window, "net.core.somaxconn")
    candidates, suspected = _listen_candidates(window)
    for stats in candidates:
        listener = stats.listener
        subject = {"socket": listener.endpoint, **owner_fields(window, listener.inode),
                   "backlog": listener.backlog, "somaxconn": somaxconn,
                   "capped_by": capped_by(listener.backlog, somaxconn),
                   "accept_queue": stats.peak_queue, "full_samples": stats.full_samples,
                   "samples": stats.samples}
        if suspected:
            subject["suspected"] = True
        finding.subjects.append(subject)
        finding.evidence.append({"source": "sock_diag", "socket": listener.endpoint,
                                 "accept_queue_peak": stats.peak_queue, "backlog": listener.backlog,
                                 "full_in_samples": f"{stats.full_samples}/{stats.samples}"})
    if not finding.subjects:
        note = ("no listening socket was seen with a non-empty accept queue during the window "
                f"(listener sampling: {window.listener_sampling}); the overflowing listener may have "
                "closed, or overflowed between samples")
        finding.explanation = note
    sustained = [s for s in candidates if s.samples and s.full_at_end
                 and s.full_samples / s.samples >= SUSTAINED_FULL_FRACTION]
    finding.fixes.extend(_listen_fixes(finding, window, somaxconn, sustained))
    if sustained:
        finding.explanation = (
            "sustained overload: the accept queue stayed full for the whole window, so connections "
            "arrive faster than the application accepts them; a bigger queue only delays the drops")
    elif finding.subjects and not suspected:
        finding.explanation = (
            "bursts: the accept queue filled up and drained again during the window; a larger "
            "backlog absorbs bursts of this size")


def _listen_fixes(finding: Finding, window: Window, somaxconn: int | None,
                  sustained: list[ListenerStats]) -> list[dict[str, Any]]:
    backlogs = [s["backlog"] for s in finding.subjects if s.get("backlog")]
    largest = max(backlogs) if backlogs else (somaxconn or 128)
    # Room for what was dropped on top of what already fitted, at least twice the current size.
    proposed = min(next_power_of_two(max(2 * largest, largest + finding.drops)), SOMAXCONN_CEILING)
    fixes: list[dict[str, Any]] = []
    capped_by_sysctl = [s for s in finding.subjects if s["capped_by"] == "somaxconn"]
    capped_by_app = [s for s in finding.subjects if s["capped_by"] == "listen() backlog"]
    # Also when only the app's backlog caps today: the kernel clamps a larger listen() argument
    # to somaxconn, so the app fix below needs somaxconn >= proposed too.
    if somaxconn is not None and somaxconn < proposed:
        restart = ", ".join(who(s) for s in capped_by_sysctl + capped_by_app) or "the listening application"
        fixes.append(sysctl_fix(window, "net.core.somaxconn", somaxconn, proposed,
                                f"applies when {restart} calls listen() again: restart or reload it"))
    for subject in capped_by_sysctl:
        fixes.append({"kind": "app", "text": (
            f"{who(subject)} listens on {subject['socket']} with a backlog of {subject['backlog']} in force, "
            f"equal to net.core.somaxconn: after raising somaxconn, restart it and make sure it asks "
            f"listen() for at least {proposed} (many servers default to 128 or 511)")})
    for subject in capped_by_app:
        fixes.append({"kind": "app", "text": (
            f"{who(subject)} asked listen() for a backlog of {subject['backlog']}, below net.core.somaxconn "
            f"({subject['somaxconn']}): raise the application's own backlog setting to {proposed} "
            f"(e.g. nginx `listen ... backlog={proposed}`, gunicorn --backlog, Java ServerSocket backlog)")})
    for stats in sustained:
        fixes.append({"kind": "app", "text": (
            f"the application on {stats.listener.endpoint} accepts more slowly than connections arrive: "
            "add accept workers/threads or capacity; a larger queue alone will not stop the drops")})
    return fixes


# --- tcp.syn_queue_full -------------------------------------------------------------------

@enricher("syn_queue")
def syn_queue(finding: Finding, window: Window) -> None:
    current = sysctl(window, "net.ipv4.tcp_max_syn_backlog")
    if isinstance(current, int):
        proposed = next_power_of_two(max(2 * current, current + finding.drops))
        finding.fixes.append(sysctl_fix(window, "net.ipv4.tcp_max_syn_backlog", current, proposed,
                                        "also raise the listen backlog: on current kernels the SYN "
                                        "queue is capped by the backlog in force as well"))
    cookies = sysctl(window, "net.ipv4.tcp_syncookies")
    if cookies == 0:
        finding.fixes.append(sysctl_fix(window, "net.ipv4.tcp_syncookies", 0, 1,
                                        "with SYN cookies a full SYN queue answers with a cookie instead of dropping"))
    finding.explanation = ("SYN-queue drops carry no kernel drop reason: a packet trace will not show "
                           "them, only this counter does")


# --- udp.rcvbuf_full ----------------------------------------------------------------------

@enricher("udp_sockets")
def udp_sockets(finding: Finding, window: Window) -> None:
    sockets = {s.inode: s for s in (window.after.data("udp_sockets") or [])}
    per_socket = []
    for name, value in window.deltas.values.items():
        if name.startswith("udpsock.") and value:
            inode = int(name.split(".")[1])
            if inode in sockets:
                per_socket.append((value, sockets[inode]))
    for drops, sock in sorted(per_socket, key=lambda item: -item[0])[:5]:
        finding.subjects.append({"socket": sock.endpoint, **owner_fields(window, sock.inode),
                                 "drops": drops, "rx_queue": sock.rx_queue})
    default = sysctl(window, "net.core.rmem_default")
    maximum = sysctl(window, "net.core.rmem_max")
    if isinstance(default, int):
        proposed = next_power_of_two(2 * default)
        finding.fixes.append(sysctl_fix(window, "net.core.rmem_default", default, proposed,
                                        "applies to sockets created afterwards: restart the receiving application"))
        if isinstance(maximum, int) and maximum < proposed:
            finding.fixes.append(sysctl_fix(window, "net.core.rmem_max", maximum, proposed,
                                            "caps what an application may ask for with SO_RCVBUF"))
    names = ", ".join(who(s) for s in finding.subjects) or "the receiving application"
    finding.fixes.append({"kind": "app", "text": (
        f"{names} reads datagrams more slowly than they arrive: set SO_RCVBUF, read in batches "
        "(recvmmsg), or spread the load over more sockets (SO_REUSEPORT)")})


# --- cpu.backlog_drop ---------------------------------------------------------------------

@enricher("softnet")
def softnet(finding: Finding, window: Window) -> None:
    for name, value in sorted(window.deltas.values.items()):
        if name.startswith("softnet.cpu") and name.endswith(".dropped") and value:
            finding.subjects.append({"cpu": int(name.split(".")[1][3:]), "drops": value})
    current = sysctl(window, "net.core.netdev_max_backlog")
    if isinstance(current, int):
        finding.fixes.append(sysctl_fix(window, "net.core.netdev_max_backlog", current,
                                        next_power_of_two(2 * current),
                                        "global: changes the whole host, not only this namespace"))
    if len(finding.subjects) == 1:
        finding.fixes.append({"kind": "config", "text": (
            f"all drops are on CPU {finding.subjects[0]['cpu']}: spread receive processing with RSS "
            "(more NIC queues) or RPS (/sys/class/net/<dev>/queues/rx-*/rps_cpus)")})


# --- nic.rx_missed ------------------------------------------------------------------------

@enricher("nic")
def nic(finding: Finding, window: Window) -> None:
    per_device: dict[str, dict[str, int]] = {}
    for name, value in window.deltas.values.items():
        if not name.startswith("link.") or not value:
            continue
        device, _, counter = name[len("link."):].rpartition(".")  # VLAN devices: eth0.100
        if device and counter in ("rx_missed_errors", "rx_fifo_errors", "rx_over_errors"):
            per_device.setdefault(device, {})[counter] = value
    for device, counters in sorted(per_device.items()):
        finding.subjects.append({"interface": device, **counters})
        finding.fixes.append({"kind": "command", "text": (
            f"ethtool -g {device}  # then raise the RX ring to its maximum: ethtool -G {device} rx <max>; "
            "also check IRQ/RSS spread (ethtool -l, /proc/interrupts)")})
