"""`dropdoc watch`: what the live view, the log lines and the JSON lines show.

Pure functions over a WatchState (the intervals seen so far): no clock reads, no I/O, so
tests render them to a string with a fixed-width Console. The command only feeds
intervals in and prints what comes out.

Rates are per interval (drops / interval seconds). A finding that could not be measured
in an interval (None: counter missing or reset) is a gap: blank in the sparkline, "-" as a
rate, left out of totals - never shown as zero.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..history import iso
from ..meter import NOT_DROPS, Interval
from ..rules.engine import load_rules
from .sparkline import sparkline

JSON_SCHEMA = "dropdoc.watch/1"


@dataclass
class WatchState:
    """Everything the view shows, accumulated interval by interval."""
    host: str
    netns: str | None
    interval: float                       # seconds between samples (requested)
    window: int                           # intervals kept for the rows and sparklines
    started: float                        # the baseline sample, on the clock `now` comes from
    recording: str | None = None          # history file, when recording
    recorded: int | None = None           # samples in that file
    retention: str | None = None
    notice: str | None = None             # something the recorder did, shown once (e.g. clock set back)
    recent: deque = field(default_factory=deque)          # the last `window` Intervals
    totals: dict[str, int] = field(default_factory=dict)  # since start, measured intervals only
    peaks: dict[str, float] = field(default_factory=dict)  # highest rate per interval since start
    ever_measured: set[str] = field(default_factory=set)
    intervals: int = 0

    def add(self, interval: Interval) -> None:
        self.intervals += 1
        self.recent.append(interval)
        while len(self.recent) > self.window:
            self.recent.popleft()
        for finding, value in interval.drops.items():
            if value is None:
                continue
            self.ever_measured.add(finding)
            self.totals[finding] = self.totals.get(finding, 0) + value
            rate = interval.rate(finding)
            if rate is not None and rate > self.peaks.get(finding, 0.0):
                self.peaks[finding] = rate

    @property
    def latest(self) -> Interval | None:
        return self.recent[-1] if self.recent else None


@dataclass(frozen=True)
class Row:
    finding: str
    layer: str
    unit: str                      # "drops", or what a NOT_DROPS finding counts
    now: float | None              # rate in the latest interval (None: not measurable then)
    peak: float                    # highest rate since start
    total: int                     # since start
    recent: int                    # in the window: what the rows are sorted by
    series: tuple[float | None, ...]  # rate per interval of the window, oldest first


def _layers() -> dict[str, str]:
    return {rule.id: rule.layer for rule in load_rules()}


def rows(state: WatchState) -> list[Row]:
    """One row per finding that counted something in the window, most recent harm first:
    drops in the window, then the rate now; counters of things that are not drops
    (time squeezes) after every drop."""
    layers = _layers()
    found = []
    for finding in sorted({f for iv in state.recent for f, v in iv.drops.items() if v}):
        series = tuple(iv.rate(finding) for iv in state.recent)
        found.append(Row(finding=finding, layer=layers.get(finding, "?"), unit=NOT_DROPS.get(finding, "drops"),
                         now=series[-1], peak=state.peaks.get(finding, 0.0), total=state.totals.get(finding, 0),
                         recent=sum(iv.drops.get(finding) or 0 for iv in state.recent), series=series))
    found.sort(key=lambda r: (r.unit != "drops", -r.recent, -(r.now or 0.0), r.finding))
    return found


def quiet_and_unmeasurable(state: WatchState) -> tuple[list[str], list[str]]:
    """Findings without drops in the window: measured and quiet, or not measurable now."""
    latest = state.latest
    if latest is None:
        return [], []
    dropped = {r.finding for r in rows(state)}
    quiet, unmeasurable = [], []
    for finding in sorted(latest.drops):
        if finding in dropped:
            continue
        (unmeasurable if latest.drops[finding] is None else quiet).append(finding)
    return quiet, unmeasurable


def sources_not_ok(interval: Interval | None) -> dict[str, str]:
    return {} if interval is None else {n: s for n, s in sorted(interval.coverage.items()) if s != "ok"}


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate == 0:
        return "0"
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def fmt_elapsed(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _where(state: WatchState) -> str:
    return f"netns {state.netns}" if state.netns else "host network namespace"


def header(state: WatchState, now: float) -> Text:
    line = Text("dropdoc watch", style="bold")
    line.append(f"  {state.host} · {_where(state)} · {fmt_elapsed(now - state.started)} elapsed · "
                f"every {state.interval:g} s · {state.intervals} intervals")
    latest = state.latest
    if latest is not None and latest.lost:
        line.append(f"\nnot measured in the last interval: {latest.lost}", style="bold yellow")
    bad = sources_not_ok(latest)
    if bad:
        line.append("\nsources not ok: ", style="yellow")
        line.append(", ".join(f"{name} ({status})" for name, status in bad.items()), style="yellow")
    return line


# Room kept for the finding's name before a number column is left out, and the room left
# after the numbers below which the layer column is; a sparkline narrower than
# _SPARK_MIN is left out too.
_FINDING_MIN = 8
_LAYER_NEEDS = 32
_SPARK_MIN = 8


def table(state: WatchState, width: int) -> Table:
    """The rows as a table `width` columns wide. On a narrow terminal the sparkline, the
    layer and then the peak and total columns are left out and finding names cut (with …):
    a number is never cut."""
    found = rows(state)
    headers = ("now /s", "peak /s", "total")
    cells = [(row, {"now /s": fmt_rate(row.now), "peak /s": fmt_rate(row.peak), "total": f"{row.total:,}"})
             for row in found]
    sizes = {h: max([len(h), *(len(c[h]) for _, c in cells)]) for h in headers}
    budget, shown = width - _FINDING_MIN, set()
    for header in ("now /s", "total", "peak /s"):      # what matters most first
        if budget >= sizes[header] + 2:
            shown.add(header)
            budget -= sizes[header] + 2
    show_layer = budget >= _LAYER_NEEDS
    others = sum(sizes[h] + 2 for h in shown) + (max(len(r.layer) for r in found) + 2 if show_layer else 0)
    names = max(len(r.finding) + (0 if r.unit == "drops" else len(r.unit) + 1) for r in found)
    spark = min(state.window, width - others - names - 2) if len(shown) == len(headers) else 0
    spark = spark if spark >= _SPARK_MIN else 0
    others += spark + 2 if spark else 0
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    grid.add_column("finding", no_wrap=True, overflow="ellipsis", max_width=max(width - others, 1))
    if show_layer:
        grid.add_column("layer", no_wrap=True)
    for header in (h for h in headers if h in shown):
        grid.add_column(header, justify="right", no_wrap=True, min_width=sizes[header])
    if spark:
        title = f"last {spark * state.interval:g} s"
        grid.add_column(title, no_wrap=True, min_width=max(spark, len(title)))
    for row, texts in cells:
        unit = "" if row.unit == "drops" else f" {row.unit}"
        style = "dim" if row.unit != "drops" else ("bold red" if row.now else "")
        line = [Text(row.finding + unit, style=style), *([row.layer] if show_layer else []),
                *(texts[h] for h in headers if h in shown)]
        if spark:
            line.append(Text(sparkline(row.series, spark).rjust(spark), style="cyan"))
        grid.add_row(*line)
    return grid


def render(state: WatchState, width: int = 100, now: float | None = None) -> RenderableType:
    """The whole live view for a terminal `width` columns wide."""
    now = state.started if now is None else now
    parts: list[RenderableType] = [header(state, now)]
    if state.latest is None:
        parts.append(Text(f"waiting for the first interval ({state.interval:g} s) ...", style="dim"))
    elif rows(state):
        parts.append(table(state, width))
    else:
        seconds = sum(iv.seconds for iv in state.recent)
        parts.append(Text(f"no drops in the last {seconds:.0f} s", style="green"))
    quiet, unmeasurable = quiet_and_unmeasurable(state)
    if state.latest is not None:
        line = Text(f"quiet: {len(quiet)} findings measured without drops", style="dim")
        if unmeasurable:
            line.append(f"; not measurable here: {', '.join(unmeasurable)}", style="dim")
        parts.append(line)
    parts.append(footer(state))
    return Group(*parts)


def footer(state: WatchState) -> Text:
    if state.recording is None:
        return Text("not recording (--record FILE keeps a history) · Ctrl-C to stop", style="dim")
    count = "?" if state.recorded is None else f"{state.recorded:,}"
    keep = f", keeping {state.retention}" if state.retention else ""
    text = Text(f"recording to {state.recording}: {count} samples{keep} · Ctrl-C to stop", style="dim")
    if state.notice:
        text.append(f"\n{state.notice}", style="yellow")
    return text


def plain_line(state: WatchState, interval: Interval) -> str:
    """One log line for an interval already added to `state`: the non-zero rates, most
    drops first, or "no drops"; findings that were measurable before and are not now are
    named (a gap, not a quiet interval)."""
    if interval.lost:
        return f"{iso(interval.wall)} not measured: {interval.lost}"
    dropped = sorted(((f, v) for f, v in interval.drops.items() if v), key=lambda fv: (-fv[1], fv[0]))
    parts = [f"{f}={fmt_rate(interval.rate(f))}/s({v})" + (f" {NOT_DROPS[f]}" if f in NOT_DROPS else "")
             for f, v in dropped]
    line = f"{iso(interval.wall)} {' '.join(parts) if parts else 'no drops'}"
    lost = sorted(f for f, v in interval.drops.items() if v is None and f in state.ever_measured)
    if lost:
        line += f" | not measurable now: {', '.join(lost)}"
    return line


def json_line(state: WatchState, interval: Interval) -> dict[str, Any]:
    """One JSON Lines record per interval (schema dropdoc.watch/1). `drops` has every
    finding: a number, or null when it could not be measured in this interval."""
    return {
        "schema": JSON_SCHEMA,
        "time": interval.wall,
        "seconds": round(interval.seconds, 6),
        "host": state.host,
        "netns": state.netns,
        "drops": dict(sorted(interval.drops.items())),
        "rate_per_s": {f: round(interval.rate(f) or 0.0, 3) for f, v in sorted(interval.drops.items()) if v},
        "not_drops": sorted(f for f in NOT_DROPS if f in interval.drops),
        "sources_not_ok": sources_not_ok(interval),
        "lost": interval.lost,            # why nothing was measured in this interval (else null)
        "totals": dict(sorted(state.totals.items())),
        "recorded": state.recorded,
    }


def new_state(host: str, netns: str | None, interval: float, window_s: float, **extra: Any) -> WatchState:
    """A state keeping `window_s` seconds of intervals (at least one)."""
    window = max(1, round(window_s / interval))
    return WatchState(host=host, netns=netns, interval=interval, window=window,
                      started=extra.pop("started", time.time()), **extra)
