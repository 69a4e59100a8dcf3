"""TCP listeners: accept-queue overflow and SYN-queue drops."""

from __future__ import annotations

from typing import Any

from ...model import Finding
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

