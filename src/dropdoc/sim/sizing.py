"""How big must a queue be to take a load without drops? (justifies the values `dropdoc fix`
proposes).

A search over the queue's size in slots (packets, connections, datagrams), each probe a full
simulation with the queue's parameters set to hold that many: exponential growth until
the stage stops dropping, then bisection. A stage in sustained overload never stops
dropping: the answer is then None, and the reason says so (only a faster consumer helps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .model import ACCEPTQ, BACKLOG, QDISC, RING, SYNQ, UDPSOCK, simulate
from .params import SimParams, SimParamsError

# The parameter whose value smallest_queue_without_drops() returns, per stage.
PRIMARY = {RING: "ring_size", BACKLOG: "netdev_max_backlog", SYNQ: "app_backlog",
           ACCEPTQ: "somaxconn", UDPSOCK: "udp_rcvbuf", QDISC: "qdisc_limit"}
DEFAULT_UPPER_SLOTS = 1 << 20


@dataclass
class Sizing:
    finding: str
    slots: int | None             # queue size that absorbs the load (None: none does)
    changes: dict[str, Any]       # parameter -> value giving that size
    drops_before: float
    drops_after: float | None
    probes: int
    reason: str
    current_slots: float = 0.0
    tried: list[tuple[int, float]] = field(default_factory=list)

    @property
    def value(self) -> Any:
        return self.changes.get(PRIMARY[self.finding]) if self.slots is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding, "slots": self.slots, "changes": self.changes,
                "drops_before": round(self.drops_before, 3),
                "drops_after": None if self.drops_after is None else round(self.drops_after, 3),
                "probes": self.probes, "reason": self.reason, "current_slots": self.current_slots}


def changes_for_slots(params: SimParams, finding: str, slots: int) -> dict[str, Any]:
    """Parameter values that make `finding`'s queue hold `slots`; values already larger
    are kept (a fix never lowers a limit)."""
    slots = max(int(slots), 1)
    p = params
    if finding == RING:
        return {"ring_size": max(p.ring_size, slots)}
    if finding == BACKLOG:
        return {"netdev_max_backlog": max(p.netdev_max_backlog, slots - 1)}
    if finding == ACCEPTQ:
        backlog = max(p.listen_backlog, slots - 1)
        return {"somaxconn": max(p.somaxconn, backlog), "app_backlog": max(p.app_backlog, backlog)}
    if finding == SYNQ:
        backlog = max(p.listen_backlog, slots - 1)
        changes: dict[str, Any] = {"somaxconn": max(p.somaxconn, backlog),
                                   "app_backlog": max(p.app_backlog, backlog)}
        if p.syncookies == 0:
            m = max(p.tcp_max_syn_backlog, math.ceil((slots - 1) * 4 / 3))
            while m - (m >> 2) + 1 < slots:
                m += 1
            changes["tcp_max_syn_backlog"] = m
        return changes
    if finding == UDPSOCK:
        # sk_rcvbuf = 2 x SO_RCVBUF must hold `slots` datagrams of truesize bytes
        request = math.ceil(slots * p.truesize / 2)
        current = p.udp_rcvbuf if p.udp_rcvbuf is not None else p.rmem_default // 2
        request = max(request, current)
        changes = {"udp_rcvbuf": request}
        if not p.rcvbuf_force and request > p.rmem_max:
            changes["rmem_max"] = request
        return changes
    if finding == QDISC:
        changes = {"qdisc_limit": max(p.qdisc_limit or 0, slots)}
        if p.qdisc_limit_bytes is not None:
            changes["qdisc_limit_bytes"] = max(p.qdisc_limit_bytes, slots * p.tx_packet_bytes)
        return changes
    raise SimParamsError(f"no queue to size for {finding!r} (one of {', '.join(PRIMARY)})")


def size_queue(params: SimParams, finding: str, *, seconds: float = 10.0, dt: float | None = None,
               tolerance: float = 0.5, upper_slots: int = DEFAULT_UPPER_SLOTS) -> Sizing:
    """The smallest size of `finding`'s queue for which the model predicts fewer than
    `tolerance` drops there over `seconds` (0.5: not one packet)."""
    if finding not in PRIMARY:
        raise SimParamsError(f"no queue to size for {finding!r} (one of {', '.join(PRIMARY)})")
    base = simulate(params, seconds, dt)
    stage = base.stages.get(finding)
    if stage is None:
        raise SimParamsError(f"{finding}: this configuration has no such queue (rx_path/rps_cpus)")
    current_slots = stage.limit
    drops_before = stage.dropped
    tried: list[tuple[int, float]] = []

    def drops_with(slots: int) -> float:
        result = simulate(params.replace(**changes_for_slots(params, finding, slots)), seconds, dt)
        dropped = result.stages[finding].dropped
        tried.append((slots, dropped))
        return dropped

    if drops_before < tolerance:
        return Sizing(finding, int(current_slots), changes_for_slots(params, finding, int(current_slots)),
                      drops_before, drops_before, 0, "no drops at the current size", current_slots, tried)
    lo = max(int(current_slots), 1)                 # known to drop
    guess = max(math.ceil(stage.needed) + 1, lo * 2)
    hi = None
    probe = min(guess, upper_slots)
    while True:
        if drops_with(probe) < tolerance:
            hi = probe
            break
        lo = probe
        if probe >= upper_slots:
            break
        probe = min(probe * 4, upper_slots)
    if hi is None:
        return Sizing(finding, None, {}, drops_before, tried[-1][1] if tried else None, len(tried),
                      f"still dropping with {upper_slots:,} slots: sustained overload, a bigger "
                      f"queue only delays the drops", current_slots, tried)
    while hi - lo > max(1, hi // 200):   # 0.5 % is as precise as the model
        mid = (lo + hi) // 2
        if drops_with(mid) < tolerance:
            hi = mid
        else:
            lo = mid
    after = dict(tried)[hi]
    return Sizing(finding, hi, changes_for_slots(params, finding, hi), drops_before, after, len(tried),
                  f"{hi:,} slots absorb the load ({drops_before:,.0f} drops at {current_slots:,.0f})",
                  current_slots, tried)


def smallest_queue_without_drops(params: SimParams, finding: str, *, seconds: float = 10.0,
                                 dt: float | None = None, tolerance: float = 0.5) -> int | None:
    """The value of the stage's primary parameter (PRIMARY: netdev_max_backlog, somaxconn,
    udp_rcvbuf bytes, ring_size, qdisc_limit, app_backlog for the SYN queue) at which the
    model predicts no drops there; None when no size helps (sustained overload)."""
    return size_queue(params, finding, seconds=seconds, dt=dt, tolerance=tolerance).value
