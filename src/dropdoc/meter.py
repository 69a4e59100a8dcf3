"""Drops per finding over time: the one place that turns counter snapshots into a series.

`dropdoc serve`, `dropdoc watch` and the SQLite history all read drops through a Meter, so
the exporter, the live view and the report count exactly what `dropdoc diagnose` counts:
each catalogue rule's `drop_counters`, added up the way the rule adds them (a sum, or the
largest per device). Only the cheap counter sources are read (no process scan): ~1 ms.

Per-interval drops come from per-counter deltas (u32 wrap handled, a reset counter is
None), so a device that disappears or a per-CPU counter that wraps never shows up as a
negative or invented rate. `totals` only ever grow: they start at the counters' value at
the first sample (drops since boot, as far as the counters know) and then add intervals.

An interval is unknown (None) for a finding when it cannot be counted whole: a counter of
it reset, or a source it reads was not ok at either end (udp.no_port is Udp.NoPorts +
Udp6.NoPorts: with /proc/net/snmp failing, Udp6 alone would be a number too small). A
namespace that cannot be entered, or that was re-created (another inode: its counters
started again, and the host-wide ones it shows did not), makes the next reading a new
baseline: those intervals are unknown for every finding, never a delta across two
namespaces.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from . import delta as delta_mod
from . import netns as netns_mod
from .errors import DropdocError
from .rules.engine import Rule, count_drops, load_rules, matching
from .snapshot import Snapshot, take_snapshot
from .sources import SOURCES
from .sources.base import FAILED, NEEDS_PRIVILEGE

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
    lost: str | None = None          # why nothing could be measured in this interval

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
        self._identity: int | None = None       # namespace inode `last` was read in
        self._attempted: float | None = None    # monotonic time of the last reading, ok or not
        self._lost: str | None = None           # why the baseline was lost
        self._baselined = False                 # totals were set from the counters
        # Counter names of each source at its last good read: what a failing source would
        # have contributed, so the findings relying on it are known to be incomplete.
        self._names: dict[str, frozenset[str]] = {}

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.netns, root=self.root, final=False, names=self.sources)

    def _namespace_identity(self) -> int | None:
        if self.root != "/":
            return None
        try:
            return netns_mod.inode_of(self.netns)
        except DropdocError:
            return None

    def sample(self, snap: Snapshot | None = None) -> Interval | None:
        identity = self._namespace_identity()
        if snap is None:
            try:
                snap = self.snapshot()
            except DropdocError as exc:
                if self._attempted is None:
                    raise  # nothing measured yet: the caller says why, in one line
                return self.lost(str(exc))
        previous, self.last = self.last, snap
        since, self._attempted = self._attempted, snap.monotonic
        if previous is not None and identity != self._identity:
            previous, self._lost = None, f"network namespace {self.netns} was re-created: new baseline"
        self._identity = identity
        unsure = self._unsure_names(previous, snap)
        self._remember_names(snap)
        if previous is None:
            return self._baseline(snap, since)
        deltas = delta_mod.compute(previous, snap)
        drops = drops_by_finding(deltas.values)
        doubtful = frozenset(deltas.resets) | unsure
        never_read = self._never_read(previous, snap)
        if doubtful or never_read:
            for rule in load_rules():
                # A counter that reset, or whose source failed, makes the rule's count unknown.
                patterns = SPECIAL_COUNTERS.get(rule.id, rule.drop_counters)
                if drops.get(rule.id) is not None and (_names_matching(patterns, doubtful)
                                                       or _could_feed(patterns, never_read)):
                    drops[rule.id] = None
        for finding, value in drops.items():
            if value is not None:
                self.totals[finding] = self.totals.get(finding, 0) + value
        return Interval(wall=snap.wall, seconds=deltas.seconds, drops=drops, coverage=snap.coverage(),
                        errors=_errors(snap))

    def _baseline(self, snap: Snapshot, since: float | None) -> Interval | None:
        """The first reading, or the first after the namespace was lost: totals start at
        the counters the first time only; after a loss the interval is unknown."""
        if not self._baselined:
            self._baselined = True
            for finding, value in drops_by_finding(snap.counters()).items():
                if value is not None:
                    self.totals[finding] = value
        if since is None:
            return None
        lost, self._lost = self._lost, None
        return Interval(wall=snap.wall, seconds=max(snap.monotonic - since, 0.0), drops=_unknown(),
                        coverage=snap.coverage(), errors=_errors(snap), lost=lost or "new baseline")

    def lost(self, reason: str) -> Interval:
        """The namespace could not be read (deleted, no privilege to enter): an interval in
        which nothing is known, and the next reading is a new baseline."""
        now = time.monotonic()
        since, self._attempted = self._attempted, now
        self.last, self._lost = None, f"new baseline ({reason})"
        return Interval(wall=time.time(), seconds=0.0 if since is None else max(now - since, 0.0),
                        drops=_unknown(), lost=reason)

    def _unsure_names(self, previous: Snapshot | None, snap: Snapshot) -> frozenset[str]:
        if previous is None:
            return frozenset()
        names: set[str] = set()
        for name in previous.results.keys() | snap.results.keys():
            if not (_ok(previous, name) and _ok(snap, name)):
                names |= self._names.get(name, frozenset())
        return frozenset(names)

    def _never_read(self, *snaps: Snapshot | None) -> tuple[str, ...]:
        """Sources that failed (or lacked privilege) and were never read whole: their counter
        names are unknown, so their name prefixes say which findings they could feed."""
        return tuple(sorted({name for snap in snaps if snap is not None for name, result in snap.results.items()
                             if result.status in (FAILED, NEEDS_PRIVILEGE) and name not in self._names}))

    def _remember_names(self, snap: Snapshot) -> None:
        for name in snap.results:
            if _ok(snap, name):
                self._names[name] = frozenset(snap.source_counters(name))

    def measurable(self) -> set[str]:
        """Findings countable whole in the latest reading: some counter known, and none of
        a source that is not ok now (a partial sum is not exported as the finding's)."""
        snap = self.last
        if snap is None:
            return set()
        failing = frozenset().union(*(self._names.get(n, frozenset()) for n in snap.results if not _ok(snap, n)))
        never_read = self._never_read(snap)
        counts = drops_by_finding(snap.counters())
        return {rule.id for rule in load_rules() if counts.get(rule.id) is not None
                and not _names_matching(SPECIAL_COUNTERS.get(rule.id, rule.drop_counters), failing)
                and not _could_feed(SPECIAL_COUNTERS.get(rule.id, rule.drop_counters), never_read)}


def _could_feed(patterns: tuple[str, ...], sources: tuple[str, ...]) -> bool:
    """Could any of these (never read) sources provide a counter matching `patterns`?"""
    from .rules.coverage import PREFIXES, prefix_could_match

    return any(prefix_could_match(patterns, PREFIXES[name]) if name in PREFIXES else True for name in sources)


def _ok(snap: Snapshot, name: str) -> bool:
    result = snap.results.get(name)
    return result is not None and result.ok


def _errors(snap: Snapshot) -> dict[str, str]:
    return {n: r.error for n, r in snap.results.items() if r.error}


def _unknown() -> dict[str, int | None]:
    return {rule.id: None for rule in load_rules()}


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
