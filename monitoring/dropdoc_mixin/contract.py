"""The metric contract of `dropdoc serve` (src/dropdoc/export/prometheus.py METRICS) as the
rules and the dashboard may use it, and a light PromQL reader that checks they do."""

from __future__ import annotations

import re

JOB = "dropdoc"  # the scrape job name DropdocExporterDown looks for

# Every metric `dropdoc serve` exports (its contract), plus Prometheus's own `up`.
CONTRACT_METRICS = frozenset({
    "dropdoc_drops_total", "dropdoc_softnet_time_squeeze_total",
    "dropdoc_listen_queue_length", "dropdoc_listen_queue_limit", "dropdoc_udp_socket_drops_total",
    "dropdoc_conntrack_entries", "dropdoc_conntrack_max",
    "dropdoc_trace_drops_total", "dropdoc_trace_lost_events_total", "dropdoc_trace_up",
    "dropdoc_source_up", "dropdoc_source_unavailable", "dropdoc_scrape_duration_seconds",
    "dropdoc_scrape_cpu_seconds",
    "dropdoc_scrape_errors_total", "dropdoc_build_info",
})
PROMETHEUS_METRICS = frozenset({"up"})

CONTRACT_LABELS = frozenset({"netns", "finding", "layer", "socket", "process", "reason", "source",
                             "version", "kernel", "job", "instance"})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                      "unless", "offset", "inf", "nan"})


def references(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression refers to. A light lexer, enough for
    the expressions shipped here: strings, ranges and Grafana variables are skipped."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals (label values, regexes)
    text = re.sub(r"\[[^\]]*\]", " ", text)                      # [5m], [$__rate_interval]
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for names in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels.update(n.strip() for n in names.split(",") if n.strip())
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    metrics = {name for name in re.findall(r"(?<![\w$.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()", text)
               if name.lower() not in KEYWORDS}
    return metrics, labels
