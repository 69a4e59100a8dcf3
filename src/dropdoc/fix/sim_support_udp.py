"""The simulator's justification for udp.rcvbuf_full (see sim_support): the receive buffer
(net.core.rmem_default, net.core.rmem_max when it caps the application's SO_RCVBUF, the
application's own SO_RCVBUF) and, in sustained overload, the reader's speed.

From the finding as the JSON contract carries it (the udp_sockets enricher):

- datagrams read (Udp/Udp6 InDatagrams: what the applications took) and dropped over the
  window, and the worst burst of drops from the counters sampled tick by tick: its length
  and what was read meanwhile - the reader's speed while its buffer was full;
- the buffer in force (sock_diag skmem rb of the socket that dropped most) and the
  datagram size (the receiving interface's rx_bytes / rx_packets, minus headers; unknown:
  1,472 bytes assumed, the largest unfragmented payload on a 1500-byte MTU, whose skb
  truesize is the largest of common sizes - it errs on the safe side).

During the burst datagrams arrived at read + (what filled the buffer + drops) / burst.
The model replays that burst and gives the smallest buffer without drops. A reader that
takes less than half of what arrived on average, or a buffer dropping in >= 90 % of the
samples, is sustained overload: a bigger buffer only delays the drops - the reader must
get faster (DESIGN, kernel facts), and the reader-speed action says by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .sim_support import (
    STEPS,
    SUSTAINED_HORIZON_S,
    Burst,
    Justification,
    Justifier,
    burst_from,
    enough,
    evidence_with,
    follow_change,
    number,
    power_of_two,
    rate,
    run_model,
    sim,
    size,
    span,
)

UDP = "udp.rcvbuf_full"
RMEM_DEFAULT, RMEM_MAX = "net.core.rmem_default", "net.core.rmem_max"
SO_RCVBUF, READER = "SO_RCVBUF", "reader speed"
ASSUMED_DATAGRAM = 1472
SUSTAINED_READ_FRACTION = 0.5   # as the enricher judges it (enrichers/udp.py)
BUFFER_CEILING = 1 << 30        # the largest rmem_* value the planner accepts (fix/sysctl.py)
UDP_MAX_PAYLOAD = 65507


@dataclass(frozen=True)
class UdpLoad:
    """What the window measured at the overflowing UDP buffer."""
    window_s: float
    drops: int                  # Udp RcvbufErrors (the finding's drops)
    read: int                   # Udp/Udp6 InDatagrams: what the applications read
    burst: Burst                # served = datagrams read during the worst burst
    rcvbuf: int | None          # sk_rcvbuf in force of the socket that dropped most (bytes)
    datagram_bytes: int | None  # measured payload size (None: unknown)
    rmem_default: int | None
    rmem_max: int | None

    @property
    def payload(self) -> int:
        size_ = self.datagram_bytes if self.datagram_bytes is not None else ASSUMED_DATAGRAM
        return min(max(size_, 0), UDP_MAX_PAYLOAD)

    @property
    def read_per_s(self) -> float:
        """The reader's speed while its buffer was full (it was busy all that time)."""
        return self.burst.served / self.burst.seconds

    def arrival_per_s(self, held: int) -> float:
        """Arrivals during the burst: read, plus what filled the buffer (`held` datagrams)
        and what was dropped."""
        return self.read_per_s + (held + self.burst.drops) / self.burst.seconds

    @property
    def average_arrival_per_s(self) -> float:
        return (self.read + self.drops) / self.window_s

    @property
    def average_read_per_s(self) -> float:
        return self.read / self.window_s

    @property
    def reader_behind(self) -> bool:
        """The reader cannot keep up even on average: its speed while the buffer was full
        (sampled) is below the window's average arrivals - no buffer absorbs that for long.
        Not sampled: the enricher's test (it read less than half of what arrived)."""
        if self.burst.sampled:
            return self.read_per_s < self.average_arrival_per_s
        return self.average_read_per_s < SUSTAINED_READ_FRACTION * self.average_arrival_per_s


def udp_load(finding: dict[str, Any], seconds: float | None, socket: str | None = None) -> UdpLoad | None:
    """The measured load of a udp.rcvbuf_full finding (of `socket`'s buffer, default: the
    socket that dropped most); None when the window lacks a number it needs."""
    if finding.get("id") != UDP or not seconds or seconds <= 0:
        return None
    drops = finding.get("drops")
    window = evidence_with(finding, "window", "datagrams_read")
    read = number(window, "datagrams_read", True)
    if not isinstance(drops, int) or isinstance(drops, bool) or drops <= 0 or read is None:
        return None
    sockets = [s for s in finding.get("subjects", []) if isinstance(s, dict) and number(s, "rcvbuf", True)]
    if socket is not None:
        sockets = [s for s in sockets if s.get("socket") == socket] or sockets
    worst = max(sockets, key=lambda s: number(s, "drops", True) or 0) if sockets else None
    measured = number(evidence_with(finding, "netdev", "datagram_bytes"), "datagram_bytes", True)
    burst = burst_from(window, "read", float(seconds), drops, read)
    return UdpLoad(float(seconds), drops, read, burst, worst["rcvbuf"] if worst else None, measured,
                   number(window, "rmem_default", True), number(window, "rmem_max", True))


# ---- the model --------------------------------------------------------------------------------

def _truesize(payload: int) -> int:
    from ..sim import udp_truesize

    return udp_truesize(payload)


def udp_params(load: UdpLoad, buffer: int, arrival: float, read: float, endless: bool = False) -> dict[str, Any]:
    """Model parameters replaying the burst into a socket buffer of `buffer` bytes
    (sk_rcvbuf; SO_RCVBUFFORCE so nothing else caps it), read at `read`/s (endless: the
    same rates without end, the steady state of a sustained overload). Only the socket is
    modelled (veth, no RPS: no ring or backlog in front of it) and arrivals are smooth: the
    burst's rates were derived with the same fluid reasoning."""
    return {"udp_rate": arrival, "udp_total": None if endless else arrival * load.burst.seconds,
            "udp_size": load.payload, "read_rate": max(read, 1e-3), "udp_rcvbuf": max(buffer // 2, 1),
            "rcvbuf_force": True, "rx_path": "veth", "rps_cpus": 0, "poisson": False}


@dataclass
class Replay:
    """The model's answers for one buffer (or reader speed) against the measured load."""
    needed_buffer: int | None   # smallest sk_rcvbuf without drops (None: none helps)
    before: float
    after: float
    horizon: float | None       # set: steady state of a sustained overload over this long
    arrival: float
    held: int


def replay(load: UdpLoad, buffer_now: int, buffer_after: int, read_after: float | None = None) -> Replay:
    """Drops/s with the buffer in force and with `buffer_after` (and the reader at
    `read_after`/s), and the smallest buffer without drops, for the measured burst."""
    SimParams, simulate, smallest = sim()
    from ..sim.model import UDPSOCK

    def run() -> Replay:
        truesize = _truesize(load.payload)
        held = max(buffer_now // truesize, 1)
        arrival = load.arrival_per_s(held)
        sustained = load.burst.whole_window or load.reader_behind
        span_ = min(load.window_s, load.burst.seconds * 1.1 + 0.01)
        horizon = max(SUSTAINED_HORIZON_S, load.window_s) if sustained else span_
        # A burst's drops happen while it lasts: spread over the window as the counters
        # were, every burst of the window like the worst (scale); sustained: per second.
        scale = load.drops / load.burst.drops if load.burst.sampled and load.burst.drops else 1.0
        per_s = horizon if sustained else load.window_s / scale

        def drops_per_s(buffer: int, read: float) -> float:
            params = SimParams.from_dict(udp_params(load, buffer, arrival, read, sustained))
            return simulate(params, seconds=horizon, dt=horizon / STEPS).drops.get(UDPSOCK, 0.0) / per_s
        before = drops_per_s(buffer_now, load.read_per_s)
        after = drops_per_s(buffer_after, load.read_per_s if read_after is None else read_after)
        request = smallest(SimParams.from_dict(udp_params(load, buffer_now, arrival, load.read_per_s)), UDPSOCK,
                           seconds=span_, dt=span_ / STEPS)
        return Replay(None if request is None else 2 * request, before, after,
                      horizon if sustained else None, arrival, held)
    return run_model(run)


# ---- sentences (pure: unit-tested with given model outputs) ------------------------------------

def _measured(load: UdpLoad, arrival: float) -> str:
    what = (f"of {load.payload:,}-byte datagrams" if load.datagram_bytes is not None
            else f"of datagrams of unknown size ({ASSUMED_DATAGRAM:,} bytes assumed)")
    text = f"a {span(load.burst.seconds)} burst {what} at {rate(arrival)}/s with the reader at {rate(load.read_per_s)}/s"
    if not load.burst.sampled:
        text += " (the window was not sampled: taken as one burst)"
    return text


def _sustained_text(load: UdpLoad, arrival: float, needed: int | None) -> str | None:
    """The sustained-overload sentence, or None when the buffer can absorb the burst."""
    if load.burst.whole_window or load.reader_behind:
        how = f"for {span(load.burst.seconds)} of the {load.window_s:.1f} s window"
    elif needed is None or needed > BUFFER_CEILING:
        how = f"beyond what a {size(BUFFER_CEILING)} buffer holds"
    else:
        return None
    return (f"sustained overload: a bigger buffer only delays drops - datagrams arrive at {rate(arrival)}/s while "
            f"the reader takes {rate(load.read_per_s)}/s {how}; only a faster reader (recvmmsg batches, more "
            "sockets with SO_REUSEPORT, less work per datagram) or slower senders stop them")


def buffer_verdict(load: UdpLoad, what: str, proposed_buffer: int, needed_buffer: int | None, arrival: float,
                   target: str, current: Any, proposed: Any, needed: int | None,
                   before: float | None, after: float | None) -> Justification:
    """`what` (e.g. 'rmem_default 416 KiB') gives a `proposed_buffer`-byte sk_rcvbuf;
    `needed`/`proposed` are in the target's own unit (bytes of the setting)."""
    sustained_text = _sustained_text(load, arrival, needed_buffer)
    inputs = {"arrival_per_s": round(arrival, 1), "read_per_s": round(load.read_per_s, 1),
              "average_arrival_per_s": round(load.average_arrival_per_s, 1),
              "average_read_per_s": round(load.average_read_per_s, 1),
              "burst_seconds": round(load.burst.seconds, 3), "window_seconds": round(load.window_s, 3),
              "sampled": load.burst.sampled, "datagram_bytes": load.datagram_bytes,
              "payload_modelled": load.payload, "rcvbuf_in_force": load.rcvbuf,
              "buffer_after": proposed_buffer, "needed_buffer": needed_buffer, "drops": load.drops,
              "read": load.read}
    if sustained_text is not None:
        text = sustained_text
    elif enough(proposed_buffer, needed_buffer):
        headroom = (proposed_buffer - needed_buffer) / needed_buffer if needed_buffer else 0.0
        text = (f"{what} absorbs {_measured(load, arrival)}: the simulator's smallest buffer without drops is "
                f"{size(needed_buffer)} ({100 * headroom:.0f} % headroom)")
    else:
        text = (f"{what} is too small for {_measured(load, arrival)}: the simulator needs a buffer of at least "
                f"{size(needed_buffer)}")
    return Justification(UDP, target, current, proposed, needed, sustained_text is not None, before, after,
                         text, inputs)


# ---- per setting --------------------------------------------------------------------------------

def _buffer_now(load: UdpLoad) -> int | None:
    return load.rcvbuf if load.rcvbuf is not None else load.rmem_default


def justify_rmem_default(finding: dict[str, Any], current: Any, proposed: Any,
                         seconds: float | None) -> Justification | None:
    """rmem_default is the buffer (sk_rcvbuf) of sockets that do not set SO_RCVBUF."""
    load = udp_load(finding, seconds)
    if load is None or not isinstance(proposed, int) or _buffer_now(load) is None:
        return None
    found = replay(load, _buffer_now(load), proposed)
    verdict = buffer_verdict(load, f"rmem_default {size(proposed)}", proposed, found.needed_buffer, found.arrival,
                             RMEM_DEFAULT, current, proposed, found.needed_buffer, found.before, found.after)
    return _finish(verdict, found)


def justify_rmem_max(finding: dict[str, Any], current: Any, proposed: Any,
                     seconds: float | None) -> Justification | None:
    """rmem_max only when it is the cap (a socket at twice it: its SO_RCVBUF asked for at
    least rmem_max); the buffer then becomes 2 x rmem_max."""
    load = udp_load(finding, seconds)
    cap = current if isinstance(current, int) else load.rmem_max if load else None
    if load is None or not isinstance(proposed, int) or cap is None or load.rcvbuf != 2 * cap:
        return None
    found = replay(load, load.rcvbuf, 2 * proposed)
    needed = None if found.needed_buffer is None else math.ceil(found.needed_buffer / 2)
    verdict = buffer_verdict(load, f"rmem_max {size(proposed)} (a {size(2 * proposed)} buffer once the application "
                             "asks SO_RCVBUF for it: the kernel doubles it)", 2 * proposed, found.needed_buffer,
                             found.arrival, RMEM_MAX, current, proposed, needed, found.before, found.after)
    return _finish(verdict, found)


def justify_so_rcvbuf(finding: dict[str, Any], fix: dict[str, Any], seconds: float | None) -> Justification | None:
    """The application's SO_RCVBUF (the app action): the buffer is 2 x min(request, rmem_max)."""
    load = udp_load(finding, seconds, fix.get("socket"))
    wanted = number(fix, "proposed", True)
    if load is None or not wanted or load.rcvbuf is None:
        return None
    cap = load.rmem_max
    buffer = 2 * (min(wanted, cap) if cap else wanted)
    found = replay(load, load.rcvbuf, buffer)
    needed = None if found.needed_buffer is None else math.ceil(found.needed_buffer / 2)
    what = f"SO_RCVBUF {size(wanted)} (a {size(2 * wanted)} buffer: the kernel doubles it)"
    if cap and wanted > cap:
        what = (f"SO_RCVBUF {size(wanted)} (capped by rmem_max {size(cap)} to a {size(buffer)} buffer unless "
                "net.core.rmem_max is raised too, or the application uses SO_RCVBUFFORCE)")
    verdict = buffer_verdict(load, what, buffer, found.needed_buffer, found.arrival, SO_RCVBUF,
                             number(fix, "current", True), wanted, needed, found.before, found.after)
    if not verdict.sustained and needed and needed > wanted * 1.05:
        verdict.text += f"; ask for SO_RCVBUF {size(power_of_two(needed))}"
    return _finish(verdict, found)


def justify_reader(finding: dict[str, Any], fix: dict[str, Any], seconds: float | None) -> Justification | None:
    """Sustained overload only: the reader speed that stops the drops (the arrival rate),
    with the buffer in force - the app action's predicted effect."""
    load = udp_load(finding, seconds)
    if load is None or _buffer_now(load) is None:
        return None
    probe = replay(load, _buffer_now(load), _buffer_now(load))
    if _sustained_text(load, probe.arrival, probe.needed_buffer) is None:
        return None  # bursts: the buffer is the fix (its own justification)
    needed = math.ceil(probe.arrival)
    found = replay(load, _buffer_now(load), _buffer_now(load), read_after=float(needed))
    text = (f"sustained overload: datagrams arrive at {rate(probe.arrival)}/s while the reader takes "
            f"{rate(load.read_per_s)}/s for {span(load.burst.seconds)} of the {load.window_s:.1f} s window - the "
            f"reader must take at least {needed:,}/s ({needed / max(load.read_per_s, 1e-3):.0f}x today); a bigger "
            "buffer only delays the drops")
    inputs = {"arrival_per_s": round(probe.arrival, 1), "read_per_s": round(load.read_per_s, 1),
              "burst_seconds": round(load.burst.seconds, 3), "window_seconds": round(load.window_s, 3),
              "sampled": load.burst.sampled, "rcvbuf_in_force": _buffer_now(load), "read_after_per_s": needed}
    verdict = Justification(UDP, READER, round(load.read_per_s, 1), needed, needed, True, found.before,
                            found.after, text, inputs)
    return _finish(verdict, found)


def _finish(verdict: Justification, found: Replay) -> Justification:
    if found.horizon is not None:
        verdict.inputs["horizon_seconds"] = found.horizon
    return verdict


def suggest_buffer(needed: int) -> int:
    return min(power_of_two(needed), BUFFER_CEILING)


def _follow_default(plan: Any, planned: Any, raised: int) -> None:
    """rmem_max must stay >= rmem_default (the planner refuses otherwise): raise it along."""
    finding = plan.finding(planned.findings[0]) or {}
    in_force = number(evidence_with(finding, "window", "rmem_max"), "rmem_max", True)
    follow_change(plan, planned, RMEM_MAX, raised,
                  f"raised with net.core.rmem_default to {raised}: rmem_max must stay at least rmem_default.",
                  current=in_force)


JUSTIFIERS = {(UDP, RMEM_DEFAULT): Justifier(justify_rmem_default, suggest_buffer, _follow_default),
              (UDP, RMEM_MAX): Justifier(justify_rmem_max, suggest_buffer)}
ACTION_JUSTIFIERS = {(UDP, SO_RCVBUF): justify_so_rcvbuf, (UDP, READER): justify_reader}
