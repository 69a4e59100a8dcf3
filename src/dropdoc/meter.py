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

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from . import delta as delta_mod
from .rules.engine import Rule, count_drops, load_rules, matching
from .snapshot import Snapshot, take_snapshot
from .sources import SOURCES

# Findings whose counters count something other than dropped packets.
NOT_DROPS = {"cpu.time_squeeze": "squeezes"}


def counter_sources() -> tuple[str, ...]:
    """The sources with counters that are cheap enough to read every second."""
    return tuple(name for name, s in SOURCES.items() if s.counters is not None and not s.final_only)


@lru_cache(maxsize=256)
def _names_matching(patterns: tuple[str, ...], names: frozenset[str]) -> tuple[str, ...]:
    # Globs against every counter name cost ~8 ms a sample (hundreds of link/conntrack
    # counters x the catalogue's patterns); the set of names rarely changes between
    # samples, so the answer is cached per (patterns, names).
    return tuple(matching(patterns, dict.fromkeys(names)))


def _matching(patterns: tuple[str, ...], counters: dict[str, int | None],
              names: frozenset[str] | None = None) -> dict[str, int | None]:
    names = frozenset(counters) if names is None else names
    return {name: counters[name] for name in _names_matching(patterns, names)}


def _sum(counters: dict[str, int | None], patterns: tuple[str, ...]) -> int | None:
    known = [v for v in _matching(patterns, counters).values() if v is not None]
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

# The counters each special count reads: a reset of any of them (not only of the rule's
# drop_counters) makes its interval unknown - InErrors minus a reset RcvbufErrors would
# otherwise invent socket-filter drops.
SPECIAL_COUNTERS = {
    "socket.filter_drop": tuple(f"{t}.{n}" for t in ("Udp", "Udp6")
                                for n in ("InErrors", "RcvbufErrors", "MemErrors", "InCsumErrors")),
    "conntrack.table_full": ("conntrack.cpu*.drop", "conntrack.cpu*.insert_failed", "conntrack.cpu*.early_drop"),
    "tcp.memory_pressure": ("TcpExt.TCPAbortOnMemory",),
}


def drops_by_finding(counters: dict[str, int | None],
                     rules: tuple[Rule, ...] | None = None) -> dict[str, int | None]:
    """finding id -> drops in `counters` (absolute values or deltas); None when none of the
    rule's counters is known (not measured, never 0)."""
    found: dict[str, int | None] = {}
    names = frozenset(counters)
    for rule in rules or load_rules():
        special = SPECIAL_COUNTS.get(rule.id)
        if special is not None:
            found[rule.id] = special(counters)
            continue
        values = _matching(rule.drop_counters, counters, names)
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
        if deltas.resets:
            resets = dict.fromkeys(deltas.resets)
            for rule in load_rules():
                # A counter that reset inside the interval makes the rule's count unknown.
                patterns = SPECIAL_COUNTERS.get(rule.id, rule.drop_counters)
                if drops.get(rule.id) is not None and matching(patterns, resets):
                    drops[rule.id] = None
        for finding, value in drops.items():
            if value is not None:
                self.totals[finding] = self.totals.get(finding, 0) + value
        return Interval(wall=snap.wall, seconds=deltas.seconds, drops=drops, coverage=snap.coverage(),
                        errors={n: r.error for n, r in snap.results.items() if r.error})


def run(meter: Meter, interval: float, samples: int | None = None, on_interval=None,
        sleep=time.sleep, stop: threading.Event | None = None, on_start=None) -> int:
    """Sample every `interval` seconds (drift-free) and hand each Interval to on_interval;
    stops after `samples` intervals (None: until interrupted) or, between samples, as
    soon as `stop` is set, so no sample is ever cut in half. `stop` is anything with
    is_set() and wait(timeout) (a threading.Event; from a signal handler use a flag object
    instead: Event.set() inside a handler can deadlock on the Event's own lock).
    on_start() runs after the baseline sample. Returns the number of intervals handed on."""
    wait = sleep if stop is None else stop.wait
    meter.sample()
    if on_start:
        on_start()
    start = time.monotonic()
    done = 0
    while samples is None or done < samples:
        deadline = start + (done + 1) * interval
        late = time.monotonic() - deadline
        if late > interval:
            # Sampling fell behind (a stalled machine, a suspended process): start a new
            # schedule instead of firing the missed ticks back to back as tiny intervals.
            start = time.monotonic() - (done + 1) * interval
            deadline = start + (done + 1) * interval
        wait(max(deadline - time.monotonic(), 0.0))
        if stop is not None and stop.is_set():
            break
        result = meter.sample()
        done += 1
        if on_interval and result is not None:
            on_interval(result)
    return done
