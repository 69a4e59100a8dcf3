"""Which stage limits, and why, in one paragraph an operator can act on.

The key distinction (DESIGN.md, kernel facts): a bigger queue absorbs a burst, never a
sustained overload. The model tracks, for every queue, the same queue without a limit (fluid):
its peak is the size that would have absorbed the load, and if it is still growing when the
load stops, arrivals exceeded service for the whole time and only a faster consumer helps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import SimResult, StageResult

# Parameters that set each stage's limit and its consumer, for the advice.
LIMIT_KNOBS = {
    "nic.rx_missed": "ring_size (ethtool -G rx)",
    "cpu.backlog_drop": "net.core.netdev_max_backlog",
    "tcp.syn_queue_full": "the listen backlog (somaxconn and the app's backlog) or tcp_syncookies=1",
    "tcp.listen_overflow": "net.core.somaxconn and the app's listen() backlog",
    "udp.rcvbuf_full": "the app's SO_RCVBUF (and net.core.rmem_max)",
    "qdisc.drop": "the qdisc limit (txqueuelen / tc ... limit)",
}
SERVICE_KNOBS = {
    "nic.rx_missed": "more RX queues/CPUs (RSS), a cheaper per-packet path",
    "cpu.backlog_drop": "spreading RPS over more CPUs, a cheaper per-packet path",
    "tcp.syn_queue_full": "SYN cookies or clients that complete the handshake",
    "tcp.listen_overflow": "an application that accepts faster (more workers)",
    "udp.rcvbuf_full": "an application that reads faster (more readers, SO_REUSEPORT)",
    "qdisc.drop": "a faster link/shaper rate or less traffic",
}
_EPS_DROPS = 0.5   # less than one packet in the whole run is no drop


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "unlimited"
    if abs(x) < 0.005:          # float residue of a fluid queue that emptied
        return "0"
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def active_seconds(st: "StageResult", dt: float) -> float:
    if st.first_arrival_s is None or st.last_arrival_s is None:
        return 0.0
    return st.last_arrival_s - st.first_arrival_s + dt


def is_sustained(st: "StageResult", dt: float) -> bool:
    """Arrivals exceeded the service rate while load arrived, and even a queue without a
    limit had not drained by the end of the run: no size absorbs it (within the run)."""
    seconds = active_seconds(st, dt)
    if st.capacity_per_s is None or seconds <= 0:
        return False
    return st.new_offered / seconds > st.capacity_per_s * 1.02 and st.needed_end >= 0.5


def explain(result: "SimResult") -> tuple[str | None, str]:
    dropping = sorted((s for s in result.stages.values() if s.dropped >= _EPS_DROPS),
                      key=lambda s: s.dropped, reverse=True)
    if not dropping:
        return None, _headroom(result)
    top = dropping[0]
    lines = [_stage_story(top, result)]
    for other in dropping[1:]:
        lines.append(f"Also {other.finding}: {_fmt(other.dropped / result.seconds)} drops/s "
                     f"({other.name}, limit {_fmt(other.limit)} {other.unit}).")
    return top.finding, " ".join(lines)


def _stage_story(st: "StageResult", result: "SimResult") -> str:
    dt = result.dt
    rate = st.dropped / result.seconds
    seconds = active_seconds(st, dt)
    arrival = st.new_offered / seconds if seconds > 0 else 0.0
    per = f" per instance ({st.instances})" if st.instances > 1 else ""
    head = (f"{st.finding}: {_fmt(rate)} drops/s at the {st.name} (limit {_fmt(st.limit)} {st.unit}{per}: "
            f"{st.limit_note}).")
    if st.capacity_per_s is None:
        service = "its consumer keeps up"
    else:
        service = f"served at {_fmt(st.capacity_per_s)}/s"
    load = f" Load arrives at {_fmt(arrival)}/s for {_fmt(seconds)} s, {service}."
    if is_sustained(st, dt):
        excess = arrival - (st.capacity_per_s or 0.0)
        delay = st.limit * st.instances / excess if excess > 0 else math.inf
        return (head + load + f" Sustained overload: arrivals exceed service for the whole load, so a "
                f"bigger queue only delays the drops (each {_fmt(st.limit * st.instances)} more "
                f"{st.unit} buy {_fmt(delay)} s); what helps is {SERVICE_KNOBS[st.finding]}.")
    needed = math.ceil(st.needed) if st.needed > 0 else None
    if needed is not None and needed > st.limit:
        return (head + load + f" A burst: the backlog of arrivals over service peaks at about "
                f"{needed:,} {st.unit}{' per instance' if st.instances > 1 else ''}; a limit of at least "
                f"that absorbs it: raise {LIMIT_KNOBS[st.finding]}.")
    return (head + load + " Random arrivals overflow this small queue even below its service rate: "
            f"raise {LIMIT_KNOBS[st.finding]}.")


def _headroom(result: "SimResult") -> str:
    best = None
    for st in result.stages.values():
        if st.offered <= 0 or not st.limit or math.isinf(st.limit):
            continue
        fill = st.peak / st.limit
        if best is None or fill > best[0]:
            best = (fill, st)
    if best is None:
        return "No drops predicted: no load reaches a queue with a limit."
    fill, st = best
    return (f"No drops predicted. The fullest queue is the {st.name} ({st.finding}): peak "
            f"{_fmt(st.peak)} of {_fmt(st.limit)} {st.unit} ({fill:.0%}).")
