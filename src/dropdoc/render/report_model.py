"""The content of a report, built once from the inputs and rendered by html.py and
markdown.py: both say the same things, only the markup differs.

Values stay raw strings here (escaping is the renderers' job); numbers are formatted
once, with a missing value shown as "n/a" and never as 0.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, tzinfo
from typing import Any

from ..rules.engine import LAYERS, load_rules
from .report_inputs import DiagnosisInput, HistoryInput, ReportInput
from .timeline import Point, Timeline, choose_bucket
from .zones import UTC, describe, offset_text

NA = "n/a"
SEVERITIES = ("critical", "warning", "info")
MAX_CHART_POINTS = 600      # per-sample points up to this, peaks per bucket beyond
MAX_TABLE_ROWS = 24         # the Markdown per-bucket table
MAX_LISTED = 20             # rows of a gap list before "... and N more"

# Subject columns in the order a reader wants them; other keys follow in their own order.
SUBJECT_ORDER = ("socket", "rule", "device", "cpu", "pid", "process", "backlog", "somaxconn", "capped_by",
                 "accept_queue", "full_samples", "samples", "drops", "bytes", "rx_queue", "rcvbuf")


# -- formatting --------------------------------------------------------------------------

def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_count(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"   # exact: a u64 counter is beyond what a float holds
    number = _finite(value)
    if number is None:
        return NA if value is None or isinstance(value, (int, float)) else plain(value)
    return f"{int(number):,}" if number == int(number) and abs(number) < 1e15 else f"{number:.4g}"


def fmt_rate(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return NA
    if number == 0:
        return "0"
    if abs(number) < 0.1:
        return f"{number:.2g}"
    if abs(number) >= 1e15:
        return f"{number:.3g}"
    return f"{number:,.0f}" if abs(number) >= 1e6 else f"{number:,.1f}"


def fmt_seconds(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return NA
    if number < 120:
        return f"{number:.1f} s" if number < 10 else f"{number:.0f} s"
    if number < 7200:
        return f"{number / 60:.1f} min"
    if number < 172800:
        return f"{number / 3600:.1f} h"
    return f"{number / 86400:.1f} d" if number < 86400e6 else f"{number / 86400:.3g} d"


def fmt_time(ts: Any, date: bool = True, tz: tzinfo = UTC, offset: bool | None = None) -> str:
    """A time in zone `tz`: with its date and offset, or (date=False) the time of day,
    with the offset only when asked for."""
    number = _finite(ts)
    if number is None:
        return NA
    try:
        when = datetime.fromtimestamp(number, tz=tz)
    except (OverflowError, OSError, ValueError):
        return f"t={number:g}"
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text} {offset_text(when)}" if (date if offset is None else offset) else text


def plain(value: Any) -> str:
    """Any JSON value as one line of text."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)  # pids, ports, handles: no thousands separator
    if isinstance(value, float):
        if not math.isfinite(value):
            return NA
        return str(int(value)) if value == int(value) and abs(value) < 1e18 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        nested = any(isinstance(v, (dict, list, tuple)) for v in value)
        return ("; " if nested else ", ").join(plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items())
    return " ".join(str(value).split())


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else: none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def anchor(text: str) -> str:
    """An HTML id / Markdown-safe fragment from a finding id."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower())


# -- a diagnosis -------------------------------------------------------------------------

def _harmful(finding: dict[str, Any]) -> bool:
    return not finding.get("benign") and finding.get("severity") in ("critical", "warning")


def _measured(doc: dict[str, Any]) -> bool:
    coverage = doc.get("coverage") or {}
    if not coverage:  # an old or minimal document: trust its verdict
        return doc.get("healthy") is not None
    return coverage.get("snmp") == "ok" or coverage.get("netstat") == "ok"


def verdict(doc: dict[str, Any]) -> dict[str, str]:
    findings = doc.get("findings") or []
    harmful = [f for f in findings if _harmful(f)]
    if not _measured(doc):
        return {"level": "unmeasured", "headline": "COULD NOT MEASURE",
                "text": "the core counters (snmp, netstat) were unreadable: no verdict"}
    if not harmful:
        others = len(findings)
        return {"level": "healthy", "headline": "HEALTHY",
                "text": "no packet drops that need action"
                        + (f" ({others} benign or informational finding{'s' * (others != 1)})" if others else "")}
    worst = harmful[0]
    level = worst.get("severity") or "warning"
    return {"level": level, "headline": level.upper(),
            "text": f"{len(harmful)} cause{'s' * (len(harmful) != 1)} of packet loss, worst {worst['id']} "
                    f"at {fmt_rate(worst.get('rate_per_s'))} drops/s"}


def layer_states(doc: dict[str, Any]) -> list[dict[str, str]]:
    rules = load_rules()
    findings = doc.get("findings") or []
    not_evaluated = set(doc.get("not_evaluated") or {})
    states = []
    for layer in LAYERS:
        ids = {r.id for r in rules if r.layer == layer}
        harmful = [f for f in findings if f.get("layer") == layer and _harmful(f)]
        if harmful:
            states.append({"layer": layer, "state": harmful[0]["severity"], "label": harmful[0]["severity"]})
        elif ids and ids <= not_evaluated:
            states.append({"layer": layer, "state": "nodata", "label": "no data"})
        else:
            states.append({"layer": layer, "state": "ok", "label": "ok"})
    return states


def evidence_rows(finding: dict[str, Any]) -> list[dict[str, str]]:
    """One row per evidence item: source, what, amount (+delta / x count), rate, detail;
    notes (the tracer's reconciliation) as rows with only a note."""
    rows = []
    for item in finding.get("evidence") or []:
        source = plain(item.get("source", ""))
        if "counter" in item:
            rest = {k: v for k, v in item.items() if k not in ("source", "counter", "delta", "rate_per_s")}
            delta = _finite(item.get("delta"))
            rows.append({"source": source, "what": plain(item["counter"]),
                         "amount": NA if delta is None else ("+" if delta >= 0 else "") + fmt_count(delta),
                         "rate": fmt_rate(item.get("rate_per_s")) + "/s" if "rate_per_s" in item else "",
                         "detail": plain(rest) if rest else "", "note": ""})
        elif "reason" in item:
            locations = [f"{plain(loc.get('location'))} (x{fmt_count(loc.get('count'))})"
                         for loc in _dicts(item.get("locations"))]
            rest = {k: v for k, v in item.items() if k not in ("source", "reason", "count", "locations", "rate_per_s")}
            rows.append({"source": source, "what": f"drop reason {plain(item['reason'])}",
                         "amount": f"x{fmt_count(item.get('count'))}",
                         "rate": fmt_rate(item.get("rate_per_s")) + "/s" if "rate_per_s" in item else "",
                         "detail": "; ".join(["at " + ", ".join(locations)] if locations else []
                                             + ([plain(rest)] if rest else [])), "note": ""})
        elif set(item) <= {"source", "note"}:
            rows.append({"source": source, "what": "", "amount": "", "rate": "", "detail": "",
                         "note": plain(item.get("note", ""))})
        else:
            key = next((k for k in ("socket", "rule", "device", "cpu", "key") if k in item), None)
            rest = {k: v for k, v in item.items() if k not in ("source", key)}
            rows.append({"source": source, "what": f"{key} {plain(item[key])}" if key else "",
                         "amount": "", "rate": "", "detail": plain(rest), "note": ""})
    return rows


def subject_table(subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns (the union of the subjects' keys, best first) and rows of text."""
    keys: list[str] = []
    for subject in subjects:
        keys += [k for k in subject if k not in keys]
    columns = [k for k in SUBJECT_ORDER if k in keys] + [k for k in keys if k not in SUBJECT_ORDER]
    if "rule" in columns:  # a firewall rule's text already holds its table/chain/handle/matches
        columns = [c for c in columns if c not in ("family", "table", "chain", "handle", "matches", "comment")]
    rows = [[plain(s[c]) if c in s else "" for c in columns] for s in subjects]
    return {"columns": [c.replace("_", " ") for c in columns], "rows": rows}


def _sysctl_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(plain(v) for v in value)
    return plain(value)


def fix_views(fixes: list[dict[str, Any]]) -> list[dict[str, str]]:
    views = []
    for fix in fixes:
        kind = plain(fix.get("kind", "fix"))
        if kind == "sysctl" and "key" in fix:
            proposed = _sysctl_value(fix.get("proposed"))
            value = f'"{proposed}"' if isinstance(fix.get("proposed"), (list, tuple)) else proposed
            command = f"sysctl -w {plain(fix['key'])}={value}"
            scope = plain(fix.get("scope", "")) if fix.get("scope") else ""
            if fix.get("netns") and "per network namespace" in scope:
                command = f"ip netns exec {plain(fix['netns'])} {command}"
            views.append({"kind": kind, "key": plain(fix["key"]), "current": _sysctl_value(fix.get("current")),
                          "proposed": proposed, "command": command, "scope": scope,
                          "note": plain(fix["note"]) if fix.get("note") else "", "text": ""})
        else:
            rest = {k: v for k, v in fix.items() if k not in ("kind", "text")}
            text = plain(fix.get("text")) if fix.get("text") is not None else plain(rest)
            views.append({"kind": kind, "key": "", "current": "", "proposed": "", "command": "", "scope": "",
                          "note": "", "text": text})
    return views


def finding_view(rank: int, finding: dict[str, Any]) -> dict[str, Any]:
    severity = finding.get("severity") if finding.get("severity") in SEVERITIES else "info"
    return {
        "rank": rank, "id": finding["id"], "anchor": "finding-" + anchor(finding["id"]),
        "severity": severity, "benign": bool(finding.get("benign")),
        "tone": "benign" if finding.get("benign") else severity,
        "layer": plain(finding.get("layer", "")), "title": plain(finding.get("title") or ""),
        "drops": fmt_count(finding.get("drops")), "rate": fmt_rate(finding.get("rate_per_s")),
        "summary": plain(finding.get("summary") or ""),
        "explanation": plain(finding["explanation"]) if finding.get("explanation") else "",
        "evidence": evidence_rows(finding),
        "subjects": subject_table(finding.get("subjects") or []),
        "fixes": fix_views(finding.get("fixes") or []),
        "runbook": plain(finding.get("runbook") or ""),
    }


def trace_view(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The tracer's side: which drop reasons a finding explains, which only the trace saw,
    which findings only the counters saw."""
    trace = doc.get("trace")
    if not trace:
        return None
    claimed: dict[str, list[str]] = {}
    notes = []
    for finding in doc.get("findings") or []:
        for item in finding.get("evidence") or []:
            if item.get("source") == "trace" and "reason" in item:
                claimed.setdefault(plain(item["reason"]), []).append(finding["id"])
            elif item.get("source") == "trace" and item.get("note"):
                notes.append({"finding": finding["id"], "note": plain(item["note"])})
    unmatched = {plain(e.get("reason")): e for e in trace.get("unmatched") or []}
    reasons = []
    for reason, count in sorted((trace.get("reasons") or {}).items(), key=lambda kv: -(_finite(kv[1]) or 0)):
        entry = unmatched.get(reason)
        if reason in claimed:
            verdict_text, tone = "explained by " + ", ".join(claimed[reason]), "claimed"
        elif entry is not None:
            verdict_text = ("benign: " if entry.get("benign") else "only in trace: ") + plain(entry.get("explanation", ""))
            tone = "benign" if entry.get("benign") else "only"
        else:
            verdict_text, tone = "", "claimed"
        locations = ", ".join(f"{plain(loc.get('location'))} (x{fmt_count(loc.get('count'))})"
                              for loc in _dicts((entry or {}).get("locations")))
        reasons.append({"reason": reason, "count": fmt_count(count), "verdict": verdict_text, "tone": tone,
                        "locations": locations,
                        "hint": plain(entry["hint"]) if entry and entry.get("hint") else ""})
    lost = trace.get("lost")
    return {
        "status": plain(trace.get("status", "")), "ok": trace.get("status") == "ok",
        "backend": plain(trace.get("backend", "")), "error": plain(trace["error"]) if trace.get("error") else "",
        "total": fmt_count(trace.get("total")), "lost": fmt_count(lost) if lost is not None else NA,
        "lost_any": bool(_finite(lost)), "seconds": fmt_seconds(trace.get("seconds")),
        "reasons": reasons, "counter_only": [plain(c) for c in trace.get("counter_only") or []], "notes": notes,
    }


def coverage_view(doc: dict[str, Any]) -> dict[str, Any]:
    coverage = doc.get("coverage") or {}
    errors = doc.get("coverage_errors") or {}
    gaps = [{"source": name, "status": status, "error": errors.get(name, "")}
            for name, status in coverage.items() if status != "ok"]
    return {"ok": len(coverage) - len(gaps), "total": len(coverage), "gaps": gaps,
            "not_evaluated": [{"rule": r, "why": w} for r, w in (doc.get("not_evaluated") or {}).items()],
            "resets": [plain(c) for c in doc.get("counter_resets") or []]}


def diagnosis_view(item: DiagnosisInput) -> dict[str, Any]:
    doc = item.doc
    host = doc.get("host") or {}
    findings = doc.get("findings") or []
    return {
        "kind": "diagnosis", "label": item.label, "source": item.source, "context": item.context,
        "hostname": plain(host.get("hostname") or NA), "kernel": plain(host.get("kernel") or NA),
        "where": f"netns {plain(host['netns'])}" if host.get("netns") else "host namespace",
        "window": fmt_seconds((doc.get("window") or {}).get("seconds")),
        "verdict": verdict(doc), "layers": layer_states(doc),
        "counts": {s: sum(1 for f in findings if f.get("severity") == s and not f.get("benign")) for s in SEVERITIES}
        | {"benign": sum(1 for f in findings if f.get("benign"))},
        "findings": [finding_view(rank, f) for rank, f in enumerate(findings, 1)],
        "trace": trace_view(doc), "coverage": coverage_view(doc),
    }


# -- a history ---------------------------------------------------------------------------

def _listed(items: list[Any]) -> dict[str, Any]:
    return {"items": items[:MAX_LISTED], "more": max(len(items) - MAX_LISTED, 0)}


def _in_zone(ts: float, tz: tzinfo) -> datetime | None:
    try:
        return datetime.fromtimestamp(ts, tz=tz)
    except (OverflowError, OSError, ValueError):   # a time from a damaged file
        return None


def _bucket_rows(timeline: Timeline, bucket_s: float, tz: tzinfo) -> list[dict[str, Any]]:
    """Peak rate per layer per bucket, runs of all-zero or all-missing buckets folded into
    one row so the table stays short. A bucket the recorder covered only in part says so:
    its peak is the peak of the part that was recorded."""
    per_layer = {layer: timeline.layer_buckets(layer, bucket_s) for layer in timeline.layers}
    starts = timeline.buckets(bucket_s).starts()
    coverage = timeline.bucket_coverage(bucket_s)
    rows: list[dict[str, Any]] = []
    for index, start in enumerate(starts):
        values = [per_layer[layer][index][1] for layer in timeline.layers]
        partial = 0.0 < coverage[index] < 0.95
        state = "nodata" if all(v is None for v in values) else "zero" if all(v == 0 for v in values) else "drops"
        if rows and state != "drops" and not partial and rows[-1]["state"] == state and not rows[-1]["partial"]:
            rows[-1]["end"] = start + bucket_s
            continue
        rows.append({"start": start, "end": start + bucket_s, "state": state, "partial": partial,
                     "values": ["no data" if v is None else fmt_rate(v) for v in values]})
    first, last = (_in_zone(starts[0], tz), _in_zone(starts[-1] + bucket_s, tz)) if starts else (None, None)
    with_date = bool(first and last) and first.date() != last.date()
    # the offset changes inside the table (daylight saving): every time says which it is
    with_offset = bool(first and last) and first.utcoffset() != last.utcoffset()
    for row in rows:
        start, end = (fmt_time(row[key], date=with_date, tz=tz, offset=with_offset) for key in ("start", "end"))
        row["when"] = start if row["end"] - row["start"] <= bucket_s else f"{start} to {end}"
        if row["partial"]:
            row["when"] += " (partly not recorded)"
    return rows


def history_view(item: HistoryInput, top: int = 4, charts: bool = True, table: bool = True,
                 tz: tzinfo = UTC) -> dict[str, Any]:
    """A history's summary, peaks and gaps; with `charts` the series to draw (HTML),
    with `table` the per-bucket peaks (Markdown) - each costs a pass over every sample."""
    timeline = Timeline(item.samples)
    meta = item.meta
    view: dict[str, Any] = {
        "kind": "history", "label": item.label, "source": item.source,
        "hostname": plain(meta.get("hostname") or NA), "kernel": plain(meta.get("kernel") or NA),
        "where": f"netns {plain(meta['netns'])}" if meta.get("netns") else "host namespace",
        "samples": fmt_count(len(timeline)), "damaged": fmt_count(timeline.damaged) if timeline.damaged else "",
    }
    if not len(timeline):
        # "holds no samples" would be wrong when --since left out the older ones
        window = (f"no samples since {fmt_time(item.since, tz=tz)} (--since), only "
                  f"{fmt_count(item.older)} older one{'s' * (item.older != 1)}"
                  if item.since is not None and item.older else "")
        return view | {"empty": True, "empty_why": window}
    span = (timeline.end or 0.0) - (timeline.start or 0.0)
    interval = timeline.typical_interval
    per_sample = len(timeline) <= MAX_CHART_POINTS
    chart_bucket = None if per_sample else choose_bucket(span, interval, MAX_CHART_POINTS)

    def when(ts: float | None) -> str:
        return fmt_time(ts, tz=tz)

    def layer_chart(layer: str) -> list[Point]:
        if chart_bucket is None:
            return timeline.layer_series(layer)
        return timeline.layer_buckets(layer, chart_bucket)

    def finding_chart(finding: str) -> dict[str, list[Point]]:
        """One line per sample; or, bucketed, the highest rate and the mean of each bucket:
        a burst and a steady rate with the same peak must not look alike."""
        if chart_bucket is None:
            return {finding: timeline.finding_series(finding)}
        size = fmt_seconds(chart_bucket)
        return {f"highest in {size}": timeline.finding_buckets(finding, chart_bucket),
                f"mean over {size}": timeline.finding_bucket_means(finding, chart_bucket)}

    peaks = timeline.peaks()
    top_findings = [p for p in peaks if p.total > 0][:max(top, 0)]
    table_bucket = choose_bucket(span, interval, MAX_TABLE_ROWS)
    coverage = timeline.coverage_ratio()
    gaps = timeline.recording_gaps
    return view | {
        "empty": False, "zone": describe(tz, timeline.end),
        "start": when(timeline.start), "end": when(timeline.end), "span": fmt_seconds(span),
        "interval": fmt_seconds(interval), "recorded": fmt_seconds(timeline.recorded_seconds()),
        "coverage": NA if coverage is None else f"{coverage * 100:.0f} %",
        "chart_note": (f"one point per {fmt_seconds(interval)} interval" if chart_bucket is None
                       else f"highest rate in each {fmt_seconds(chart_bucket)} bucket"),
        "layers": timeline.layers,
        "layer_series": {layer: layer_chart(layer) for layer in timeline.layers} if charts else {},
        "finding_charts": [{"finding": p.finding, "layer": p.layer, "unit": p.unit,
                            "series": finding_chart(p.finding)}
                           for p in top_findings] if charts else [],
        "peaks": [{"finding": p.finding, "anchor": "finding-" + anchor(p.finding), "layer": p.layer, "unit": p.unit,
                   "total": fmt_count(p.total), "peak": fmt_rate(p.peak_rate), "peak_at": when(p.peak_ts),
                   "mean": fmt_rate(p.mean_rate), "with_drops": fmt_count(p.intervals_with_drops),
                   "unmeasured": fmt_count(p.unmeasured_intervals), "any_unmeasured": p.unmeasured_intervals > 0}
                  for p in peaks],
        "table_bucket": fmt_seconds(table_bucket),
        "bucket_rows": _bucket_rows(timeline, table_bucket, tz) if table else [],
        "recording_gaps": _listed([{"start": when(g.start), "end": when(g.end),
                                    "duration": fmt_seconds(g.seconds)} for g in gaps]),
        "gap_count": fmt_count(len(gaps)),
        "gap_seconds": fmt_seconds(sum(g.seconds for g in gaps)),
        "unmeasured": _listed([{"finding": u.finding, "intervals": fmt_count(u.intervals),
                                "seconds": fmt_seconds(u.seconds), "first": when(u.first), "last": when(u.last)}
                               for u in timeline.unmeasured()]),
        "never_measured": timeline.never_measured,
    }


# -- the whole report --------------------------------------------------------------------

def places_note(sections: list[dict[str, Any]]) -> str:
    """When the inputs come from more than one host or network namespace, the sentence
    that says so: each section is its own place's numbers, nothing is added up."""
    places = {(s["hostname"], s["where"]) for s in sections}
    hosts = sorted({host for host, _ in places if host != NA})
    unknown = any(host == NA for host, _ in places)
    if len(places) < 2:
        return ""
    if len(hosts) > 1 or (hosts and unknown):
        what = f"{len(hosts)} hosts ({', '.join(hosts)})" + (" and input(s) that do not name their host" if unknown else "")
    elif hosts:
        what = f"{len(places)} places on {hosts[0]} ({', '.join(sorted(w for _, w in places))})"
    else:
        what = f"{len(places)} places ({', '.join(sorted(w for _, w in places))}) of hosts the inputs do not name"
    return (f"This report covers {what}: each section shows its own numbers, "
            "nothing is added up across them.")


def build(inputs: list[ReportInput], top: int = 4, title: str | None = None,
          charts: bool = True, table: bool = True, tz: tzinfo | None = None) -> dict[str, Any]:
    """The report's content; times in `tz` (UTC when None)."""
    tz = tz or UTC
    sections = [diagnosis_view(i) if isinstance(i, DiagnosisInput) else history_view(i, top, charts, table, tz)
                for i in inputs]
    hosts = sorted({s["hostname"] for s in sections if s.get("hostname") not in (None, NA)})
    default_title = "dropdoc report" + (f": {', '.join(hosts)}" if hosts else "")
    now = time.time()
    return {"title": title or default_title, "generated": fmt_time(now, tz=tz), "zone": describe(tz, now),
            "tz": tz, "places": places_note(sections), "sections": sections,
            "sources": [s["source"] for s in sections]}
