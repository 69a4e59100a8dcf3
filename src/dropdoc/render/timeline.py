"""Drop rates over time from a recorded history: series per layer and per finding, peaks,
and the gaps - pure functions over `history.Sample` lists, shared by the HTML and Markdown
reports.

Two kinds of gap are kept apart from zero everywhere:
  * not recording: time between two samples that no sample covers (dropdoc watch was not
    running) - every series is None there;
  * not measurable: a finding whose counters were missing or reset in an interval
    (`Sample.gaps`) - that finding's series is None there, and so is its layer's (a sum
    missing one of its parts would be a wrong number, not a smaller one).
Findings that were never measurable in the whole history (no such counter on this host)
are left out of the layer sums and listed instead.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from ..history import Sample
from ..meter import NOT_DROPS
from ..rules.engine import LAYERS, load_rules

Point = tuple[float, float | None]          # (x, y); y None = a gap
Span = tuple[float, float, float | None]    # (start, end, rate) of one recorded interval

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


def _sane(sample: Sample) -> Sample | None:
    """A sample as the report can use it, from a file that may have been damaged or edited:
    None without a finite time; an interval of no (or no believable) length measured
    nothing; a negative or non-integer count is not a count - that finding is unknown."""
    if not isinstance(sample.ts, (int, float)) or not math.isfinite(sample.ts):
        return None
    seconds = sample.seconds if isinstance(sample.seconds, (int, float)) and math.isfinite(sample.seconds) else 0.0
    drops = {f: v for f, v in sample.drops.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    gaps = tuple(sorted({*sample.gaps, *(f for f in sample.drops if f not in drops)}))
    if seconds == sample.seconds and len(drops) == len(sample.drops) and gaps == tuple(sample.gaps):
        return sample
    return Sample(sample.ts, max(seconds, 0.0), drops, gaps)


def _start(sample: Sample) -> float:
    return sample.ts - max(sample.seconds, 0.0)


class Timeline:
    """A recorded history, oldest sample first."""

    def __init__(self, samples: Sequence[Sample], layers_of: dict[str, str] | None = None) -> None:
        cleaned = [_sane(s) for s in samples]
        self.samples = sorted((s for s in cleaned if s is not None), key=lambda s: s.ts)
        self.damaged = len(cleaned) - len(self.samples)   # rows with no place in time, left out
        self.layers_of = finding_layers() if layers_of is None else dict(layers_of)
        self._finding_rates: dict[str, list[float | None]] = {}
        self._layer_rates: dict[str, list[float | None]] = {}

    # -- the recorded period ---------------------------------------------------------

    @cached_property
    def start(self) -> float | None:
        """The earliest recorded moment (a long interval may start before the first one)."""
        return min(_start(s) for s in self.samples) if self.samples else None

    @property
    def end(self) -> float | None:
        return self.samples[-1].ts if self.samples else None

    @cached_property
    def typical_interval(self) -> float | None:
        positive = [s.seconds for s in self.samples if s.seconds > 0]
        return statistics.median(positive) if positive else None

    @cached_property
    def recording_gaps(self) -> list[RecordingGap]:
        """Stretches no sample covers: dropdoc was not recording."""
        tolerance = 0.5 * (self.typical_interval or 0.0) + 0.05
        return [RecordingGap(previous.ts, _start(current))
                for previous, current in zip(self.samples, self.samples[1:])
                if _start(current) - previous.ts > tolerance]

    def recorded_seconds(self) -> float:
        return sum(max(s.seconds, 0.0) for s in self.samples)

    def coverage_ratio(self) -> float | None:
        """Share of the period from the first to the last sample that samples cover."""
        if not self.samples or self.end <= self.start:
            return None
        return min(self.recorded_seconds() / (self.end - self.start), 1.0)

    # -- findings ----------------------------------------------------------------------

    @cached_property
    def findings_seen(self) -> list[str]:
        """Every finding that dropped or was unmeasurable at least once, catalogue order."""
        seen = {f for s in self.samples for f in (*s.drops, *s.gaps)}
        known = [f for f in self.layers_of if f in seen]
        return known + sorted(seen - set(known))

    @cached_property
    def never_measured(self) -> list[str]:
        """Findings unmeasurable in every sample: no such counter here."""
        if not self.samples:
            return []
        always = set(self.samples[0].gaps)
        for sample in self.samples[1:]:
            always &= set(sample.gaps)
        return [f for f in self.findings_seen if f in always]

    def layer_of(self, finding: str) -> str:
        return self.layers_of.get(finding, UNKNOWN_LAYER)

    @cached_property
    def layers(self) -> list[str]:
        names = list(LAYERS)
        if any(f not in self.layers_of for s in self.samples for f in s.drops):
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

    def rate(self, sample: Sample, finding: str) -> float | None:
        if finding in sample.gaps or not sample.seconds > 0:
            return None
        return sample.drops.get(finding, 0) / sample.seconds

    def layer_rate(self, sample: Sample, layer: str) -> float | None:
        """Drops/s of a layer in one sample; None when one of its findings (one that is
        measurable at other times) was not measurable then."""
        if not sample.seconds > 0:
            return None
        members = self._layer_members.get(layer, frozenset())
        if not members.isdisjoint(sample.gaps):
            return None
        return sum(v for f, v in sample.drops.items() if f in members) / sample.seconds

    # -- series ------------------------------------------------------------------------

    def _points(self, values: list[float | None]) -> list[Point]:
        """One point per sample (at its end) with a None inside each recording gap, so a
        line breaks there instead of bridging time nobody measured."""
        gap_ends = {gap.end for gap in self.recording_gaps}
        points: list[Point] = []
        for sample, value in zip(self.samples, values):
            if points and _start(sample) in gap_ends:
                points.append(((points[-1][0] + _start(sample)) / 2, None))
            points.append((sample.ts, value))
        return points

    def finding_rates(self, finding: str) -> list[float | None]:
        """The finding's rate in each sample (None: not measurable then)."""
        if finding not in self._finding_rates:
            self._finding_rates[finding] = [self.rate(s, finding) for s in self.samples]
        return self._finding_rates[finding]

    def layer_rates(self, layer: str) -> list[float | None]:
        if layer not in self._layer_rates:
            self._layer_rates[layer] = [self.layer_rate(s, layer) for s in self.samples]
        return self._layer_rates[layer]

    def finding_series(self, finding: str) -> list[Point]:
        return self._points(self.finding_rates(finding))

    def layer_series(self, layer: str) -> list[Point]:
        return self._points(self.layer_rates(layer))

    def finding_spans(self, finding: str) -> list[Span]:
        return [(_start(s), s.ts, r) for s, r in zip(self.samples, self.finding_rates(finding))]

    def layer_spans(self, layer: str) -> list[Span]:
        return [(_start(s), s.ts, r) for s, r in zip(self.samples, self.layer_rates(layer))]

    # -- summaries ---------------------------------------------------------------------

    def peaks(self) -> list[Peak]:
        """Each finding that dropped or was sometimes unmeasurable: drops first, worst first."""
        never = set(self.never_measured)
        result = []
        for finding in self.findings_seen:
            if finding in never:
                continue
            total, with_drops, unmeasured, measured_s = 0, 0, 0, 0.0
            peak_rate: float | None = None
            peak_ts: float | None = None
            for sample in self.samples:
                rate = self.rate(sample, finding)
                if rate is None:
                    unmeasured += 1
                    continue
                measured_s += sample.seconds
                value = sample.drops.get(finding, 0)
                total += value
                with_drops += value > 0
                if peak_rate is None or rate > peak_rate:
                    peak_rate, peak_ts = rate, sample.ts
            result.append(Peak(finding, self.layer_of(finding), unit_of(finding), total, peak_rate,
                               peak_ts if total else None,
                               total / measured_s if measured_s > 0 else None, with_drops, unmeasured))
        result.sort(key=lambda p: (p.unit != "drops", -p.total, -(p.peak_rate or 0.0), p.finding))
        return result

    def unmeasured(self) -> list[Unmeasured]:
        """Findings unmeasurable in some intervals (counter reset, source failing)."""
        never = set(self.never_measured)
        found: dict[str, Unmeasured] = {}
        for sample in self.samples:
            for finding in sample.gaps:
                if finding in never:
                    continue
                entry = found.setdefault(finding, Unmeasured(finding, 0, 0.0, sample.ts, sample.ts))
                entry.intervals += 1
                entry.seconds += max(sample.seconds, 0.0)
                entry.last = sample.ts
        return sorted(found.values(), key=lambda u: (-u.intervals, u.finding))


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


def bucket_coverage(spans: Sequence[Span], bucket_s: float, buckets: Sequence[float],
                    start: float, end: float) -> list[float]:
    """For each bucket (by its start), the share of it inside [start, end] that the spans
    cover: below 1 where the recorder was not running for part of the bucket."""
    result = []
    ordered = sorted((a, b) for a, b, _ in spans if math.isfinite(a) and math.isfinite(b) and b > a)
    for bucket in buckets:
        low, high = max(bucket, start), min(bucket + bucket_s, end)
        if high <= low:
            result.append(1.0)
            continue
        covered, reach = 0.0, low
        for a, b in ordered:  # spans are ordered and normally disjoint: sweep once per bucket
            if b <= reach:
                continue
            if a >= high:
                break
            covered += min(b, high) - max(a, reach)
            reach = min(b, high)
        result.append(min(covered / (high - low), 1.0))
    return result


def bucket_peaks(spans: Sequence[Span], bucket_s: float) -> list[Point]:
    """(bucket start, highest rate of the intervals overlapping it) for every bucket from
    the first interval's to the last one's. A bucket no interval covers, or covered only
    by unmeasurable ones, is None - never 0."""
    if not bucket_s > 0:
        return []
    floor, ceil, isfinite = math.floor, math.ceil, math.isfinite
    placed = []
    for start, end, value in spans:
        if isfinite(start) and isfinite(end) and end >= start:
            low = floor(start / bucket_s)
            high = max(low, ceil(end / bucket_s) - 1)  # an interval ending on a boundary stays left of it
            placed.append((low, high, value if value is not None and isfinite(value) else None))
    if not placed:
        return []
    first = min(low for low, _, _ in placed)
    last = max(high for _, high, _ in placed)
    if last - first >= MAX_BUCKETS:
        raise ValueError(f"{last - first + 1} buckets of {bucket_s:g} s: choose a larger bucket")
    missing = object()
    peaks: list = [missing] * (last - first + 1)   # missing: no interval; None: unmeasurable
    for low, high, value in placed:
        for index in range(low - first, high - first + 1):
            current = peaks[index]
            if value is not None:
                if current is missing or current is None or value > current:
                    peaks[index] = value
            elif current is missing:
                peaks[index] = None
    return [((first + i) * bucket_s, None if p is missing else p) for i, p in enumerate(peaks)]
