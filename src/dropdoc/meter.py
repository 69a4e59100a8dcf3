"""Drops per finding over time: the one place that turns counter snapshots into a series.

`dropdoc serve`, `dropdoc watch` and the SQLite history all read drops through a Meter, so
the exporter, the live view and the report count exactly what `dropdoc diagnose` counts:
each catalogue rule's `drop_counters`, added up the way the rule adds them (a sum, or the
largest per device). Only the cheap counter sources are read (no process scan): ~1 ms.

Per-interval drops come from per-counter deltas (u32 wrap handled, a reset counter is
None), so a device that disappears or a per-CPU counter that wraps never shows up as a
negative or invented rate. `totals` only ever grow: they start at the counters' value at
the first sample (drops since boot, as far as the counters know) and then add intervals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import delta as delta_mod
from .rules.engine import Rule, count_drops, load_rules, matching
from .snapshot import Snapshot, take_snapshot
from .sources import SOURCES

# Findings whose counters count something other than dropped packets.
NOT_DROPS = {"cpu.time_squeeze": "squeezes"}


def counter_sources() -> tuple[str, ...]:
    """The sources with counters that are cheap enough to read every second."""
    return tuple(name for name, s in SOURCES.items() if s.counters is not None and not s.final_only)


def _sum(counters: dict[str, int | None], patterns: tuple[str, ...]) -> int | None:
    known = [v for v in matching(patterns, counters).values() if v is not None]
    return sum(known) if known else None


def _socket_filter(counters: dict[str, int | None]) -> int | None:
    # No counter names these drops: InErrors minus the errors other findings count
    # (the socket_filter evaluator's formula), per family.
    found = None
    for table in ("Udp", "Udp6"):
        in_errors = counters.get(f"{table}.InErrors")
        if in_errors is not None:
            explained = sum(counters.get(f"{table}.{n}") or 0 for n in ("RcvbufErrors", "MemErrors", "InCsumErrors"))
            found = (found or 0) + max(in_errors - explained, 0)
    return found


def _conntrack_table_full(counters: dict[str, int | None]) -> int | None:
    # Unresolvable clashes count in both drop and insert_failed (clash resolution, 5.x+):
    # they are conntrack.insert_failed's.
    drop = _sum(counters, ("conntrack.cpu*.drop",))
    if drop is None:
        return None
    failed = _sum(counters, ("conntrack.cpu*.insert_failed",)) or 0
    return max(drop - failed, 0) + (_sum(counters, ("conntrack.cpu*.early_drop",)) or 0)


# Rules whose evaluator counts differently from "add up drop_counters"; without these the
# series would count a drop twice (UDP InErrors includes RcvbufErrors, TCPRcvQDrop is
# tcp.rcvq_drop's).
SPECIAL_COUNTS = {
    "socket.filter_drop": _socket_filter,
    "conntrack.table_full": _conntrack_table_full,
    "tcp.memory_pressure": lambda c: _sum(c, ("TcpExt.TCPAbortOnMemory",)),
}


def drops_by_finding(counters: dict[str, int | None],
                     rules: tuple[Rule, ...] | None = None) -> dict[str, int | None]:
    """finding id -> drops in `counters` (absolute values or deltas); None when none of the
    rule's counters is known (not measured, never 0)."""
    found: dict[str, int | None] = {}
    for rule in rules or load_rules():
        special = SPECIAL_COUNTS.get(rule.id)
        if special is not None:
            found[rule.id] = special(counters)
            continue
        values = matching(rule.drop_counters, counters)
        known = {k: v for k, v in values.items() if v is not None}
        found[rule.id] = count_drops(rule, known) if known else None
    return found


@dataclass
class Interval:
    """Drops per finding between two samples."""
    wall: float                      # end of the interval (unix time)
    seconds: float
    drops: dict[str, int | None]     # None: not measurable in this interval (missing or reset)
    coverage: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def rate(self, finding: str) -> float | None:
        value = self.drops.get(finding)
        return None if value is None or self.seconds <= 0 else value / self.seconds

    def by_layer(self) -> dict[str, int]:
        """Drops per layer (findings that count drops only; unknown ones left out)."""
        layers: dict[str, int] = {}
        for rule in load_rules():
            value = self.drops.get(rule.id)
            if value is not None and rule.id not in NOT_DROPS:
                layers[rule.layer] = layers.get(rule.layer, 0) + value
        return layers


class Meter:
    """Samples the counters of one network namespace; each `sample()` returns the Interval
    since the previous one (None the first time) and updates the running `totals`."""

    def __init__(self, netns: str | None = None, root: str = "/") -> None:
        self.netns = netns
        self.root = root
        self.sources = counter_sources()
        self.last: Snapshot | None = None
        self.totals: dict[str, int] = {}

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.netns, root=self.root, final=False, names=self.sources)

    def sample(self, snap: Snapshot | None = None) -> Interval | None:
        snap = snap or self.snapshot()
        previous, self.last = self.last, snap
        if previous is None:
            for finding, value in drops_by_finding(snap.counters()).items():
                if value is not None:
                    self.totals[finding] = value
            return None
        deltas = delta_mod.compute(previous, snap)
        drops = drops_by_finding(deltas.values)
        for rule in load_rules():
            # A counter that reset inside the interval makes the rule's count unknown.
            if drops.get(rule.id) is not None and matching(rule.drop_counters, dict.fromkeys(deltas.resets)):
                drops[rule.id] = None
        for finding, value in drops.items():
            if value is not None:
                self.totals[finding] = self.totals.get(finding, 0) + value
        return Interval(wall=snap.wall, seconds=deltas.seconds, drops=drops, coverage=snap.coverage(),
                        errors={n: r.error for n, r in snap.results.items() if r.error})


def run(meter: Meter, interval: float, samples: int | None = None, on_interval=None,
        sleep=time.sleep) -> None:
    """Sample every `interval` seconds (drift-free) and hand each Interval to on_interval;
    stops after `samples` intervals (None: until interrupted)."""
    meter.sample()
    start = time.monotonic()
    done = 0
    while samples is None or done < samples:
        done += 1
        sleep(max(start + done * interval - time.monotonic(), 0.0))
        result = meter.sample()
        if on_interval and result is not None:
            on_interval(result)
