"""Evaluate the catalogue over a window: counters -> findings, ranked by harm."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from ..model import Finding
from ..window import Window

LAYERS = ("link", "kernel", "network", "transport", "socket")


@dataclass(frozen=True)
class Rule:
    id: str
    layer: str
    title: str
    summary: str
    drop_counters: tuple[str, ...]
    evidence_counters: tuple[str, ...] = ()
    warning_per_s: float = 0.0
    critical_per_s: float = 1.0
    benign_below_per_s: float = 0.0
    benign_reason: str = ""
    count: str = "sum"
    enricher: str | None = None
    evaluator: str | None = None
    # kfree_skb drop reasons ("REASON" or "REASON@symbol_prefix") that are these drops, and
    # what to say when the tracer cannot see them (no drop reason exists for them).
    trace_reasons: tuple[str, ...] = ()
    trace_note: str = ""
    runbook: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_rules(text: str) -> list[Rule]:
    data = tomllib.loads(text)
    rules = []
    known = set(Rule.__dataclass_fields__) - {"extra"}
    for entry in data.get("rule", []):
        entry = dict(entry)
        extra = {k: entry.pop(k) for k in list(entry) if k not in known}
        entry["drop_counters"] = tuple(entry.get("drop_counters", ()))
        entry["evidence_counters"] = tuple(entry.get("evidence_counters", ()))
        entry["trace_reasons"] = tuple(entry.get("trace_reasons", ()))
        rule = Rule(**entry, extra=extra)
        if rule.layer not in LAYERS:
            raise ValueError(f"rule {rule.id}: unknown layer {rule.layer}")
        if rule.count not in ("sum", "max_per_device"):
            raise ValueError(f"rule {rule.id}: unknown count {rule.count}")
        rules.append(rule)
    return _unique(rules)


def _unique(rules: list[Rule]) -> list[Rule]:
    ids = [r.id for r in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate rule ids in the catalogue: {duplicates}")
    return rules


@lru_cache(maxsize=1)
def load_rules() -> tuple[Rule, ...]:
    """Every rule of every rules/catalogue/*.toml file; ids unique across files."""
    directory = resources.files("dropdoc.rules").joinpath("catalogue")
    rules: list[Rule] = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            rules += parse_rules(entry.read_text(encoding="utf-8"))
    return tuple(_unique(rules))


def matching(patterns: tuple[str, ...], values: dict[str, int | None]) -> dict[str, int | None]:
    """Counters whose name matches any pattern (exact names or globs)."""
    found: dict[str, int | None] = {}
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            found.update({k: v for k, v in values.items() if fnmatch.fnmatchcase(k, pattern)})
        elif pattern in values:
            found[pattern] = values[pattern]
    return found


def count_drops(rule: Rule, counters: dict[str, int | None]) -> int:
    known = {k: v for k, v in counters.items() if v is not None}
    if rule.count == "max_per_device":
        per_device: dict[str, int] = {}
        for name, value in known.items():
            # "link.<device>.<counter>": device names may contain dots (VLANs: eth0.100)
            device = name.split(".", 1)[1].rsplit(".", 1)[0]
            per_device[device] = max(per_device.get(device, 0), value)
        return sum(per_device.values())
    return sum(known.values())


def severity_for(rule: Rule, rate: float) -> tuple[str, bool]:
    """(severity, benign) for a drop rate."""
    if rule.benign_below_per_s and rate < rule.benign_below_per_s:
        return "info", True
    if rate >= rule.critical_per_s:
        return "critical", False
    if rate >= rule.warning_per_s:
        return "warning", False
    return "info", False


def new_finding(rule: Rule, window: Window, drops: int, evidence: list[dict[str, Any]]) -> Finding:
    """A finding for `drops` over the window, severity and benign-ness from the rule."""
    seconds = window.seconds or 1.0
    rate = drops / seconds
    severity, benign = severity_for(rule, rate)
    return Finding(
        id=rule.id, layer=rule.layer, severity=severity, drops=drops, rate_per_s=rate, benign=benign,
        title=rule.title, summary=rule.summary.format(drops=drops, rate=rate),
        evidence=evidence, runbook=f"docs/runbook.md#{rule.runbook}",
        explanation=rule.benign_reason if benign else None,
    )


def evaluate_rule(rule: Rule, window: Window) -> Finding | None | str:
    """A Finding, None (nothing dropped) or a string: why the rule could not be evaluated."""
    from . import coverage
    from .enrichers import ENRICHERS, EVALUATORS  # late: enrichers import the engine's model

    # Counters from several sources (Udp + Udp6, link + ethtool): with one of them not
    # read, the others' sum is a number too small, never the finding's (rules/coverage.py).
    partial = coverage.partial_count(rule, window)
    if partial:
        return partial
    if rule.evaluator:
        return EVALUATORS[rule.evaluator](rule, window)
    deltas = window.deltas
    drop_values = matching(rule.drop_counters, deltas.values)
    if not drop_values or all(v is None for v in drop_values.values()):
        reset = [c for c in deltas.resets if c in drop_values]
        return "counter reset during the window" if reset else "counters not available"
    drops = count_drops(rule, drop_values)
    if drops <= 0:
        # "no drops" only if no counter it would have come from was reset (eth0 re-created,
        # one CPU's softnet counters cleared): otherwise we do not know.
        if any(c in drop_values for c in deltas.resets):
            return "counter reset during the window"
        return None
    seconds = window.seconds or 1.0
    evidence = [{"source": "counters", "counter": name, "delta": value, "rate_per_s": round(value / seconds, 3)}
                for name, value in sorted(drop_values.items()) if value]
    evidence += [{"source": "counters", "counter": name, "delta": value}
                 for name, value in sorted(matching(rule.evidence_counters, deltas.values).items()) if value]
    finding = new_finding(rule, window, drops, evidence)
    if rule.enricher:
        ENRICHERS[rule.enricher](finding, window)
    return finding


def evaluate(window: Window, rules: tuple[Rule, ...] | None = None) -> tuple[list[Finding], dict[str, str]]:
    """All findings, ranked (most harmful first), and the rules that could not be evaluated."""
    findings: list[Finding] = []
    not_evaluated: dict[str, str] = {}
    for rule in rules or load_rules():
        outcome = evaluate_rule(rule, window)
        if isinstance(outcome, str):
            not_evaluated[rule.id] = outcome
        elif outcome is not None:
            findings.append(outcome)
    findings.sort(key=Finding.rank_key)
    return findings, not_evaluated


def rule_by_id(rule_id: str) -> Rule | None:
    return next((r for r in load_rules() if r.id == rule_id), None)
