"""The simulator's justification of somaxconn for tcp.listen_overflow (see sim_support).

From the finding as the JSON contract carries it: connections arriving = Tcp.PassiveOpens +
TcpExt.ListenOverflows over the window (the clients' retransmissions included: that is
what the queue saw); the application accepted at least PassiveOpens per second of window;
the accept queue was full in `full_samples` of `samples` listener samples - that share of
the window is how long the burst lasted. During it, arrivals exceeded acceptance by what
filled the queue plus what was dropped: rate_in_burst = accept + (backlog + 1 + drops) / burst.

The model gives the smallest somaxconn that absorbs that burst, and the drops/s with the
value in force and with the proposed one. Arrivals faster than the application accepts for
(nearly) the whole window, or more than any sane queue can hold, is sustained overload: a
bigger queue only delays the drops (DESIGN, kernel facts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sim_support import (
    STEPS,
    SUSTAINED_FULL_FRACTION,
    SUSTAINED_HORIZON_S,
    Justification,
    Justifier,
    SimUnavailable,
    enough,
    evidence_delta,
    power_of_two,
    rate,
    sim,
    span,
)

LISTEN = "tcp.listen_overflow"
SOMAXCONN = "net.core.somaxconn"
SOMAXCONN_CEILING = 65535           # the largest somaxconn every kernel honours (enrichers/tcp.py)
# A connection waiting longer than this in a full accept queue is likely to meet a client
# timeout (and the clients' SYN retransmission at 1 s) first: worth saying, not a refusal.
LONG_WAIT_S = 1.0


@dataclass(frozen=True)
class ListenLoad:
    """What the window measured at an overflowing listener."""
    window_s: float
    drops: int                 # TcpExt.ListenOverflows (every refused SYN/ACK, retries too)
    passive_opens: int         # Tcp.PassiveOpens: connections that entered the accept queue
    backlog: int               # backlog in force (min(listen() argument, somaxconn))
    somaxconn: int | None
    capped_by: str             # somaxconn | listen() backlog | unknown
    full_fraction: float | None  # share of listener samples with the queue full (None: not sampled)

    @property
    def accept_per_s(self) -> float:
        """A lower bound: accepted over the whole window, also while nothing was waiting."""
        return self.passive_opens / self.window_s

    @property
    def burst_s(self) -> float:
        if self.full_fraction is None or self.full_fraction <= 0:
            return self.window_s  # not sampled: spread over the window (the gentlest reading)
        return max(self.full_fraction * self.window_s, min(0.1, self.window_s))

    @property
    def arrival_per_s(self) -> float:
        """Arrivals during the burst: accepted, plus what filled the queue and what was refused."""
        return self.accept_per_s + (self.backlog + 1 + self.drops) / self.burst_s

    @property
    def average_arrival_per_s(self) -> float:
        return (self.passive_opens + self.drops) / self.window_s

    @property
    def whole_window(self) -> bool:
        return self.full_fraction is not None and self.full_fraction >= SUSTAINED_FULL_FRACTION


def listen_load(finding: dict[str, Any], seconds: float | None) -> ListenLoad | None:
    """The measured load of a tcp.listen_overflow finding; None when the window lacks a
    number it needs (no PassiveOpens, no backlog in force, no window length)."""
    if finding.get("id") != LISTEN or not seconds or seconds <= 0:
        return None
    drops = finding.get("drops")
    passive = evidence_delta(finding, "Tcp.PassiveOpens")
    subjects = [s for s in finding.get("subjects", []) if isinstance(s, dict) and isinstance(s.get("backlog"), int)]
    if not isinstance(drops, int) or drops <= 0 or passive is None or not subjects:
        return None
    worst = max(subjects, key=lambda s: (s.get("full_samples") or 0, s.get("accept_queue") or 0))
    samples, full = worst.get("samples"), worst.get("full_samples")
    fraction = full / samples if isinstance(samples, int) and samples > 0 and isinstance(full, int) else None
    somaxconn = worst.get("somaxconn") if isinstance(worst.get("somaxconn"), int) else None
    return ListenLoad(float(seconds), drops, passive, max(s["backlog"] for s in subjects), somaxconn,
                      str(worst.get("capped_by") or "unknown"), fraction)


def listen_params(load: ListenLoad, somaxconn: int, app_backlog: int, endless: bool = False) -> dict[str, Any]:
    """Model parameters replaying the measured burst (endless: the same rates without end,
    for sustained overload). Retries are off (SYN, SYN-ACK, and the clients' data that
    would complete a refused handshake): the measured arrivals already contain every
    retransmission the counters saw, so letting the model retransmit too would count
    them twice. A smooth (fluid) arrival: the burst rate was derived
    with the same fluid reasoning."""
    return {"conn_rate": load.arrival_per_s, "conn_total": None if endless else load.arrival_per_s * load.burst_s,
            "accept_rate": max(load.accept_per_s, 1e-3), "somaxconn": somaxconn, "app_backlog": app_backlog,
            "syn_retries": 0, "synack_retries": 0, "client_sends_after_s": None, "poisson": False, "syncookies": 1,
            "tcp_max_syn_backlog": max(1024, 2 * app_backlog)}


def justify_listen(finding: dict[str, Any], current: Any, proposed: Any, seconds: float | None) -> Justification | None:
    """Simulate the measured burst with somaxconn in force and proposed; None when the
    finding does not carry the numbers (no justification rather than a wrong one)."""
    load = listen_load(finding, seconds)
    if load is None or not isinstance(proposed, int):
        return None
    SimParams, simulate, smallest = sim()
    in_force = current if isinstance(current, int) else (load.somaxconn or load.backlog)
    # The listen() argument is not visible (the kernel keeps min(argument, somaxconn)). When
    # somaxconn caps it, assume the application asks for at least the proposal (the plan's
    # app action tells it to); when its own argument caps it, that argument is the backlog.
    app_now = load.backlog if load.capped_by == "listen() backlog" else max(load.backlog, proposed)
    window = load.window_s
    # A burst's drops all happen while it lasts (the queue drains afterwards): the model runs
    # the burst and a little more in fine steps, and the drops are spread over the window as
    # the counters were. Overload all window long: the steady state instead (the same rates
    # for a minute), where a bigger queue has filled up too and no longer helps.
    burst_span = min(window, load.burst_s * 1.1 + 0.01)
    horizon = max(SUSTAINED_HORIZON_S, window) if load.whole_window else burst_span
    per_s = horizon if load.whole_window else window

    def drops_per_s(params: Any) -> float:
        return simulate(params, seconds=horizon, dt=horizon / STEPS).drops.get(LISTEN, 0.0) / per_s
    try:
        burst = SimParams.from_dict(listen_params(load, load.backlog, load.backlog))
        before = drops_per_s(SimParams.from_dict(listen_params(load, load.backlog, load.backlog,
                                                               load.whole_window)))
        after = drops_per_s(SimParams.from_dict(listen_params(load, proposed, max(app_now, proposed),
                                                              load.whole_window)))
        needed = smallest(burst, LISTEN, seconds=burst_span, dt=burst_span / STEPS)
    except Exception as exc:  # noqa: BLE001 - a model failure must not break the plan
        raise SimUnavailable(f"simulator failed ({type(exc).__name__}: {exc})") from None
    verdict = _listen_verdict(load, in_force, proposed, needed, before, after)
    if load.whole_window:
        verdict.inputs["horizon_seconds"] = horizon
    return verdict


def _listen_verdict(load: ListenLoad, current: int, proposed: int, needed: int | None,
                    before: float | None, after: float | None) -> Justification:
    """The sentence and numbers (pure: unit-tested with given model outputs)."""
    arrival, accept = load.arrival_per_s, load.accept_per_s
    sustained = load.whole_window or needed is None or needed > SOMAXCONN_CEILING
    inputs = {"arrival_per_s": round(arrival, 1), "average_arrival_per_s": round(load.average_arrival_per_s, 1),
              "accept_per_s": round(accept, 1), "burst_seconds": round(load.burst_s, 3),
              "window_seconds": round(load.window_s, 3), "backlog_in_force": load.backlog,
              "drops": load.drops, "passive_opens": load.passive_opens}
    measured = f"at the measured {rate(arrival)} conn/s with the app accepting at {rate(accept)}/s"
    if sustained:
        how = (f"for {span(load.burst_s)} of the {load.window_s:.1f} s window" if load.whole_window
               else f"beyond what {SOMAXCONN_CEILING:,} slots hold")
        text = (f"sustained overload: a bigger queue only delays drops - connections arrive {measured} "
                f"{how}; only faster accepting (more workers) or less load stops them")
    elif enough(proposed, needed):
        headroom = (proposed - needed) / needed if needed else 0.0
        text = (f"somaxconn {proposed} absorbs a {span(load.burst_s)} burst {measured}: the simulator's "
                f"smallest queue without drops is {needed:,} ({proposed} leaves {100 * headroom:.0f} % headroom; "
                "the arrivals include retried attempts and the accept rate is a lower bound: both err on the "
                "safe side)")
    else:
        text = (f"somaxconn {proposed} is too small for a {span(load.burst_s)} burst {measured}: "
                f"the simulator needs at least {needed:,}")
    # accept is a lower bound, so this wait is an upper bound
    wait = needed / accept if needed and accept > 0 else 0.0
    if not sustained and wait > LONG_WAIT_S:
        text += (f"; the last connection of such a burst waits up to {span(wait)} in the queue at that "
                 "accept rate: clients with shorter timeouts give up first")
    if load.capped_by == "listen() backlog":
        text += f" (once the application asks listen() for at least {proposed})"
    return Justification(LISTEN, SOMAXCONN, current, proposed, needed, sustained, before, after, text, inputs)


def suggested_value(needed: int) -> int:
    """The model's minimum rounded up to a power of two (the planner's rounding), capped."""
    return min(power_of_two(needed), SOMAXCONN_CEILING)


JUSTIFIERS = {(LISTEN, SOMAXCONN): Justifier(justify_listen, suggested_value)}
