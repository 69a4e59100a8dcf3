"""Drop rates over time from a recorded history: series per layer and per finding, peaks,
and the gaps - pure functions over recorded samples, shared by the HTML and Markdown
reports.

Two kinds of gap are kept apart from zero everywhere:
  * not recording: time between two samples that no sample covers (dropdoc watch was not
    running) - every series is None there;
  * not measurable: a finding whose counters were missing or reset in an interval
    (`Sample.gaps`) - that finding's series is None there, and so is its layer's (a sum
    missing one of its parts would be a wrong number, not a smaller one).
Findings that were never measurable in the whole history (no such counter on this host)
are left out of the layer sums and listed instead.

A week of 1 s samples is 600k intervals, almost all of them quiet (nothing dropped, the
same findings unmeasurable). So the samples are held column-wise and sparse (`Recorded`):
the quiet ones cost a float each, and everything per finding or layer - bucket peaks,
totals, peaks - walks only the intervals where something happened, plus one pass per
bucket size over the times.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..history import Sample, SampleColumns
from ..meter import NOT_DROPS
from ..rules.engine import LAYERS, load_rules

Point = tuple[float, float | None]          # (x, y); y None = a gap

MAX_BUCKETS = 100_000
# Bucket sizes a reader can think in (seconds).
NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
UNKNOWN_LAYER = "unknown"   # finding ids a newer dropdoc recorded and this catalogue lacks


def finding_layers() -> dict[str, str]:
    return {rule.id: rule.layer for rule in load_rules()}


def unit_of(finding: str) -> str:
    """What a finding's counter counts: "drops", except for NOT_DROPS (time squeezes)."""
    return NOT_DROPS.get(finding, "drops")


@dataclass
class Peak:
    """One finding over the whole history."""
    finding: str
    layer: str
    unit: str
    total: int                       # over the measured intervals
    peak_rate: float | None          # highest per-interval rate (None: never measured)
    peak_ts: float | None            # end of that interval (None: nothing dropped)
    mean_rate: float | None          # total / measured seconds
    intervals_with_drops: int
    unmeasured_intervals: int


@dataclass
class RecordingGap:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Unmeasured:
    """A finding that could not be measured in some (not all) intervals."""
    finding: str
    intervals: int
    seconds: float
    first: float
    last: float


# -- the recorded samples, column-wise ---------------------------------------------------

def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Recorded:
    """Samples oldest first, as a file that may have been damaged or edited can be used:
    a sample without a finite time is left out (`damaged`); an interval of no (or no
    believable) length measured nothing; a negative or non-integer count is not a count -
    that finding is unmeasurable then."""

    def __init__(self, ts: list[float], seconds: list[float], drops: dict[int, dict[str, int]],
                 gaps: dict[int, frozenset[str]], always: Iterable[str] = (), damaged: int = 0) -> None:
        self.ts = ts                    # end of each interval, ascending
        self.seconds = seconds          # >= 0; 0: the interval measured nothing
        self.drops = drops              # sample index -> finding -> drops (only where there are rows)
        self.gaps = gaps                # sample index -> findings not measurable then ...
        self.always = frozenset(always) if ts else frozenset()   # ... and these in every sample
        self.damaged = damaged
        self.drops_at: dict[str, list[int]] = {}   # finding -> indices of its drop entries
        self.gaps_at: dict[str, list[int]] = {}    # finding -> indices of its gaps
        for index in sorted(drops):
            for finding in drops[index]:
                self.drops_at.setdefault(finding, []).append(index)
        for index in sorted(gaps):
            for finding in gaps[index]:
                self.gaps_at.setdefault(finding, []).append(index)

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> Recorded:
        kept = sorted((s for s in samples if _finite_number(s.ts)), key=lambda s: s.ts)
        drops: dict[int, dict[str, int]] = {}
        gaps: dict[int, frozenset[str]] = {}
        for index, sample in enumerate(kept):
            counts = {f: v for f, v in sample.drops.items() if _is_count(v)}
            missing = frozenset({*sample.gaps, *(f for f in sample.drops if f not in counts)})
            if counts or sample.drops:
                drops[index] = counts
            if missing:
                gaps[index] = missing
        seconds = [max(s.seconds, 0.0) if _finite_number(s.seconds) else 0.0 for s in kept]
        return cls([float(s.ts) for s in kept], seconds, drops, gaps, damaged=len(samples) - len(kept))

    @classmethod
    def from_columns(cls, columns: SampleColumns) -> Recorded:
        ts, seconds = columns.ts, columns.seconds
        try:  # the usual case, one fast pass: every time and length a finite number
            clean = all(map(math.isfinite, ts)) and all(map(math.isfinite, seconds))
        except TypeError:
            clean = False
        damaged = 0
        if clean:
            seconds = [s if s >= 0 else 0.0 for s in seconds] if min(seconds, default=0.0) < 0 else list(seconds)
            ts = list(ts)
        else:
            pairs = [(t, s) for t, s in zip(ts, seconds) if _finite_number(t)]
            damaged = len(ts) - len(pairs)
            ts = [float(t) for t, _ in pairs]
            seconds = [max(s, 0.0) if _finite_number(s) else 0.0 for _, s in pairs]

        # Rows come ordered by time, like the samples; a row of no sample is ignored.
        position = {t: i for i, t in enumerate(ts)} if columns.drops or columns.gaps else {}
        drops: dict[int, dict[str, int]] = {}
        gaps: dict[int, set[str]] = {}
        for when, finding, value in columns.drops:
            index = position.get(when)
            if index is None:
                continue
            if type(value) is int and value >= 0:
                if index in drops:
                    drops[index][finding] = value
                else:
                    drops[index] = {finding: value}
            else:
                gaps.setdefault(index, set()).add(finding)
        for when, finding in columns.gaps:
            index = position.get(when)
            if index is not None:
                gaps.setdefault(index, set()).add(finding)
        return cls(ts, seconds, drops, {i: frozenset(g) for i, g in gaps.items()}, columns.always_gaps, damaged)


def _as_recorded(samples: Sequence[Sample] | SampleColumns | Recorded) -> Recorded:
    if isinstance(samples, Recorded):
        return samples
    if isinstance(samples, SampleColumns):
        return Recorded.from_columns(samples)
    return Recorded.from_samples(samples)


# -- buckets -----------------------------------------------------------------------------

def _bucket_range(start: float, end: float, size: float) -> tuple[int, int]:
    """The buckets an interval overlaps; one ending on a boundary stays left of it."""
    low = math.floor(start / size)
    return low, max(low, math.ceil(end / size) - 1)


@dataclass
class Buckets:
    """The samples' times cut into buckets of `size` seconds (bucket k starts at k*size)."""
    size: float
    first: int
    measured: list[int]       # intervals with a length overlapping each bucket
    covered: list[float]      # seconds of each bucket inside a recorded interval
    within: list[int]         # per sample: the one bucket (offset) it lies in, -1 if several

    def starts(self) -> list[float]:
        return [(self.first + k) * self.size for k in range(len(self.measured))]


def _union_coverage(intervals: Iterable[tuple[float, float]], size: float, first: int, count: int) -> list[float]:
    """Seconds of each bucket inside the union of (end, length) intervals."""
    covered = [0.0] * count
    reach = -math.inf
    for start, end in sorted((end - seconds, end) for end, seconds in intervals if seconds > 0):
        start = max(start, reach)
        if end <= start:
            continue
        reach = end
        low, high = _bucket_range(start, end, size)
        for k in range(low, high + 1):
            covered[k - first] += max(min(end, (k + 1) * size) - max(start, k * size), 0.0)
    return covered


def choose_bucket(span_s: float, interval_s: float | None, max_buckets: int) -> float:
    """The smallest nice bucket, no shorter than one sample interval, that keeps the
    number of buckets at or below max_buckets."""
    floor = interval_s if interval_s and interval_s > 0 else 1.0
    span_s = max(span_s, 0.0) if math.isfinite(span_s) else 0.0
    for size in NICE_BUCKETS:
        if size >= floor * 0.999 and span_s / size <= max_buckets:
            return float(size)
    days = math.ceil(max(span_s, floor) / (max(max_buckets, 1) * 86400.0))
    return float(max(days, 1) * 86400)


# -- the timeline ------------------------------------------------------------------------

class Timeline:
    """A recorded history, oldest sample first."""

    def __init__(self, samples: Sequence[Sample] | SampleColumns | Recorded,
                 layers_of: dict[str, str] | None = None) -> None:
        self.recorded = _as_recorded(samples)
        self.damaged = self.recorded.damaged   # rows with no place in time, left out
        self.layers_of = finding_layers() if layers_of is None else dict(layers_of)

    def __len__(self) -> int:
        return len(self.recorded)

    # -- the recorded period ---------------------------------------------------------

    @cached_property
    def start(self) -> float | None:
        """The earliest recorded moment (a long interval may start before the first one)."""
        r = self.recorded
        return min(map(operator.sub, r.ts, r.seconds)) if r.ts else None

    @property
    def end(self) -> float | None:
        return self.recorded.ts[-1] if self.recorded.ts else None

    @cached_property
    def typical_interval(self) -> float | None:
        positive = [s for s in self.recorded.seconds if s > 0]
        return statistics.median(positive) if positive else None

    @cached_property
    def recording_gaps(self) -> list[RecordingGap]:
        """Stretches no sample covers: dropdoc was not recording."""
        tolerance = 0.5 * (self.typical_interval or 0.0) + 0.05
        ts, seconds = self.recorded.ts, self.recorded.seconds
        return [RecordingGap(ts[i - 1], ts[i] - seconds[i]) for i in range(1, len(ts))
                if ts[i] - seconds[i] - ts[i - 1] > tolerance]

    def recorded_seconds(self) -> float:
        return math.fsum(self.recorded.seconds)

    def coverage_ratio(self) -> float | None:
        """Share of the period from the first to the last sample that samples cover."""
        if not len(self) or self.end <= self.start:
            return None
        return min(self.recorded_seconds() / (self.end - self.start), 1.0)

    # -- findings ----------------------------------------------------------------------

    @cached_property
    def findings_seen(self) -> list[str]:
        """Every finding that dropped or was unmeasurable at least once, catalogue order."""
        r = self.recorded
        seen = {*r.drops_at, *r.gaps_at, *r.always}
        known = [f for f in self.layers_of if f in seen]
        return known + sorted(seen - set(known))

    @cached_property
    def never_measured(self) -> list[str]:
        """Findings unmeasurable in every sample: no such counter here."""
        r = self.recorded
        always = set(r.always) | {f for f, at in r.gaps_at.items() if len(at) == len(r.ts)}
        return [f for f in self.findings_seen if f in always]

    def layer_of(self, finding: str) -> str:
        return self.layers_of.get(finding, UNKNOWN_LAYER)

    @cached_property
    def layers(self) -> list[str]:
        names = list(LAYERS)
        if any(f not in self.layers_of for f in self.recorded.drops_at):
            names.append(UNKNOWN_LAYER)
        return names

    @cached_property
    def _layer_members(self) -> dict[str, frozenset[str]]:
        """The drop-counting findings that make up each layer's rate."""
        never = set(self.never_measured)
        members: dict[str, set[str]] = {layer: set() for layer in self.layers}
        for finding in [*self.layers_of, *self.findings_seen]:
            if finding not in NOT_DROPS and finding not in never:
                members.setdefault(self.layer_of(finding), set()).add(finding)
        return {layer: frozenset(ids) for layer, ids in members.items()}

    def _unmeasurable(self, index: int, finding: str) -> bool:
        return finding in self.recorded.always or finding in self.recorded.gaps.get(index, ())

    def rate(self, index: int, finding: str) -> float | None:
        """The finding's drops/s in sample `index` (None: not measurable then)."""
        seconds = self.recorded.seconds[index]
        if not seconds > 0 or self._unmeasurable(index, finding):
            return None
        return self.recorded.drops.get(index, {}).get(finding, 0) / seconds

    def layer_rate(self, index: int, layer: str) -> float | None:
        """Drops/s of a layer in one sample; None when one of its findings (one that is
        measurable at other times) was not measurable then."""
        seconds = self.recorded.seconds[index]
        if not seconds > 0:
            return None
        members = self._layer_members.get(layer, frozenset())
        if not members.isdisjoint(self.recorded.gaps.get(index, ())):
            return None
        return sum(v for f, v in self.recorded.drops.get(index, {}).items() if f in members) / seconds

    def _events(self, findings: Iterable[str]) -> set[int]:
        """The samples where any of `findings` has a drop entry or a gap: everywhere else
        their rate is 0 (or None in an interval of no length)."""
        r = self.recorded
        return set().union(*(r.drops_at.get(f, ()) for f in findings), *(r.gaps_at.get(f, ()) for f in findings))

    # -- series ------------------------------------------------------------------------

    def _points(self, values: list[float | None]) -> list[Point]:
        """One point per sample (at its end) with a None inside each recording gap, so a
        line breaks there instead of bridging time nobody measured."""
        gap_ends = {gap.end for gap in self.recording_gaps}
        points: list[Point] = []
        for ts, seconds, value in zip(self.recorded.ts, self.recorded.seconds, values):
            start = ts - seconds
            if points and start in gap_ends:
                points.append(((points[-1][0] + start) / 2, None))
                # the first interval after the gap also from its start: the shaded span is
                # then exactly the time nobody recorded, not that plus one interval
                points.append((start, value))
            points.append((ts, value))
        return points

    def finding_rates(self, finding: str) -> list[float | None]:
        """The finding's rate in each sample (None: not measurable then)."""
        return [self.rate(i, finding) for i in range(len(self))]

    def layer_rates(self, layer: str) -> list[float | None]:
        return [self.layer_rate(i, layer) for i in range(len(self))]

    def finding_series(self, finding: str) -> list[Point]:
        return self._points(self.finding_rates(finding))

    def layer_series(self, layer: str) -> list[Point]:
        return self._points(self.layer_rates(layer))

    # -- buckets -----------------------------------------------------------------------

    def buckets(self, size: float) -> Buckets:
        """One pass over the samples' times: how many measured intervals and how much
        recorded time each bucket holds."""
        cached = self.__dict__.setdefault("_buckets", {})
        if size in cached:
            return cached[size]
        if not size > 0:
            raise ValueError(f"bucket of {size} s")
        r = self.recorded
        if not r.ts:
            result = Buckets(size, 0, [], [], [])
            cached[size] = result
            return result
        first = _bucket_range(self.start, self.start, size)[0]
        # The latest end is the last bucket's - or, on a boundary, an interval of no length
        # ending at the same time (it stays right of the boundary).
        index, last = len(r.ts) - 1, -math.inf
        while index >= 0 and r.ts[index] == r.ts[-1]:
            last = max(last, _bucket_range(r.ts[index] - r.seconds[index], r.ts[index], size)[1])
            index -= 1
        if last - first >= MAX_BUCKETS:
            raise ValueError(f"{last - first + 1} buckets of {size:g} s: choose a larger bucket")
        measured = [0] * (last - first + 1)
        covered = [0.0] * (last - first + 1)
        within = []
        floor, ceil = math.floor, math.ceil
        overlapping, previous_end = False, -math.inf
        for end, seconds in zip(r.ts, r.seconds):
            start = end - seconds
            overlapping = overlapping or start < previous_end
            previous_end = end
            low = floor(start / size)
            high = ceil(end / size) - 1
            if high <= low:                      # inside one bucket: the usual case
                within.append(low - first)
                if seconds > 0:
                    measured[low - first] += 1
                    covered[low - first] += seconds
                continue
            within.append(-1)
            if seconds > 0:
                for k in range(low, high + 1):
                    measured[k - first] += 1
                    covered[k - first] += min(end, (k + 1) * size) - max(start, k * size)
        if overlapping:  # intervals that overlap (an edited file): time covered twice counts once
            covered = _union_coverage(zip(r.ts, r.seconds), size, first, len(covered))
        result = Buckets(size, first, measured, covered, within)
        cached[size] = result
        return result

    def _bucket_peaks(self, size: float, values: Iterable[tuple[int, float | None]]) -> list[Point]:
        """(bucket start, highest rate of the intervals overlapping it) for every bucket
        from the first interval's to the last one's, from the (sample index, rate) of the
        eventful samples: every other interval of some length has a rate of 0 there. A
        bucket no interval covers, or covered only by unmeasurable ones, is None - never 0."""
        buckets = self.buckets(size)
        peaks: list[float | None] = [None] * len(buckets.measured)
        eventful = [0] * len(buckets.measured)
        first, within = buckets.first, buckets.within
        for index, value in values:
            k = within[index]
            if k >= 0:   # the usual case: one bucket
                eventful[k] += 1
                if value is not None and (peaks[k] is None or value > peaks[k]):
                    peaks[k] = value
                continue
            for k, _ in self._shares(index, size, first):
                eventful[k] += 1
                if value is not None and (peaks[k] is None or value > peaks[k]):
                    peaks[k] = value
        points = []
        for k, start in enumerate(buckets.starts()):
            value = peaks[k]
            if buckets.measured[k] > eventful[k]:   # a quiet interval there: a rate of 0
                value = 0.0 if value is None else max(value, 0.0)
            points.append((start, value))
        return points

    def finding_buckets(self, finding: str, size: float) -> list[Point]:
        r = self.recorded
        if finding in r.always:
            return [(start, None) for start in self.buckets(size).starts()]
        values = ((i, None if finding in r.gaps.get(i, ()) else r.drops.get(i, {}).get(finding, 0) / r.seconds[i])
                  for i in self._events((finding,)) if r.seconds[i] > 0)
        return self._bucket_peaks(size, values)

    def finding_bucket_means(self, finding: str, size: float) -> list[Point]:
        """(bucket start, drops over the measured seconds of the bucket): next to the
        highest rate, says whether a bucket's peak was a burst or a steady rate. An
        interval over several buckets counts in each by the share of it inside."""
        buckets = self.buckets(size)
        r = self.recorded
        if finding in r.always:
            return [(start, None) for start in buckets.starts()]
        drops = [0.0] * len(buckets.measured)
        unmeasured = [0.0] * len(buckets.measured)
        for index in self._events((finding,)):
            seconds = r.seconds[index]
            if not seconds > 0:
                continue
            value = None if finding in r.gaps.get(index, ()) else r.drops.get(index, {}).get(finding, 0)
            k = buckets.within[index]
            shares = [(k, 1.0)] if k >= 0 else self._shares(index, size, buckets.first)
            for k, share in shares:
                if value is None:
                    unmeasured[k] += seconds * share
                else:
                    drops[k] += value * share
        points = []
        for k, start in enumerate(buckets.starts()):
            measured = buckets.covered[k] - unmeasured[k]
            points.append((start, drops[k] / measured if measured > 1e-9 else None))
        return points

    def _shares(self, index: int, size: float, first: int) -> list[tuple[int, float]]:
        """(bucket offset, share of the interval inside it) for an interval over several buckets."""
        end = self.recorded.ts[index]
        start = end - self.recorded.seconds[index]
        low, high = _bucket_range(start, end, size)
        return [(k - first, (min(end, (k + 1) * size) - max(start, k * size)) / (end - start))
                for k in range(low, high + 1)]

    def layer_buckets(self, layer: str, size: float) -> list[Point]:
        r = self.recorded
        members = self._layer_members.get(layer, frozenset())
        values = ((i, None if not members.isdisjoint(r.gaps.get(i, ()))
                   else sum(v for f, v in r.drops.get(i, {}).items() if f in members) / r.seconds[i])
                  for i in self._events(members) if r.seconds[i] > 0)
        return self._bucket_peaks(size, values)

    def bucket_coverage(self, size: float) -> list[float]:
        """For each bucket, the share of it inside the recorded period that samples
        cover: below 1 where the recorder was not running for part of the bucket."""
        buckets = self.buckets(size)
        result = []
        for start, covered in zip(buckets.starts(), buckets.covered):
            low, high = max(start, self.start), min(start + size, self.end)
            result.append(1.0 if high <= low else min(covered / (high - low), 1.0))
        return result

    # -- summaries ---------------------------------------------------------------------

    def peaks(self) -> list[Peak]:
        """Each finding that dropped or was sometimes unmeasurable: drops first, worst first."""
        r = self.recorded
        never = set(self.never_measured)
        no_length = {i for i, s in enumerate(r.seconds) if not s > 0}
        measured_total = math.fsum(r.seconds)
        result = []
        for finding in self.findings_seen:
            if finding in never:
                continue
            gapped = set(r.gaps_at.get(finding, ()))
            unmeasured = gapped | no_length
            measured_s = measured_total - math.fsum(r.seconds[i] for i in gapped)
            total, with_drops, dropped_in = 0, 0, 0
            peak_rate: float | None = None
            peak_ts: float | None = None
            for index in r.drops_at.get(finding, ()):
                if index in unmeasured:
                    continue
                dropped_in += 1
                value = r.drops[index][finding]
                total += value
                with_drops += value > 0
                rate = value / r.seconds[index]
                if peak_rate is None or rate > peak_rate:
                    peak_rate, peak_ts = rate, r.ts[index]
            if len(r.ts) - len(unmeasured) > dropped_in:   # quiet intervals: a rate of 0
                peak_rate = max(peak_rate or 0.0, 0.0)
            result.append(Peak(finding, self.layer_of(finding), unit_of(finding), total, peak_rate,
                               peak_ts if total else None,
                               total / measured_s if measured_s > 0 else None, with_drops, len(unmeasured)))
        result.sort(key=lambda p: (p.unit != "drops", -p.total, -(p.peak_rate or 0.0), p.finding))
        return result

    def unmeasured(self) -> list[Unmeasured]:
        """Findings unmeasurable in some intervals (counter reset, source failing)."""
        r = self.recorded
        never = set(self.never_measured)
        found = [Unmeasured(finding, len(at), math.fsum(r.seconds[i] for i in at), r.ts[at[0]], r.ts[at[-1]])
                 for finding, at in r.gaps_at.items() if finding not in never]
        return sorted(found, key=lambda u: (-u.intervals, u.finding))
