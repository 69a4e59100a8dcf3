"""A measurement window: snapshot, watch the listen queues, snapshot again.

Counters tell how many packets died; they do not tell which listening socket overflowed.
An accept queue is full for moments at a time, so between the two snapshots we sample
the listeners (one sock_diag dump, ~0.1 ms) several times a second and keep each socket's
peak queue and how often it was full.

The same ticks read two cheap counter files (/proc/net/softnet_stat and /proc/net/snmp,
~0.2 ms) and keep the per-interval deltas of the softnet and UDP counters: *when* in the
window the drops happened - how long a burst lasted and what the rates were during it -
which two snapshots cannot tell (a 0.2 s burst in a 3 s window looks like a gentle
average). `dropdoc fix` replays those bursts in the simulator (fix/sim_support.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import delta as delta_mod
from . import netns as netns_mod
from .errors import DropdocError
from .snapshot import Snapshot, take_snapshot
from .sources import SOURCES
from .sources.tcp_listeners import Listener, dump_listeners

# Counters sampled at every tick (see the module docstring) and the names kept of them.
SAMPLED_SOURCES = ("softnet", "snmp")
SAMPLED_PREFIXES = ("softnet.", "Udp.", "Udp6.")
# A long window keeps at most this many intervals: beyond it, neighbours are merged in
# pairs (the resolution halves, the totals stay exact).
MAX_INTERVALS = 2000


@dataclass
class ListenerStats:
    listener: Listener
    peak_queue: int = 0
    full_samples: int = 0
    samples: int = 0
    full_at_end: bool = False

    def observe(self, current: Listener) -> None:
        self.listener = current
        self.samples += 1
        self.peak_queue = max(self.peak_queue, current.accept_queue)
        # The kernel's test (sk_acceptq_is_full): full when the queue exceeds the backlog.
        full = current.backlog is not None and current.accept_queue > current.backlog
        self.full_samples += full
        self.full_at_end = full


@dataclass
class CounterInterval:
    """Deltas of the sampled counters over one tick of the window (None: not measured)."""
    seconds: float
    values: dict[str, int | None]


def _sampled(snap: Snapshot) -> dict[str, tuple[int | None, int]]:
    out: dict[str, tuple[int | None, int]] = {}
    for name in SAMPLED_SOURCES:
        if name in snap.results:
            bits = SOURCES[name].counter_bits
            for counter, value in snap.source_counters(name).items():
                if counter.startswith(SAMPLED_PREFIXES):
                    out[counter] = (value, bits)
    return out


def counter_interval(before: Snapshot, after: Snapshot) -> CounterInterval:
    """The sampled counters' deltas between two snapshots (u32 wrap handled, a reset is None)."""
    a, b = _sampled(before), _sampled(after)
    values = {}
    for counter in a.keys() | b.keys():
        (old, bits), new = a.get(counter, (None, 64)), b.get(counter, (None, 64))[0]
        values[counter] = delta_mod.counter_delta(old, new, bits)[0]
    return CounterInterval(max(after.monotonic - before.monotonic, 0.0), values)


def merge_pairs(intervals: list[CounterInterval]) -> list[CounterInterval]:
    """Halve the resolution: each two neighbours become one (sums; unknown stays unknown)."""
    merged = []
    for i in range(0, len(intervals), 2):
        pair = intervals[i:i + 2]
        names = set().union(*(p.values for p in pair))
        values = {}
        for name in names:
            parts = [p.values.get(name) for p in pair]
            values[name] = None if any(v is None for v in parts) else sum(parts)
        merged.append(CounterInterval(sum(p.seconds for p in pair), values))
    return merged


@dataclass
class Window:
    before: Snapshot
    after: Snapshot
    deltas: delta_mod.CounterDeltas
    listeners: dict[int, ListenerStats] = field(default_factory=dict)  # by inode
    listener_sampling: str = "ok"
    # The drop tracer's result over the same window (dropdoc.trace/1 dict), None: not traced.
    trace: dict[str, Any] | None = None
    # Sampled counter deltas tick by tick (empty: not sampled, e.g. a bundle); see above.
    intervals: list[CounterInterval] = field(default_factory=list)
    counter_sampling: str = "ok"

    @property
    def seconds(self) -> float:
        return self.deltas.seconds


def _sample_listeners(netns: str | None, stats: dict[int, ListenerStats]) -> None:
    with netns_mod.entered(netns):
        current = dump_listeners()
    for listener in current:
        entry = stats.get(listener.inode)
        if entry is None:
            entry = stats[listener.inode] = ListenerStats(listener)
        entry.observe(listener)


def measure(netns: str | None = None, duration: float = 5.0, sample_interval: float = 0.1,
            on_start: Callable[[], None] | None = None,
            on_tick: Callable[[float], None] | None = None, record: bool = False,
            trace: bool = False) -> Window:
    """Measure `duration` seconds in `netns`. on_start runs right after the first snapshot
    (the lab starts its load there); on_tick(elapsed) drives a progress display;
    record=True keeps the raw answers of both snapshots (for bundles); trace=True runs
    the kfree_skb drop tracer over the same window (released on every exit path)."""
    if not trace:
        return _measure(netns, duration, sample_interval, on_start, on_tick, record)
    from .trace.tracer import finish_window, start_window

    # Attached before the first snapshot: attaching takes ~100 ms (BTF parsing).
    tracer = start_window(netns)
    result = None
    try:
        window = _measure(netns, duration, sample_interval, on_start, on_tick, record)
    finally:
        result = finish_window(tracer)
    window.trace = result.to_dict()
    return window


def _measure(netns: str | None, duration: float, sample_interval: float,
             on_start: Callable[[], None] | None, on_tick: Callable[[float], None] | None,
             record: bool) -> Window:
    stats: dict[int, ListenerStats] = {}
    sampling = "ok"
    before = take_snapshot(netns, final=False, record=record)
    if on_start:
        on_start()
    deadline = before.monotonic + max(duration, 0.0)
    intervals: list[CounterInterval] = []
    counters = "ok"
    last = before
    while True:
        now = time.monotonic()
        if sampling == "ok":
            try:
                _sample_listeners(netns, stats)
            except DropdocError as exc:
                sampling = f"unavailable: {exc}"
        if counters == "ok" and now < deadline:
            try:
                snap = take_snapshot(netns, final=False, names=SAMPLED_SOURCES)
            except DropdocError as exc:
                counters = f"unavailable: {exc}"
            else:
                intervals.append(counter_interval(last, snap))
                last = snap
                if len(intervals) > MAX_INTERVALS:
                    intervals = merge_pairs(intervals)
        if on_tick:
            on_tick(min(now - before.monotonic, duration))
        if now >= deadline:
            break
        time.sleep(max(min(sample_interval, deadline - time.monotonic()), 0.0))
    after = take_snapshot(netns, final=True, record=record)
    if sampling == "ok":
        try:
            _sample_listeners(netns, stats)
        except DropdocError as exc:
            sampling = f"unavailable: {exc}"
    if counters == "ok":
        intervals.append(counter_interval(last, after))
    return Window(before, after, delta_mod.compute(before, after), stats, sampling,
                  intervals=intervals if counters == "ok" else [], counter_sampling=counters)
