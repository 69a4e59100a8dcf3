"""A measurement window: snapshot, watch the listen queues, snapshot again.

Counters tell how many packets died; they do not tell which listening socket overflowed.
An accept queue is full for moments at a time, so between the two snapshots we sample
the listeners (one sock_diag dump, ~0.1 ms) several times a second and keep each socket's
peak queue and how often it was full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import delta as delta_mod
from . import netns as netns_mod
from .errors import DropdocError
from .snapshot import Snapshot, take_snapshot
from .sources.tcp_listeners import Listener, dump_listeners


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
class Window:
    before: Snapshot
    after: Snapshot
    deltas: delta_mod.CounterDeltas
    listeners: dict[int, ListenerStats] = field(default_factory=dict)  # by inode
    listener_sampling: str = "ok"
    # The drop tracer's result over the same window (dropdoc.trace/1 dict), None: not traced.
    trace: dict[str, Any] | None = None

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
    while True:
        now = time.monotonic()
        if sampling == "ok":
            try:
                _sample_listeners(netns, stats)
            except DropdocError as exc:
                sampling = f"unavailable: {exc}"
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
    return Window(before, after, delta_mod.compute(before, after), stats, sampling)
