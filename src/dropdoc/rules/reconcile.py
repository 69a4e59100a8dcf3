"""Counters vs tracer: attach the drop reasons the tracer saw to the findings they explain,
and say explicitly which drops only one side saw.

Counters are authoritative for counts (many drops carry no reason, and some reasons are
hit by only a fraction of the drops, see DESIGN.md); the trace says where in the kernel
they die. Reasons no finding claims are listed with an explanation, benign or not.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

from ..model import Finding
from .engine import Rule, load_rules

TOP_LOCATIONS = 3


@lru_cache(maxsize=1)
def reason_table() -> dict[str, dict[str, Any]]:
    text = resources.files("dropdoc.rules").joinpath("trace_reasons.toml").read_text(encoding="utf-8")
    return tomllib.loads(text).get("reason", {})


def matches(patterns: tuple[str, ...], drop: dict[str, Any]) -> bool:
    reason = drop.get("reason") or ""
    symbol = (drop.get("location") or "").split("+", 1)[0]
    for pattern in patterns:
        name, _, prefix = pattern.partition("@")
        if reason == name and (not prefix or symbol.startswith(prefix)):
            return True
    return False


def _by_reason(drops: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for drop in drops:
        entry = grouped.setdefault(drop.get("reason") or "(unknown)", {"count": 0, "locations": {}})
        entry["count"] += drop["count"]
        location = drop.get("location") or "?"
        entry["locations"][location] = entry["locations"].get(location, 0) + drop["count"]
    for entry in grouped.values():
        top = sorted(entry["locations"].items(), key=lambda kv: -kv[1])[:TOP_LOCATIONS]
        entry["locations"] = [{"location": loc, "count": n} for loc, n in top]
    return dict(sorted(grouped.items(), key=lambda kv: -kv[1]["count"]))


def _attach(finding: Finding, rule: Rule, drops: list[dict[str, Any]]) -> set[int]:
    claimed = {i for i, d in enumerate(drops) if matches(rule.trace_reasons, d)}
    traced = sum(drops[i]["count"] for i in claimed)
    for reason, entry in _by_reason([drops[i] for i in claimed]).items():
        finding.evidence.append({"source": "trace", "reason": reason, "count": entry["count"],
                                 "locations": entry["locations"]})
    if claimed:
        if traced < finding.drops:
            note = f"the tracer saw {traced} of the {finding.drops} drops the counters report"
            if rule.trace_note:
                note += f" ({rule.trace_note})"
            finding.evidence.append({"source": "trace", "note": note})
    elif rule.trace_note:
        finding.evidence.append({"source": "trace", "note": rule.trace_note})
    elif rule.trace_reasons:
        names = ", ".join(r.partition("@")[0] for r in rule.trace_reasons)
        finding.evidence.append({"source": "trace", "note": f"the tracer saw none of these drops ({names})"})
    return claimed


def reconcile(findings: list[Finding], trace: dict[str, Any] | None) -> dict[str, Any] | None:
    """Add trace evidence to findings; return the diagnosis' `trace` section."""
    if trace is None:
        return None
    section: dict[str, Any] = {k: trace.get(k) for k in ("backend", "status", "error", "lost", "seconds")}
    if trace.get("status") != "ok":
        return section
    drops: list[dict[str, Any]] = trace.get("drops", [])
    rules = {r.id: r for r in load_rules()}
    claimed: set[int] = set()
    counter_only = []
    for finding in findings:
        rule = rules.get(finding.id)
        if rule is None:
            continue
        mine = _attach(finding, rule, drops)
        if not mine and finding.drops:
            counter_only.append(finding.id)
        claimed |= mine
    seconds = float(trace.get("seconds") or 0) or 1.0
    unclaimed = [d for i, d in enumerate(drops) if i not in claimed]
    section["total"] = sum(d["count"] for d in drops)
    section["reasons"] = {r: e["count"] for r, e in _by_reason(drops).items()}
    section["counter_only"] = counter_only
    section["unmatched"] = [_explain(reason, entry, seconds, unclaimed, rules)
                            for reason, entry in _by_reason(unclaimed).items()]
    return section


def _explain(reason: str, entry: dict[str, Any], seconds: float, unclaimed: list[dict[str, Any]],
             rules: dict[str, Rule]) -> dict[str, Any]:
    info = reason_table().get(reason, {})
    rate = entry["count"] / seconds
    benign = bool(info.get("benign")) or rate < float(info.get("benign_below_per_s", 0))
    hint = info.get("hint") or next(
        (r.id for r in rules.values()
         if any(matches(r.trace_reasons, d) for d in unclaimed if (d.get("reason") or "") == reason)), None)
    out = {"reason": reason, "count": entry["count"], "rate_per_s": round(rate, 3), "benign": benign,
           "locations": entry["locations"],
           "explanation": info.get("explanation", "seen only by the tracer: no counter of a finding moved for it")}
    if hint:
        out["hint"] = hint
    return out
