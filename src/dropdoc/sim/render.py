"""Simulation results for people: a table per stage, occupancy and drops over time as text
(sparklines) and as a self-contained HTML page (inline SVG charts), and before/after for a
what-if."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..render.sparkline import sparkline
from .explain import _fmt
from .model import STAGE_ORDER, SimResult, StageResult

CHART_WIDTH = 60


def _stages(result: SimResult) -> list[StageResult]:
    return [result.stages[k] for k in STAGE_ORDER if k in result.stages]


def _loaded(st: StageResult) -> bool:
    return st.offered > 0 or st.dropped > 0


def _limit(st: StageResult) -> str:
    return "none" if math.isinf(st.limit) else _fmt(st.limit)


def _per_s(value: float, seconds: float) -> str:
    return _fmt(value / seconds)


def stage_table(result: SimResult, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, justify in (("stage (finding)", "left"), ("offered/s", "right"), ("delivered/s", "right"),
                          ("dropped/s", "right"), ("peak/limit", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for st in _stages(result):
        style = "bold red" if st.dropped >= 0.5 else ("dim" if not _loaded(st) else "")
        table.add_row(st.finding, _per_s(st.offered, result.seconds), _per_s(st.delivered, result.seconds),
                      _per_s(st.dropped, result.seconds), _peak_limit(st), style=style)
    return table


def _peak_limit(st: StageResult) -> str:
    """'17/17', or '1,024/1,024 x8' for one of 8 identical per-queue/per-CPU queues."""
    text = f"{_fmt(st.peak)}/{_limit(st)}"
    return f"{text} x{st.instances}" if st.instances > 1 else text


def _chart_lines(result: SimResult, width: int = CHART_WIDTH) -> list[tuple[str, str, str]]:
    """(label, sparkline, note) per loaded stage: occupancy as a share of the limit, and
    drops per second; both resampled to `width` columns keeping each column's peak."""
    rows = []
    for st in _stages(result):
        if not _loaded(st):
            continue
        occ = _resample([v for _, v in result.occupancy.get(st.finding, [])], width)
        drops = _resample([v for _, v in result.drops_over_time.get(st.finding, [])], width)
        fill = [min(v / st.limit, 1.0) if st.limit and not math.isinf(st.limit) else 0.0 for v in occ]
        rows.append((f"{st.finding} queue", _fixed_scale(fill), f"peak {_fmt(st.peak)}/{_limit(st)}"))
        if st.dropped >= 0.5:
            rows.append((f"{st.finding} drops", sparkline(drops), f"peak {_fmt(max(drops, default=0))}/s"))
    return rows


def _fixed_scale(fractions: list[float]) -> str:
    """Queue fill on an absolute 0..100 % scale (a sparkline scales to its own peak: a queue
    at 3 % must not look full)."""
    blocks = "▁▂▃▄▅▆▇█"
    top = len(blocks) - 1
    return "".join(blocks[min(top, math.ceil(f * top)) if f > 1e-9 else 0] for f in fractions)


def _resample(values: list[float], width: int) -> list[float]:
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        lo = i * len(values) // width
        hi = max((i + 1) * len(values) // width, lo + 1)
        out.append(max(values[lo:hi]))
    return out


def render_text(result: SimResult, console: Console, title: str | None = None) -> None:
    p = result.params
    head = title or f"dropdoc sim - {result.seconds:g} s simulated, dt {result.dt * 1e3:g} ms, seed {p.seed}"
    console.print(Text(head, style="bold"))
    console.print(stage_table(result))
    if result.squeezes_per_s >= 0.5:
        console.print(f"softirq rounds out of budget (time_squeeze): {_fmt(result.squeezes_per_s)}/s")
    label_w = max((len(f"{st.finding} drops") for st in _stages(result) if _loaded(st)), default=0)
    width = max(10, min(CHART_WIDTH, console.width - label_w - 22))
    rows = _chart_lines(result, width)
    if rows:
        console.print(Text(f"over time, 0 .. {result.seconds:g} s (queue: share of its limit)", style="bold"))
        for label, line, note in rows:
            console.print(f"  {label:<{label_w}} {line} {note}", highlight=False, soft_wrap=True)
    verdict = f"bottleneck: {result.bottleneck}" if result.bottleneck else "bottleneck: none (no drops predicted)"
    console.print(Text(verdict, style="bold red" if result.bottleneck else "bold green"))
    console.print(result.explain, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", style="dim", highlight=False)


def render_compare(before: SimResult, after: SimResult, changes: dict[str, Any], console: Console) -> None:
    """Before/after side by side: the what-if answer."""
    change_text = ", ".join(f"{k}={v}" for k, v in changes.items())
    console.print(Text(f"dropdoc sim what-if: {change_text} ({before.seconds:g} s simulated each)", style="bold"))
    table = Table(title_justify="left")
    for name, justify in (("stage (finding)", "left"), ("drops/s before", "right"),
                          ("after", "right"), ("peak/limit before", "right"), ("after", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for key in STAGE_ORDER:
        b, a = before.stages.get(key), after.stages.get(key)
        if b is None and a is None:
            continue
        if not (_loaded(b) if b else False) and not (_loaded(a) if a else False):
            continue
        table.add_row(key,
                      _per_s(b.dropped, before.seconds) if b else "-", _per_s(a.dropped, after.seconds) if a else "-",
                      _peak_limit(b) if b else "-", _peak_limit(a) if a else "-",
                      style="bold" if b and a and abs(b.dropped - a.dropped) >= 0.5 else "")
    console.print(table)
    total_b, total_a = before.total_drops_per_s, after.total_drops_per_s
    console.print(f"total drops/s: {_fmt(total_b)} -> {_fmt(total_a)}", highlight=False)
    console.print(Text("before: ", style="bold") + Text(before.explain))
    console.print(Text("after:  ", style="bold") + Text(after.explain))


# ---- HTML ------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1e293b;
max-width:960px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}
td,th{border-bottom:1px solid #e2e8f0;padding:.3em .7em;text-align:right}td:first-child,
th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}tr.drop td{color:#b91c1c;font-weight:600}
.explain{background:#f8fafc;border-left:4px solid #0072B2;padding:.6em 1em}.note{color:#64748b}
code{background:#f1f5f9;padding:0 .2em}"""


def _series(result: SimResult, kind: str) -> dict[str, list[tuple[float, float | None]]]:
    out = {}
    for st in _stages(result):
        if not _loaded(st):
            continue
        if kind == "occupancy":
            if not st.limit or math.isinf(st.limit):
                continue
            out[st.finding] = [(t, 100.0 * v / st.limit) for t, v in result.occupancy.get(st.finding, [])]
        elif st.dropped >= 0.5:
            out[st.finding] = list(result.drops_over_time.get(st.finding, []))
    return out


def _peak_drop_rate(result: SimResult) -> float:
    return max((y for points in _series(result, "drops").values() for _, y in points if y is not None), default=0.0)


def _charts(result: SimResult, label: str = "", drops_top: float | None = None) -> str:
    """Occupancy on a fixed 0-100 % axis (a queue at 3 % must look nearly empty) and drops
    per second up to `drops_top` (the same top before and after a what-if, so the two
    compare at a glance)."""
    from ..render.charts import PALETTE, line_chart_svg

    # one colour per stage in every chart (before, after, occupancy, drops)
    colors = {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(STAGE_ORDER)}
    parts = []
    occupancy = _series(result, "occupancy")
    if occupancy:
        parts.append(line_chart_svg(occupancy, f"{label}queue occupancy (% of limit)", "% of limit",
                                    x_is_time=False, colors=colors, x_label="simulated time (s)", y_top=100.0))
    drops = _series(result, "drops")
    if drops:
        parts.append(line_chart_svg(drops, f"{label}drops per second", "drops/s", x_is_time=False, colors=colors,
                                    x_label="simulated time (s)", y_top=drops_top))
    return "\n".join(parts)


def _table_html(result: SimResult) -> str:
    rows = ["<tr><th>stage</th><th>finding</th><th>offered/s</th><th>delivered/s</th><th>dropped/s</th>"
            "<th>peak / limit</th></tr>"]
    for st in _stages(result):
        cls = ' class="drop"' if st.dropped >= 0.5 else ""
        rows.append(f"<tr{cls}><td>{html.escape(st.name)}</td><td><code>{st.finding}</code></td>"
                    f"<td>{_per_s(st.offered, result.seconds)}</td><td>{_per_s(st.delivered, result.seconds)}</td>"
                    f"<td>{_per_s(st.dropped, result.seconds)}</td>"
                    f"<td>{_fmt(st.peak)} / {_limit(st)} {html.escape(st.unit)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _verdict_html(result: SimResult) -> str:
    verdict = f"bottleneck: <code>{result.bottleneck}</code>" if result.bottleneck else "no drops predicted"
    notes = "".join(f'<p class="note">note: {html.escape(n)}</p>' for n in result.notes)
    return f'<div class="explain"><p><b>{verdict}</b></p><p>{html.escape(result.explain)}</p></div>{notes}'


def render_html(result: SimResult, after: SimResult | None = None, changes: dict[str, Any] | None = None,
                calibration: list[str] | None = None) -> str:
    title = "dropdoc sim"
    body = [f"<h1>{title}</h1>",
            f"<p>{result.seconds:g} s simulated, step {result.dt * 1e3:g} ms, seed {result.params.seed}.</p>"]
    if calibration:
        body.append("<pre>" + html.escape("\n".join(calibration)) + "</pre>")
    if after is not None:
        change_text = ", ".join(f"{k}={v}" for k, v in (changes or {}).items())
        top = max(_peak_drop_rate(result), _peak_drop_rate(after))
        body.append(f"<h2>before</h2>{_table_html(result)}{_verdict_html(result)}{_charts(result, 'before: ', top)}")
        body.append(f"<h2>after {html.escape(change_text)}</h2>{_table_html(after)}{_verdict_html(after)}"
                    f"{_charts(after, 'after: ', top)}")
    else:
        body.append(_table_html(result) + _verdict_html(result) + _charts(result))
    params = json.dumps(result.params.to_dict(), indent=1, sort_keys=True)
    body.append(f"<details><summary>parameters</summary><pre>{html.escape(params)}</pre></details>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
