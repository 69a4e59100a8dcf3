"""The simulator's part in a fix plan: why the proposed queue size is enough, and what the
drops should become once it is in force - before anything is applied.

From the finding as the JSON contract carries it (so a live plan and `--from` agree):

- tcp.listen_overflow: connections arriving = Tcp.PassiveOpens + TcpExt.ListenOverflows
  over the window (the clients' retransmissions included: that is what the queue saw);
  the application accepted at least PassiveOpens per second of window; the accept queue
  was full in `full_samples` of `samples` listener samples - that share of the window is
  how long the burst lasted. During it, arrivals exceeded acceptance by what filled the
  queue plus what was dropped: rate_in_burst = accept + (backlog + 1 + drops) / burst.

The model (dropdoc.sim) then gives the smallest somaxconn that absorbs that burst, and the
drops/s with the value in force and with the proposed one. Arrivals faster than the
application accepts for (nearly) the whole window, or more than any sane queue can hold,
is sustained overload: a bigger queue only delays the drops (DESIGN, kernel facts).

Everything here is advisory: when the simulator is missing or fails, the plan is the same
without the justification, and says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LISTEN = "tcp.listen_overflow"
SOMAXCONN = "net.core.somaxconn"
SOMAXCONN_CEILING = 65535           # the largest somaxconn every kernel honours (enrichers/tcp.py)
SUSTAINED_FULL_FRACTION = 0.9       # queue full in >= 90 % of the samples: overload all window long
# A connection waiting longer than this in a full accept queue is likely to meet a client
# timeout (and the clients' SYN retransmission at 1 s) first: worth saying, not a refusal.
LONG_WAIT_S = 1.0
STEPS = 2000                        # model steps per simulated window: ~10 ms per run here
SUSTAINED_HORIZON_S = 60.0          # steady state of a sustained overload: a minute of it
# Below the model's minimum by less than this is not "too small": the sizing search stops at
# 0.5 % and the model's own rounding of a replayed burst is a few % (docs/sim.md).
MODEL_MARGIN = 0.05


class SimUnavailable(Exception):
    """The simulator could not be imported or failed: the plan goes on without it."""


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


def _evidence(finding: dict[str, Any], counter: str) -> int | None:
    for item in finding.get("evidence", []):
        if isinstance(item, dict) and item.get("counter") == counter and isinstance(item.get("delta"), int):
            return item["delta"]
    return None


def listen_load(finding: dict[str, Any], seconds: float | None) -> ListenLoad | None:
    """The measured load of a tcp.listen_overflow finding; None when the window lacks a
    number it needs (no PassiveOpens, no backlog in force, no window length)."""
    if finding.get("id") != LISTEN or not seconds or seconds <= 0:
        return None
    drops = finding.get("drops")
    passive = _evidence(finding, "Tcp.PassiveOpens")
    subjects = [s for s in finding.get("subjects", []) if isinstance(s, dict) and isinstance(s.get("backlog"), int)]
    if not isinstance(drops, int) or drops <= 0 or passive is None or not subjects:
        return None
    worst = max(subjects, key=lambda s: (s.get("full_samples") or 0, s.get("accept_queue") or 0))
    samples, full = worst.get("samples"), worst.get("full_samples")
    fraction = full / samples if isinstance(samples, int) and samples > 0 and isinstance(full, int) else None
    somaxconn = worst.get("somaxconn") if isinstance(worst.get("somaxconn"), int) else None
    return ListenLoad(float(seconds), drops, passive, max(s["backlog"] for s in subjects), somaxconn,
                      str(worst.get("capped_by") or "unknown"), fraction)


@dataclass
class Justification:
    """The simulator's view of one proposed change."""
    finding: str
    target: str
    current: Any
    proposed: Any
    needed: int | None              # smallest value without drops (None: no size helps)
    sustained: bool
    before_per_s: float | None      # predicted drops/s with the value in force
    after_per_s: float | None       # ... with the proposed value
    text: str
    inputs: dict[str, Any] = field(default_factory=dict)
    raised_from: Any = None         # the enricher's proposal when the model showed it too small

    def to_dict(self) -> dict[str, Any]:
        return {"model": "dropdoc.sim", "finding": self.finding, "needed": self.needed,
                "sustained": self.sustained,
                "predicted_before_per_s": _r(self.before_per_s), "predicted_after_per_s": _r(self.after_per_s),
                "text": self.text, "inputs": self.inputs,
                **({"horizon_seconds": self.inputs["horizon_seconds"]} if "horizon_seconds" in self.inputs else {}),
                **({"raised_from": self.raised_from} if self.raised_from is not None else {})}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def rate(value: float) -> str:
    """3000 -> '3,000', 58.6 -> '59', 2.35 -> '2.4'."""
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def span(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


# ---- the model ------------------------------------------------------------------------------

def _sim():
    try:
        from ..sim import SimParams, simulate
        from ..sim.sizing import smallest_queue_without_drops
    except Exception as exc:  # noqa: BLE001 - any import failure: the plan goes on without it
        raise SimUnavailable(f"simulator not available ({type(exc).__name__}: {exc})") from None
    return SimParams, simulate, smallest_queue_without_drops


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
    SimParams, simulate, smallest = _sim()
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


def enough(proposed: int, needed: int | None) -> bool:
    """Proposed holds what the model needs, within the model's precision (MODEL_MARGIN)."""
    return needed is not None and proposed >= needed * (1 - MODEL_MARGIN)


def suggested_value(needed: int) -> int:
    """The model's minimum rounded up to a power of two (the planner's rounding), capped."""
    return min(1 << max(needed - 1, 0).bit_length(), SOMAXCONN_CEILING)


JUSTIFIERS = {(LISTEN, SOMAXCONN): justify_listen}


def justify(finding: dict[str, Any], target: str, current: Any, proposed: Any,
            seconds: float | None) -> Justification | None:
    """The simulator's justification of `target` = `proposed` for `finding`; None when the
    model has nothing to say about this change. Raises SimUnavailable when it should have
    but cannot (import or model failure)."""
    justifier = JUSTIFIERS.get((finding.get("id"), target))
    if justifier is None:
        return None
    return justifier(finding, current, proposed, seconds)


def predicted_line(simulation: dict[str, Any]) -> str:
    """'predicted by the simulator (same burst): 241.2 -> 0.0 drops/s' from a plan's
    `simulation` record (the JSON the plan carries, so --from plans read the same)."""
    before, after = simulation.get("predicted_before_per_s"), simulation.get("predicted_after_per_s")
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return ""
    if simulation.get("horizon_seconds"):
        return (f"predicted by the simulator (the same rates for {simulation['horizon_seconds']:.0f} s): "
                f"{before:.1f} -> {after:.1f} drops/s")
    line = f"predicted by the simulator (same burst): {before:.1f} -> {after:.1f} drops/s"
    if simulation.get("sustained") and after < before:
        line += " in this window; longer overload keeps dropping"
    return line


def attach(plan: Any) -> None:
    """Give each planned change the simulator has a model for its `simulation` record;
    a proposal the model shows too small for the measured burst is raised to the model's
    minimum (rounded up to a power of two) - never lowered. Without the simulator: one note."""
    for planned in plan.changes:
        for finding_id in planned.findings:
            finding = plan.finding(finding_id)
            if finding is None:
                continue
            try:
                found = justify(finding, planned.target, planned.current, planned.proposed, plan.window_seconds)
                if found is not None and not found.sustained and found.needed is not None \
                        and isinstance(planned.proposed, int) and not enough(planned.proposed, found.needed):
                    raised = suggested_value(found.needed)
                    again = justify(finding, planned.target, planned.current, raised, plan.window_seconds)
                    if again is not None:
                        again.raised_from = planned.proposed
                        planned.why += (f" The simulator shows {planned.proposed} too small for the measured "
                                        f"burst (it needs {found.needed:,}): raised to {raised}.")
                        planned.proposed = planned.change.value = raised
                        found = again
            except Exception as exc:  # noqa: BLE001 - advisory: never let it break a plan
                reason = exc if isinstance(exc, SimUnavailable) else f"{type(exc).__name__}: {exc}"
                note = f"{planned.target}: no simulator justification or predicted effect - {reason}"
                if note not in plan.notes:
                    plan.notes.append(note)
                break
            if found is not None:
                planned.simulation = found.to_dict()
                break
