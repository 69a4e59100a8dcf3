"""When in the window the drops happened: bursts from the counters sampled tick by tick
(window.intervals), so a fix can be sized for the burst rather than the window's average.

A burst is a run of consecutive sampled intervals in which the drop counter grew. Its
length is the length of those intervals (~0.1 s each), so it is an upper bound of the real
burst and the rates derived from it are lower bounds; the counts (drops, and what the
companion counters - packets processed, datagrams read - did meanwhile) are exact. Pure
functions over plain data: unit-tested in tests/unit/test_fix_sim_bursts.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Burst:
    seconds: float                 # the run's sampled intervals together
    drops: int
    companions: dict[str, int] = field(default_factory=dict)  # other counters over the same intervals


@dataclass(frozen=True)
class Bursts:
    samples: int                   # intervals in which the drop counters were known
    drop_samples: int              # ... in which they grew
    sampled_seconds: float
    count: int                     # runs of consecutive intervals with drops
    worst: Burst | None            # the run with the most drops

    def fields(self) -> dict[str, Any]:
        """The JSON fields an enricher adds to a subject or evidence item."""
        out: dict[str, Any] = {"samples": self.samples, "drop_samples": self.drop_samples,
                               "sampled_seconds": round(self.sampled_seconds, 3), "bursts": self.count}
        if self.worst is not None:
            out["burst_seconds"] = round(self.worst.seconds, 3)
            out["burst_drops"] = self.worst.drops
        return out


def _sum(values: dict[str, int | None], names: Iterable[str]) -> int | None:
    known = [values[n] for n in names if values.get(n) is not None]
    return sum(known) if known else None


def find_bursts(intervals: Sequence[Any], drop_counters: Sequence[str],
                companions: dict[str, Sequence[str]] | None = None) -> Bursts | None:
    """Bursts of `drop_counters` (their sum) over `intervals` (objects with .seconds and
    .values, window.CounterInterval); `companions` name -> counters summed over each burst.
    None when nothing was sampled or the counters were never known. An interval where
    the drop counters are unknown (reset, missing) ends a run and is not counted."""
    companions = companions or {}
    samples = drop_samples = count = 0
    sampled = 0.0
    worst: Burst | None = None
    run: list[Any] = []

    def close() -> None:
        nonlocal worst, count
        if not run:
            return
        count += 1
        drops = sum(_sum(i.values, drop_counters) or 0 for i in run)
        if worst is None or drops > worst.drops:
            worst = Burst(sum(i.seconds for i in run), drops,
                          {name: sum(_sum(i.values, names) or 0 for i in run) for name, names in companions.items()})
        run.clear()

    for interval in intervals:
        drops = _sum(interval.values, drop_counters)
        if drops is None:
            close()
            continue
        samples += 1
        sampled += interval.seconds
        if drops > 0:
            drop_samples += 1
            run.append(interval)
        else:
            close()
    close()
    if samples == 0:
        return None
    return Bursts(samples, drop_samples, sampled, count, worst)
