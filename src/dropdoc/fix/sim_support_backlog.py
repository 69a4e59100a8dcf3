"""The simulator's justification of net.core.netdev_max_backlog for cpu.backlog_drop (see
sim_support).

From the finding as the JSON contract carries it (the softnet enricher): per CPU, the
packets it processed and dropped over the window and, from the counters sampled tick by
tick, its worst burst of drops - how long it lasted and what the CPU processed meanwhile.
While its backlog was full the CPU drained packets as fast as it could, so that is its
drain rate; packets arrived at drain + (what filled the backlog + drops) / burst.

The model replays that burst into one CPU's backlog (veth/RPS path: every packet goes
through it) and gives the smallest netdev_max_backlog without drops. A backlog dropping in
>= 90 % of the samples, or one no size up to the enricher's ceiling absorbs, is sustained
overload: a bigger backlog only delays the drops - spread the load over more CPUs (RPS,
more NIC queues/RSS) or make each packet cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..rules.enrichers.kernel import BACKLOG_CEILING
from .sim_support import (
    STEPS,
    SUSTAINED_HORIZON_S,
    Burst,
    Justification,
    Justifier,
    burst_from,
    enough,
    number,
    power_of_two,
    rate,
    run_model,
    sim,
    span,
)

BACKLOG = "cpu.backlog_drop"
NETDEV_MAX_BACKLOG = "net.core.netdev_max_backlog"


@dataclass(frozen=True)
class BacklogLoad:
    """What the window measured on the CPU whose backlog dropped most."""
    window_s: float
    cpu: int
    drops: int              # this CPU's drops over the window
    total_drops: int        # the finding's (all CPUs)
    processed: int          # this CPU's processed packets over the window
    burst: Burst            # served = packets processed during the worst burst
    backlog: int            # netdev_max_backlog in force (the backlog holds one more)

    @property
    def drain_per_s(self) -> float:
        return self.burst.served / self.burst.seconds

    @property
    def arrival_per_s(self) -> float:
        return self.drain_per_s + (self.backlog + 1 + self.burst.drops) / self.burst.seconds


def backlog_load(finding: dict[str, Any], current: Any, seconds: float | None) -> BacklogLoad | None:
    """The measured load of a cpu.backlog_drop finding; None when the window lacks a number
    it needs (no per-CPU processed count, no value in force, no window)."""
    if finding.get("id") != BACKLOG or not seconds or seconds <= 0 or not isinstance(current, int) \
            or isinstance(current, bool) or current < 0:
        return None
    cpus = [s for s in finding.get("subjects", []) if isinstance(s, dict) and number(s, "cpu", True) is not None
            and number(s, "drops", True) and number(s, "processed", True) is not None]
    total = finding.get("drops")
    if not cpus or not isinstance(total, int):
        return None
    worst = max(cpus, key=lambda s: (number(s, "burst_drops", True) or 0, s["drops"]))
    burst = burst_from(worst, "processed", float(seconds), worst["drops"], worst["processed"])
    if burst.served <= 0:
        return None  # nothing processed: no drain rate to replay
    return BacklogLoad(float(seconds), worst["cpu"], worst["drops"], total, worst["processed"], burst, current)


def backlog_params(load: BacklogLoad, backlog: int, endless: bool = False) -> dict[str, Any]:
    """Model parameters replaying the burst into one CPU's input backlog (veth with RPS to
    one CPU: every packet passes the backlog), drained at the measured rate: the per-packet
    cost is 1 / drain, with no extra cost per softirq round (the measured drain already
    includes it). Smooth arrivals, the socket reads at once: only the backlog can drop."""
    return {"udp_rate": load.arrival_per_s, "udp_total": None if endless else load.arrival_per_s * load.burst.seconds,
            "udp_size": 64, "rx_path": "veth", "rps_cpus": 1, "cpus": 1, "flows": 1,
            "rx_cost_us": max(1e6 / load.drain_per_s, 1e-3), "driver_cost_us": 0.0, "squeeze_overhead_us": 0.0,
            "softirq_share": 1.0, "netdev_max_backlog": backlog, "read_rate": None, "poisson": False}


def justify_backlog(finding: dict[str, Any], current: Any, proposed: Any,
                    seconds: float | None) -> Justification | None:
    load = backlog_load(finding, current, seconds)
    if load is None or not isinstance(proposed, int):
        return None
    SimParams, simulate, smallest = sim()
    from ..sim.model import BACKLOG as STAGE

    sustained = load.burst.whole_window
    span_ = min(load.window_s, load.burst.seconds * 1.1 + 0.01)
    horizon = max(SUSTAINED_HORIZON_S, load.window_s) if sustained else span_
    # every burst of the window like the worst one, spread over the window as the counters were
    scale = load.total_drops / load.burst.drops if load.burst.sampled and load.burst.drops else 1.0
    per_s = horizon if sustained else load.window_s / scale

    def run() -> tuple[float, float, int | None]:
        def drops_per_s(backlog: int) -> float:
            params = SimParams.from_dict(backlog_params(load, backlog, sustained))
            return simulate(params, seconds=horizon, dt=horizon / STEPS).drops.get(STAGE, 0.0) / per_s
        needed = smallest(SimParams.from_dict(backlog_params(load, load.backlog)), STAGE,
                          seconds=span_, dt=span_ / STEPS)
        return drops_per_s(load.backlog), drops_per_s(proposed), needed
    before, after, needed = run_model(run)
    verdict = backlog_verdict(load, proposed, needed, before, after)
    if sustained:
        verdict.inputs["horizon_seconds"] = horizon
    return verdict


def backlog_verdict(load: BacklogLoad, proposed: int, needed: int | None, before: float | None,
                    after: float | None) -> Justification:
    """The sentence and numbers (pure: unit-tested with given model outputs)."""
    arrival, drain = load.arrival_per_s, load.drain_per_s
    sustained = load.burst.whole_window or needed is None or needed > BACKLOG_CEILING
    inputs = {"cpu": load.cpu, "arrival_per_s": round(arrival, 1), "drain_per_s": round(drain, 1),
              "burst_seconds": round(load.burst.seconds, 3), "burst_drops": load.burst.drops,
              "burst_processed": load.burst.served, "window_seconds": round(load.window_s, 3),
              "sampled": load.burst.sampled, "backlog_in_force": load.backlog, "drops": load.drops,
              "processed": load.processed}
    measured = (f"{rate(arrival)} packets/s into CPU {load.cpu}'s backlog, which drained {rate(drain)}/s")
    if sustained:
        how = (f"for {span(load.burst.seconds)} of the {load.window_s:.1f} s window" if load.burst.whole_window
               else f"beyond what {BACKLOG_CEILING:,} packets hold")
        text = (f"sustained overload: a bigger backlog only delays drops - {measured} {how}; spread the load over "
                "more CPUs (RPS, more NIC queues/RSS) or make each packet cheaper")
    elif enough(proposed, needed):
        headroom = (proposed - needed) / needed if needed else 0.0
        text = (f"netdev_max_backlog {proposed:,} absorbs a {span(load.burst.seconds)} burst of {measured}: the "
                f"simulator's smallest backlog without drops is {needed:,} ({100 * headroom:.0f} % headroom; the "
                "samples bound the burst's length and rates, its drops are exact)")
    else:
        text = (f"netdev_max_backlog {proposed:,} is too small for a {span(load.burst.seconds)} burst of {measured}: "
                f"the simulator needs at least {needed:,}")
    if not load.burst.sampled:
        text += " (the window was not sampled: taken as one burst)"
    return Justification(BACKLOG, NETDEV_MAX_BACKLOG, load.backlog, proposed, needed, sustained, before, after,
                         text, inputs)


def suggest_backlog(needed: int) -> int:
    return min(power_of_two(needed), BACKLOG_CEILING)


JUSTIFIERS = {(BACKLOG, NETDEV_MAX_BACKLOG): Justifier(justify_backlog, suggest_backlog)}
