"""Two snapshots -> counter deltas over the window.

A counter missing from either side is None (never 0). A counter that went down was
either a u32 that wrapped (softnet_stat prints u32: we take the wrapped distance when it
is plausible, < 2**31) or was reset (device re-created, namespace gone): None, recorded
in `resets` so the report can say so instead of showing a wrong number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .snapshot import Snapshot
from .sources import SOURCES


@dataclass
class CounterDeltas:
    seconds: float
    values: dict[str, int | None] = field(default_factory=dict)
    resets: list[str] = field(default_factory=list)

    def get(self, name: str) -> int | None:
        return self.values.get(name)

    def rate(self, name: str) -> float | None:
        value = self.values.get(name)
        return None if value is None or self.seconds <= 0 else value / self.seconds


def counter_delta(before: int | None, after: int | None, bits: int = 64) -> tuple[int | None, bool]:
    """(delta, was_reset) for one counter."""
    if before is None or after is None:
        return None, False
    if after >= before:
        return after - before, False
    if bits == 32:
        wrapped = after + (1 << 32) - before
        if 0 <= wrapped < (1 << 31):
            return wrapped, False
    return None, True


def compute(before: Snapshot, after: Snapshot) -> CounterDeltas:
    deltas = CounterDeltas(seconds=max(after.monotonic - before.monotonic, 0.0))
    for name in before.results.keys() | after.results.keys():
        source = SOURCES[name]
        if source.counters is None:
            continue
        a, b = before.source_counters(name), after.source_counters(name)
        for counter in a.keys() | b.keys():
            value, reset = counter_delta(a.get(counter), b.get(counter), source.counter_bits)
            deltas.values[counter] = value
            if reset:
                deltas.resets.append(counter)
    deltas.resets.sort()
    return deltas
