"""TCP listeners: accept-queue overflow and SYN-queue drops."""

from __future__ import annotations

from typing import Any

from ...model import Finding
from ...sources.proc_sockets import TCP_LISTEN
from ...sources.socket_memory import drops_in_window
from ...sources.tcp_listeners import Listener
from ...sources.tcp_syn_recv import HalfOpen, for_listener
from ...window import ListenerStats, Window
from . import enricher
from .common import next_power_of_two, owner_fields, sysctl, sysctl_fix, who

# Linux clamps somaxconn to what fits; 65535 is the largest value that was ever honoured
# by every kernel still in service (sk_max_ack_backlog was u16 before 4.x).
SOMAXCONN_CEILING = 65535
SUSTAINED_FULL_FRACTION = 0.9

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
    somaxconn = sysctl(window, "net.core.somaxconn")
    subjects = _syn_queue_subjects(finding, window, somaxconn)
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
    finding.fixes.extend(_syn_backlog_fixes(finding, window, somaxconn, subjects))
    explanation = ("SYN-queue drops carry no kernel drop reason: a packet trace will not show "
                   "them, only this counter does")
    stuck = [s for s in subjects if s["syn_queue"] and s["synack_retransmitted"] * 2 >= s["syn_queue"]]
    if stuck:
        s = stuck[0]
        explanation += (
            f". {s['synack_retransmitted']} of the {s['syn_queue']} half-open connections on {s['socket']} "
            f"(from {s['syn_peers']} address(es)) had their SYN-ACK sent again: the clients' final ACKs "
            "do not arrive (lossy path, a firewall dropping them, or a SYN flood), so the queue stays "
            "full; a bigger queue only holds more of them - SYN cookies do not need the queue")
    finding.explanation = explanation


def _listener_table(window: Window) -> dict[int, tuple[Listener, ListenerStats | None]]:
    table: dict[int, tuple[Listener, ListenerStats | None]] = {
        inode: (stats.listener, stats) for inode, stats in window.listeners.items()}
    for listener in window.after.data("tcp_listeners") or []:
        table.setdefault(listener.inode, (listener, None))
    return table


def _half_open_of(listener: Listener, entries: list[HalfOpen], others: list[Listener]) -> list[HalfOpen]:
    """Request sockets of this listener: same port, and its address unless it is a wildcard.
    A [::] listener takes IPv4 requests only when no IPv4 listener has the port."""
    found = []
    for entry in for_listener(entries, listener.address, listener.port):
        if entry.family != listener.family and any(o.family == entry.family and o.port == listener.port
                                                   for o in others if o is not listener):
            continue
        found.append(entry)
    return found


def _syn_queue_subjects(finding: Finding, window: Window, somaxconn: int | None) -> list[dict[str, Any]]:
    """Listeners whose listen-path drop counter (sk_drops) rose or that hold half-open
    connections at the end of the window, most drops first."""
    table = _listener_table(window)
    listen_drops = {sock.inode: drops for drops, sock, _cumulative in drops_in_window(
        window.before.data("tcp_socket_memory"), window.after.data("tcp_socket_memory"), state=TCP_LISTEN)}
    entries = window.after.data("tcp_syn_recv") or []
    everyone = [listener for listener, _ in table.values()]
    rows = []
    for inode, (listener, stats) in table.items():
        half_open = _half_open_of(listener, entries, everyone)
        count = sum(h.count for h in half_open)
        drops = listen_drops.get(inode, 0)
        if not drops and not count:
            continue
        rows.append((drops, count, listener, stats, half_open))
    rows.sort(key=lambda r: (-r[0], -r[1], r[2].port))
    subjects = []
    for drops, count, listener, stats, half_open in rows[:3]:
        retransmitted = sum(h.retransmitted for h in half_open)
        peers = sum(h.peer_count for h in half_open)
        subject = {"socket": listener.endpoint, **owner_fields(window, listener.inode),
                   "backlog": listener.backlog, "somaxconn": somaxconn,
                   "capped_by": capped_by(listener.backlog, somaxconn),
                   "accept_queue": stats.peak_queue if stats else listener.accept_queue,
                   "full_samples": stats.full_samples if stats else 0, "samples": stats.samples if stats else 0,
                   "syn_queue": count, "listen_drops": drops, "synack_retransmitted": retransmitted,
                   "syn_peers": peers}
        subjects.append(subject)
        finding.evidence.append({
            "source": "sock_diag", "socket": listener.endpoint, "half_open": count, "backlog": listener.backlog,
            "syn_queue_full": bool(listener.backlog is not None and count > listener.backlog),
            "listen_drops": drops, "synack_retransmitted": retransmitted,
            "max_synack_retrans": max((h.max_retrans for h in half_open), default=0), "peers": peers})
    finding.subjects.extend(subjects)
    return subjects


def _syn_backlog_fixes(finding: Finding, window: Window, somaxconn: int | None,
                       subjects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SYN queue is full at the backlog in force (min(listen() argument, somaxconn)):
    raising it is the fix tcp_max_syn_backlog alone is not."""
    known = [s for s in subjects if s.get("backlog")]
    if not known:
        return [{"kind": "app", "text": (
            "raise the listen backlog of the listener that drops (`ss -lnt`: Send-Q is the backlog in "
            "force): with SYN cookies off it is also the size of the SYN queue")}]
    largest = max(s["backlog"] for s in known)
    proposed = min(next_power_of_two(max(2 * largest, largest + finding.drops)), SOMAXCONN_CEILING)
    fixes: list[dict[str, Any]] = []
    if somaxconn is not None and somaxconn < proposed:
        restart = ", ".join(who(s) for s in known)
        fixes.append(sysctl_fix(window, "net.core.somaxconn", somaxconn, proposed, (
            f"the SYN queue is capped by the listen backlog, itself capped by somaxconn; applies when "
            f"{restart} calls listen() again: restart or reload it")))
    for subject in known:
        cap = {"somaxconn": " (capped by net.core.somaxconn)",
               "listen() backlog": " (its own listen() argument)"}.get(subject["capped_by"], "")
        fixes.append({"kind": "app", "text": (
            f"{who(subject)} listens on {subject['socket']} with a backlog of {subject['backlog']} in force"
            f"{cap}, which is also the most half-open connections its SYN queue holds "
            f"({subject['syn_queue']} at the end of the window): make it ask listen() for at least {proposed} "
            "and restart it")})
    return fixes
