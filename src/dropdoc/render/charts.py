"""Inline SVG line charts: no JavaScript, no external file, readable printed.

    line_chart_svg({"transport": [(t0, 12.0), (t1, None), (t2, 3.5)]}, "drop rate", "drops/s")

A None (or NaN/infinite) y is a gap: the line breaks there, and where no series has a value
the span is shaded and labelled "no data" - a gap must never look like zero. The y axis
always includes 0, so a rate is never exaggerated by a cut axis. Every piece of text is
XML-escaped, so names and titles taken from input cannot inject markup.
Layout is computed on values scaled by a power of ten, so huge or tiny values neither
overflow nor lose their tick labels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from html import escape as _html_escape

from .visible import visible
from .zones import UTC, describe

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in grey print.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#332288")
GAP_FILL = "#94a3b8"
TEXT = "#334155"
MUTED = "#64748b"
GRID = "#e2e8f0"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

_CHAR_W = 6.3         # average glyph width at 11 px, for laying out the legend
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
               86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 365 * 86400)
_TIME_MIN, _TIME_MAX = -6.2e10, 2.5e11   # what datetime can show (years 1 to 9999)

Series = Mapping[str, Sequence[tuple[float, float | None]]]


# Characters XML 1.0 forbids (C0 controls but tab/newline/return, surrogates, U+FFFE/F):
# a name with one of them would make the whole SVG unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    return _html_escape(_NOT_XML.sub("\ufffd", visible(str(text))))


def _number(value) -> float | None:
    """A finite float, or None for None/NaN/inf/anything not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _clean(series: Series) -> dict[str, list[tuple[float, float | None]]]:
    cleaned = {}
    for name, points in series.items():
        kept = []
        for point in points or ():
            try:
                x, y = point
            except (TypeError, ValueError):
                continue
            x = _number(x)
            if x is not None:
                kept.append((x, _number(y)))
        kept.sort(key=lambda p: p[0])
        cleaned[str(name)] = kept
    return cleaned


def _fmt(x: float) -> str:
    return f"{x:.1f}"


# -- scales ------------------------------------------------------------------------------

def _nice_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude * (1 + 1e-9):
            return factor * magnitude
    return 10.0 * magnitude


def _tick_label(mantissa: float, exponent: int) -> str:
    """mantissa * 10**exponent, compact (12k, 3.5M, 1.5e+300), exact in Decimal."""
    value = Decimal(repr(round(mantissa, 9))).scaleb(exponent)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    for limit, suffix in ((Decimal(10) ** 12, "T"), (Decimal(10) ** 9, "G"), (Decimal(10) ** 6, "M"),
                          (Decimal(10) ** 3, "k")):
        if limit <= magnitude < limit * 1000:
            return f"{value / limit:.3g}{suffix}"
    if Decimal("0.001") <= magnitude < 1000:
        return f"{value.normalize():f}" if magnitude >= 1 else f"{value:.3g}"
    return f"{value:.2e}"


class _YScale:
    """0 to a nice maximum (or a nice minimum to 0, or both signs) with ~5 ticks."""

    def __init__(self, values: Iterable[float]) -> None:
        values = list(values)
        biggest = max((abs(v) for v in values), default=0.0)
        self.exponent = math.floor(math.log10(biggest)) if biggest >= 1e-300 else 0
        scale = 10.0 ** self.exponent
        low = min([0.0, *(v / scale for v in values)]) if biggest >= 1e-300 else 0.0
        high = max([0.0, *(v / scale for v in values)]) if biggest >= 1e-300 else 0.0
        if high == low:
            high = 1.0
        self.step = _nice_step((high - low) / 4)
        self.low = math.floor(low / self.step + 1e-9) * self.step
        self.high = math.ceil(high / self.step - 1e-9) * self.step
        self.scale = scale

    def position(self, value: float) -> float:
        """0 at the bottom, 1 at the top."""
        return (value / self.scale - self.low) / (self.high - self.low)

    def ticks(self) -> list[tuple[float, str]]:
        count = round((self.high - self.low) / self.step)
        ticks = []
        for k in range(count + 1):
            mantissa = self.low + k * self.step
            ticks.append(((mantissa - self.low) / (self.high - self.low), _tick_label(mantissa, self.exponent)))
        return ticks


class _XScale:
    def __init__(self, xs: Sequence[float], is_time: bool, max_ticks: int, tz: tzinfo = UTC) -> None:
        low, high = min(xs), max(xs)
        self.tz = tz
        self.is_time = is_time and _TIME_MIN <= low and high <= _TIME_MAX
        if high == low:  # one x: centre it
            pad = 60.0 if self.is_time else max(abs(low) * 0.5, 1.0)
            low, high = low - pad, high + pad
            if not (math.isfinite(low) and math.isfinite(high)):
                low, high = (low if math.isfinite(low) else -1.7e308), (high if math.isfinite(high) else 1.7e308)
        self.low, self.high = low, high
        self.max_ticks = max(max_ticks, 2)

    def position(self, x: float) -> float:
        # Halves, so that the span of two extreme values cannot overflow.
        span = self.high * 0.5 - self.low * 0.5
        return (x * 0.5 - self.low * 0.5) / span if span > 0 else 0.5

    def ticks(self) -> list[tuple[float, str]]:
        if self.is_time:
            return self._time_ticks()
        span = self.high * 0.5 - self.low * 0.5
        if not span > 0:
            return []
        raw = span / ((self.max_ticks - 1) * 0.5)
        step = _nice_step(raw) if math.isfinite(raw) and raw > 0 else math.inf
        first, last = self.low / step, self.high / step
        if not (math.isfinite(step) and step > 0 and math.isfinite(first) and math.isfinite(last)) \
                or last - first > 50:
            return [(0.0, _tick_label(self.low, 0)), (1.0, _tick_label(self.high, 0))]
        exponent = math.floor(math.log10(step))
        return [(self.position(k * step), _tick_label(k * step / 10.0 ** exponent, exponent))
                for k in range(math.ceil(first - 1e-9), math.floor(last + 1e-9) + 1)]

    def _time_ticks(self) -> list[tuple[float, str]]:
        span = self.high - self.low
        step = next((s for s in _TIME_STEPS if span / s <= self.max_ticks - 1), _TIME_STEPS[-1])
        if step >= 86400:
            pattern = "%Y-%m-%d"
        elif span >= 86400:
            pattern = "%m-%d %H:%M"
        elif step < 60:
            pattern = "%H:%M:%S"
        else:
            pattern = "%H:%M"
        # Ticks on round times of the zone shown (its midnight, its hours), from the offset
        # at the start: a daylight-saving change inside the chart moves them by that hour.
        offset = datetime.fromtimestamp(self.low, tz=self.tz).utcoffset()
        shift = offset.total_seconds() if offset else 0.0
        ticks = []
        k = math.ceil((self.low + shift) / step)
        while k * step - shift <= self.high and len(ticks) < 60:
            at = k * step - shift
            ticks.append((self.position(at), datetime.fromtimestamp(at, tz=self.tz).strftime(pattern)))
            k += 1
        return ticks

    def caption(self) -> str:
        if not self.is_time:
            return ""
        first = datetime.fromtimestamp(self.low, tz=self.tz).strftime("%Y-%m-%d")
        last = datetime.fromtimestamp(self.high, tz=self.tz).strftime("%Y-%m-%d")
        return f"time ({describe(self.tz, self.high)}), {first}" + (f" to {last}" if last != first else "")


# -- drawing -----------------------------------------------------------------------------

def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive points with a value: the line breaks at every None."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


def _no_data_spans(series: dict[str, list[tuple[float, float | None]]]) -> list[tuple[float, float]]:
    """x spans where no series has a value: from the last x with a value before the run of
    empty xs to the first one after it (the chart's edge when there is none)."""
    has_value: dict[float, bool] = {}
    for points in series.values():
        for x, y in points:
            has_value[x] = has_value.get(x, False) or y is not None
    xs = sorted(has_value)
    spans, run_start = [], None
    for index, x in enumerate(xs):
        if not has_value[x] and run_start is None:
            run_start = index
        if has_value[x] and run_start is not None:
            spans.append((xs[run_start - 1] if run_start else xs[run_start], x))
            run_start = None
    if run_start is not None:
        spans.append((xs[run_start - 1] if run_start else xs[run_start], xs[-1]))
    return spans


def _legend(names: list[str], colors: dict[str, str], left: float, top: float, width: float) -> tuple[list[str], float]:
    """Legend entries laid out in rows; returns the SVG parts and the height used."""
    parts, x, y = [], left, top
    for name in names:
        label = name if len(name) <= 48 else name[:47] + "\u2026"
        item_w = 18 + len(label) * _CHAR_W + 14
        if x > left and x + item_w > left + width:
            x, y = left, y + 16
        parts.append(f'<rect x="{_fmt(x)}" y="{_fmt(y - 8)}" width="12" height="4" rx="1" fill="{colors[name]}"/>'
                     f'<text x="{_fmt(x + 17)}" y="{_fmt(y - 2)}" fill="{TEXT}">{escape(label)}'
                     f'<title>{escape(name)}</title></text>')
        x += item_w
    return parts, (y - top) + 16


def line_chart_svg(series: Series, title: str, y_label: str, x_is_time: bool = True,
                   width: int = 720, height: int = 240, colors: Mapping[str, str] | None = None,
                   tz: tzinfo = UTC, x_label: str = "", y_top: float | None = None) -> str:
    """An <svg> element: one line per series, None values drawn as gaps.

    `colors` maps series names to CSS colours (others take the palette in order); a time
    axis shows the times of zone `tz`, another one says what it is with `x_label`. The y
    axis reaches at least `y_top`: 100 for a share in %, or the same top for charts that
    are compared side by side."""
    width = max(int(width), 160)
    height = max(int(height), 120)
    data = _clean(series)
    names = list(data)
    palette = iter(PALETTE * (len(names) // len(PALETTE) + 1))
    colors = {name: (colors or {}).get(name) or next(palette) for name in names}

    left, right, bottom = 58.0, 14.0, 34.0
    legend_parts, legend_h = ([], 0.0)
    if len(names) > 1:
        legend_parts, legend_h = _legend(names, colors, left, 40.0, width - left - right)
    top = 30.0 + legend_h + 6.0
    plot_w, plot_h = width - left - right, max(height - top - bottom, 20.0)
    height = int(top + plot_h + bottom)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
            f'font-family="{escape(FONT)}" font-size="11">'),
           f"<title>{escape(title)}</title>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{_fmt(left)}" y="20" font-size="13" font-weight="600" fill="{TEXT}">{escape(title)}</text>',
           *legend_parts]

    xs = [x for points in data.values() for x, _ in points]
    ys = [y for points in data.values() for _, y in points if y is not None]
    top_value = _number(y_top)
    y_scale = _YScale(ys if top_value is None else [*ys, top_value])

    for fraction, label in y_scale.ticks():
        y = top + (1.0 - fraction) * plot_h
        out.append(f'<line x1="{_fmt(left)}" x2="{_fmt(left + plot_w)}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
                   f'stroke="{GRID}" stroke-width="1"/>'
                   f'<text x="{_fmt(left - 6)}" y="{_fmt(y + 3.5)}" text-anchor="end" fill="{MUTED}">{escape(label)}</text>')
    out.append(f'<text transform="translate(14 {_fmt(top + plot_h / 2)}) rotate(-90)" text-anchor="middle" '
               f'fill="{MUTED}">{escape(y_label)}</text>')

    if not xs:
        out.append(_no_data_rect(left, top, plot_w, plot_h))
    else:
        x_scale = _XScale(xs, x_is_time, int(plot_w // 95) + 1, tz)

        def px(x: float) -> float:
            return left + x_scale.position(x) * plot_w

        def py(y: float) -> float:
            return top + (1.0 - y_scale.position(y)) * plot_h

        for fraction, label in x_scale.ticks():
            x = left + fraction * plot_w
            # a label at the right edge would be cut off: end it at its tick instead
            anchor = "end" if x + len(label) * _CHAR_W / 2 > width - 2 else "middle"
            out.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{_fmt(top + plot_h)}" y2="{_fmt(top + plot_h + 4)}" '
                       f'stroke="{MUTED}"/><text x="{_fmt(x)}" y="{_fmt(top + plot_h + 16)}" text-anchor="{anchor}" '
                       f'fill="{MUTED}">{escape(label)}</text>')
        caption = x_scale.caption() or x_label
        if caption:
            out.append(f'<text x="{_fmt(left + plot_w)}" y="{_fmt(top + plot_h + 30)}" text-anchor="end" '
                       f'fill="{MUTED}" font-size="10">{escape(caption)}</text>')
        spans = _no_data_spans(data) if ys else [(x_scale.low, x_scale.high)]
        for start, end in spans:
            x0, x1 = px(start), px(end)
            out.append(_no_data_rect(x0, top, max(x1 - x0, 2.0), plot_h))
        baseline = py(0.0)
        for name in names:
            color = colors[name]
            parts = [f'<g class="series" stroke="{color}" fill="{color}"><title>{escape(name)}</title>']
            for run in _segments(data[name]):
                coords = " ".join(f"{_fmt(px(x))},{_fmt(py(y))}" for x, y in run)
                if len(run) == 1:
                    parts.append(f'<circle cx="{_fmt(px(run[0][0]))}" cy="{_fmt(py(run[0][1]))}" r="2.6" stroke="none"/>')
                    continue
                if len(names) == 1:  # a lone series gets a light area, easier to read at a glance
                    parts.append(f'<polygon points="{_fmt(px(run[0][0]))},{_fmt(baseline)} {coords} '
                                 f'{_fmt(px(run[-1][0]))},{_fmt(baseline)}" fill-opacity="0.12" stroke="none"/>')
                parts.append(f'<polyline points="{coords}" fill="none" stroke-width="1.8" '
                             f'stroke-linejoin="round" stroke-linecap="round"/>')
            parts.append("</g>")
            out.append("".join(parts))
    out.append(f'<line x1="{_fmt(left)}" x2="{_fmt(left + plot_w)}" y1="{_fmt(top + plot_h)}" '
               f'y2="{_fmt(top + plot_h)}" stroke="{MUTED}" stroke-width="1"/>')
    out.append("</svg>")
    return "\n".join(out)


def _no_data_rect(x: float, top: float, w: float, h: float) -> str:
    label = (f'<text x="{_fmt(x + w / 2)}" y="{_fmt(top + 14)}" text-anchor="middle" fill="{MUTED}" '
             f'font-size="10">no data</text>') if w >= 44 else ""
    return (f'<g class="gap"><rect x="{_fmt(x)}" y="{_fmt(top)}" width="{_fmt(w)}" height="{_fmt(h)}" '
            f'fill="{GAP_FILL}" fill-opacity="0.18"/>{label}</g>')
