"""The promtool unit tests (alerts_test.yml): for every alert, cases that must fire and
cases that must not, checked against the real Prometheus rule engine by `promtool test rules`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dropdoc.rules.engine import Rule
from dropdoc.rules.enrichers.netfilter import NEAR_FULL

from .contract import JOB
from .rules import (
    CAUSES,
    CRITICAL_WINDOW,
    DIAGNOSE,
    WARNING_WINDOW,
    WHERE,
    Cause,
    catalogue,
    seconds,
)

# Series are written out per minute (scrape interval 1m: the common default and the
# sparsest series the windows must cope with). Each case is one instance; the expected
# alerts at each eval time are derived from what the case is meant to show, and the
# expected $value is computed here the way Prometheus computes rate() when samples sit on
# both ends of the window - the promtool run then checks both against real Prometheus.

EVAL_TIMES = (10, 20, 35)          # minutes
MINUTES = 40


def steady(per_minute: float, start: float = 0.0) -> list[float | None]:
    return [start + per_minute * m for m in range(MINUTES)]


def bursts(size: float, every: int, first: int = 1) -> list[float | None]:
    return [size * ((m - first) // every + 1) if m >= first else 0.0 for m in range(MINUTES)]


def single(size: float, at: int = 6) -> list[float | None]:
    return [0.0 if m < at else size for m in range(MINUTES)]


def with_gap(values: list[float | None], start: int, length: int) -> list[float | None]:
    return [None if start <= m < start + length else v for m, v in enumerate(values)]


@dataclass(frozen=True)
class Case:
    name: str                       # the `instance` label of its series
    values: list[float | None]
    fires: dict[int, tuple[str, ...]]  # eval minute -> severities firing (absent: none)
    why: str


def drop_cases(rule: Rule) -> list[Case]:
    """Cases for one cause, scaled to its thresholds (per-minute increments)."""
    crit = rule.critical_per_s * 60
    both = ("critical", "warning")
    return [
        Case("at-critical", steady(crit), {20: both, 35: both},
             "exactly the critical rate, sustained: pending at 10m (for), firing later"),
        Case("below-critical", steady(crit * 0.95), {20: ("warning",), 35: ("warning",)},
             "95% of the critical rate: warning only"),
        Case("intermittent", bursts(crit * 10, every=2), {20: both, 35: both},
             "the reference case: a burst every 2 minutes"),
        Case("scrape-gaps", with_gap(steady(crit * 2), 11, 2), {20: both, 35: both},
             "twice the critical rate with two missed scrapes: still fires"),
        Case("single-burst", single(crit * 20), {},
             "one burst of 20x the critical rate's minute: never fires"),
        Case("single-drop", single(1), {}, "one isolated drop: never fires"),
        Case("counter-reset", [5000.0 if m < 12 else 0.0 for m in range(MINUTES)], {},
             "exporter or namespace restarted: a reset is not a drop"),
    ]


def go_humanize(value: float) -> str:
    """Prometheus's `humanize` template function (SI prefixes, 4 significant digits)."""
    if value == 0 or abs(value) == float("inf") or value != value:
        return f"{value:.4g}"
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            value, prefix = value / 1000, p
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(value) >= 1:
                break
            value, prefix = value * 1000, p
    return f"{value:.4g}{prefix}"


def window_rate(values: list[float | None], minute: int, window: str) -> float:
    """rate() at `minute` when samples exist at both ends of the window: increase / window
    (no extrapolation then), counting a decrease as a counter reset like Prometheus."""
    width = seconds(window) // 60
    inside = [v for v in values[minute - width:minute + 1] if v is not None]
    assert values[minute - width] is not None and values[minute] is not None, "gap at a window edge"
    increase = sum(b - a if b >= a else b for a, b in zip(inside, inside[1:]))
    return increase / (width * 60)


def render(template: str, labels: dict[str, str], value: float) -> str:
    """The few template constructs the annotations use, rendered like Prometheus does."""
    netns = labels.get("netns", "")
    text = template.replace(WHERE, f"netns {netns}" if netns else "the host namespace")
    text = text.replace(DIAGNOSE, f"`dropdoc diagnose --netns {netns}`" if netns else "`dropdoc diagnose`")
    text = text.replace("{{ $value | humanize }}", go_humanize(value))
    text = text.replace("{{ $value | humanizePercentage }}", go_humanize(value * 100) + "%")
    text = text.replace("{{ $labels.instance }}", labels["instance"])
    text = text.replace("{{ $labels.source }}", labels.get("source", ""))
    text = re.sub(r"\{\{ if \$labels\.netns \}\}(.*?)\{\{ end \}\}",
                  lambda m: m.group(1).replace("{{ $labels.netns }}", netns) if netns else "", text)
    assert "{{" not in text, f"template construct the test renderer does not know: {text}"
    return text


def series_text(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def plain(value: float) -> str:
    """A sample value without exponent ('1e+06+0x2' would be ambiguous in the notation)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.12f}".rstrip("0").rstrip(".")


def values_text(values: list[float | None]) -> str:
    """promtool's expanding notation: runs of a constant step become 'a+bxn', gaps '_xn'."""
    parts, i = [], 0
    while i < len(values):
        if values[i] is None:
            j = i
            while j < len(values) and values[j] is None:
                j += 1
            parts.append(f"_x{j - i}")
            i = j
            continue
        j = i + 1
        step = values[j] - values[i] if j < len(values) and values[j] is not None else None
        while step is not None and j + 1 < len(values) and values[j + 1] is not None \
                and values[j + 1] - values[j] == step:
            j += 1
        if step is None or j == i + 1:
            parts.append(plain(values[i]))
            i += 1
        else:
            sign = "+" if step >= 0 else "-"
            parts.append(f"{plain(values[i])}{sign}{plain(abs(step))}x{j - i}")
            i = j + 1
    return " ".join(parts)


def expected(rule: dict, labels: dict[str, str], value: float) -> dict:
    return {"exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {k: render(v, labels, value) for k, v in rule["annotations"].items()}}


def case_summary(alert: str, cases: list[Case]) -> str:
    fired = {c.name: set().union(*c.fires.values()) if c.fires else set() for c in cases}
    both = [n for n, f in fired.items() if f == {"critical", "warning"}]
    warning = [n for n, f in fired.items() if f == {"warning"}]
    never = [n for n, f in fired.items() if not f]
    return (f"{alert}: critical+warning for {', '.join(both)}, host-namespace; warning only for "
            f"{', '.join(warning)}; nothing for {', '.join(never)}")


def cause_test(cause: Cause, rule: Rule, alert_rules: list[dict]) -> dict:
    by_severity = {r["labels"]["severity"]: r for r in alert_rules}
    windows = {"critical": CRITICAL_WINDOW, "warning": WARNING_WINDOW}
    cases = drop_cases(rule)
    series, checks = [], {t: [] for t in EVAL_TIMES}
    for case in cases:
        labels = {"job": JOB, "instance": case.name, "netns": "srv", "finding": cause.finding, "layer": rule.layer}
        series.append({"series": series_text("dropdoc_drops_total", labels), "values": values_text(case.values)})
        alert_labels = {k: v for k, v in labels.items() if not (cause.host_wide and k == "netns")}
        for minute in EVAL_TIMES:
            for severity in case.fires.get(minute, ()):
                value = window_rate(case.values, minute, windows[severity])
                checks[minute].append(expected(by_severity[severity], alert_labels, value))
    if not cause.host_wide:  # the host namespace (netns label empty) reads as such
        labels = {"job": JOB, "instance": "host-namespace", "finding": cause.finding, "layer": rule.layer}
        values = steady(rule.critical_per_s * 120)
        series.append({"series": series_text("dropdoc_drops_total", labels), "values": values_text(values)})
        for minute in (20, 35):
            for severity in ("critical", "warning"):
                checks[minute].append(expected(by_severity[severity], labels,
                                               window_rate(values, minute, windows[severity])))
    return {
        "name": case_summary(cause.alert, cases),
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": f"{t}m", "alertname": cause.alert, "exp_alerts": checks[t]}
                            for t in EVAL_TIMES],
    }


def nearly_full_test(rule: dict) -> dict:
    cases = {  # instance -> (entries per minute, max, firing at 20m)
        "at-threshold": ([NEAR_FULL * 1000] * MINUTES, 1000, True),
        "below-threshold": ([NEAR_FULL * 1000 - 1] * MINUTES, 1000, False),
        "brief-peak": ([990 if 10 <= m < 13 else 500 for m in range(MINUTES)], 1000, False),
        "max-unknown": ([990] * MINUTES, 0, False),
    }
    series, firing = [], []
    for name, (entries, maximum, fires) in cases.items():
        labels = {"job": JOB, "instance": name, "netns": "srv"}
        series.append({"series": series_text("dropdoc_conntrack_entries", labels), "values": values_text(entries)})
        series.append({"series": series_text("dropdoc_conntrack_max", labels),
                       "values": values_text([maximum] * MINUTES)})
        if fires:
            firing.append(expected(rule, labels, entries[20] / maximum))
    return {"name": "DropdocConntrackTableNearlyFull: at 90% fires, below, a 3-minute peak and max 0 do not",
            "interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": firing},
                                {"eval_time": "3m", "alertname": rule["alert"], "exp_alerts": []}]}


def meta_tests(rules: dict[str, dict]) -> list[dict]:
    down = rules["DropdocSourceDown"]
    source = lambda name, source: {"job": JOB, "instance": name, "netns": "srv", "source": source}  # noqa: E731
    trace = {"job": JOB, "instance": "trace-broke", "netns": "srv"}
    lost = rules["DropdocTraceLostEvents"]
    lost_labels = {"job": JOB, "instance": "losing"}  # the alert is per host: netns aggregated away
    lost_values = steady(30)
    exporter = rules["DropdocExporterDown"]
    return [
        {"name": ("DropdocSourceDown: a source or the tracer down 10m fires (broke, or needing privilege "
                  "from the start) and keeps firing; down 5m does not, nor a source the host lacks "
                  "(source_unavailable, no source_up) or --trace off (no trace_up)"),
         "interval": "1m",
         "input_series": [
             {"series": series_text("dropdoc_source_up", source("broke", "conntrack")),
              "values": values_text([1 if m < 5 else 0 for m in range(MINUTES)])},
             {"series": series_text("dropdoc_source_up", source("no-privilege", "nftables")),
              "values": values_text([0] * MINUTES)},
             {"series": series_text("dropdoc_source_up", source("blip", "snmp")),
              "values": values_text([0 if 5 <= m < 10 else 1 for m in range(MINUTES)])},
             {"series": series_text("dropdoc_source_up", source("up", "snmp")), "values": values_text([1] * MINUTES)},
             {"series": series_text("dropdoc_source_unavailable", source("lacks-it", "conntrack")),
              "values": values_text([1] * MINUTES)},
             {"series": series_text("dropdoc_trace_up", trace),
              "values": values_text([1 if m < 5 else 0 for m in range(MINUTES)])},
             {"series": series_text("dropdoc_trace_up", {**trace, "instance": "trace-failed"}),
              "values": values_text([0] * MINUTES)},
         ],
         "alert_rule_test": [
             {"eval_time": "8m", "alertname": down["alert"], "exp_alerts": []},
             *({"eval_time": at, "alertname": down["alert"], "exp_alerts": [
                 expected(down, source("broke", "conntrack"), 0),
                 expected(down, source("no-privilege", "nftables"), 0),
                 expected(down, {**trace, "source": "trace"}, 0),
                 expected(down, {**trace, "instance": "trace-failed", "source": "trace"}, 0)]}
               for at in ("20m", "35m")),
         ]},
        {"name": "DropdocTraceLostEvents: recurring losses fire, one lost event or a reset does not",
         "interval": "1m",
         "input_series": [
             {"series": series_text("dropdoc_trace_lost_events_total", {**lost_labels, "netns": "srv"}),
              "values": values_text(lost_values)},
             {"series": series_text("dropdoc_trace_lost_events_total", {**lost_labels, "netns": ""}),
              "values": values_text(lost_values)},
             {"series": series_text("dropdoc_trace_lost_events_total", {**lost_labels, "instance": "once"}),
              "values": values_text(single(1))},
             {"series": series_text("dropdoc_trace_lost_events_total", {**lost_labels, "instance": "reset"}),
              "values": values_text([900.0 if m < 12 else 0.0 for m in range(MINUTES)])},
         ],
         "alert_rule_test": [
             {"eval_time": "20m", "alertname": lost["alert"], "exp_alerts": [
                 expected(lost, lost_labels, window_rate(lost_values, 20, WARNING_WINDOW))]},
             {"eval_time": "10m", "alertname": lost["alert"], "exp_alerts": []},
         ]},
        {"name": "DropdocExporterDown: job dropdoc down 10m fires; one failed scrape or another job does not",
         "interval": "1m",
         "input_series": [
             {"series": series_text("up", {"job": JOB, "instance": "down"}),
              "values": values_text([1 if m < 5 else 0 for m in range(MINUTES)])},
             {"series": series_text("up", {"job": JOB, "instance": "one-failed-scrape"}),
              "values": values_text([0 if m == 8 else 1 for m in range(MINUTES)])},
             {"series": series_text("up", {"job": "node", "instance": "other-job"}), "values": values_text([0] * MINUTES)},
         ],
         "alert_rule_test": [
             {"eval_time": "15m", "alertname": exporter["alert"], "exp_alerts": [
                 expected(exporter, {"job": JOB, "instance": "down"}, 0)]},
             {"eval_time": "8m", "alertname": exporter["alert"], "exp_alerts": []},
         ]},
    ]


def build_tests(rules_doc: dict) -> dict:
    rules = catalogue()
    flat = [r for g in rules_doc["groups"] for r in g["rules"]]
    by_alert: dict[str, list[dict]] = {}
    for rule in flat:
        by_alert.setdefault(rule["alert"], []).append(rule)
    tests = [cause_test(c, rules[c.finding], by_alert[c.alert]) for c in CAUSES]
    tests.append(nearly_full_test(by_alert["DropdocConntrackTableNearlyFull"][0]))
    tests += meta_tests({name: group[0] for name, group in by_alert.items()})
    return {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
