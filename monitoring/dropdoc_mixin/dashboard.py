"""The Grafana dashboard: drops per cause (one panel each, the alert's threshold drawn),
listen queues, UDP sockets, conntrack fill, drop reasons, source health, scrape cost."""

from __future__ import annotations

from dropdoc.rules.engine import Rule
from dropdoc.rules.enrichers.netfilter import NEAR_FULL

from .contract import JOB
from .rules import CAUSES, RUNBOOK, Cause, catalogue, number

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SELECT = 'instance=~"$instance", netns=~"$netns"'


def target(expr: str, legend: str, ref: str = "A") -> dict:
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def panel(title: str, targets: list[dict], unit: str, description: str = "", kind: str = "timeseries",
          thresholds: list[tuple[float, str]] | None = None) -> dict:
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in (thresholds or [])]
    defaults = {"unit": unit, "min": 0, "thresholds": {"mode": "absolute", "steps": steps}}
    if thresholds:
        defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max", "mean"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def cause_panel(cause: Cause, rule: Rule) -> dict:
    by = "instance" if cause.host_wide else "instance, netns"
    expr = (f'sum by ({by}) (rate(dropdoc_drops_total{{{SELECT}, finding="{cause.finding}"}}'
            f"[$__rate_interval]))")
    if cause.host_wide:
        expr = (f'max by (instance) (rate(dropdoc_drops_total{{instance=~"$instance", '
                f'finding="{cause.finding}"}}[$__rate_interval]))')
    legend = "{{instance}}" if cause.host_wide else "{{instance}} {{netns}}"
    note = " Host-wide counters: one line per host." if cause.host_wide else ""
    return panel(f"{rule.title} ({cause.finding})", [target(expr, legend)], "pps",
                 f"{rule.summary.split('(')[0].replace('{drops} ', '').strip()}. Alert {cause.alert}: "
                 f"critical at {number(rule.critical_per_s)}/s. Runbook: {RUNBOOK}#{rule.runbook}.{note}",
                 thresholds=[(rule.critical_per_s, "red")])


def dashboard_panels() -> list[dict]:
    rules = catalogue()
    overview = panel("Drops by finding", [target(
        f"sum by (finding) (rate(dropdoc_drops_total{{{SELECT}}}[$__rate_interval]))", "{{finding}}")],
        "pps", "Every catalogue finding dropdoc measures, per second, summed over the selected hosts.")
    overview["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 30}
    by_layer = panel("Drops by layer", [target(
        f"sum by (layer) (rate(dropdoc_drops_total{{{SELECT}}}[$__rate_interval]))", "{{layer}}")], "pps",
        "link, kernel, network, transport, socket: where in the stack the packets are lost.")
    causes = [cause_panel(c, rules[c.finding]) for c in CAUSES]
    listen = panel("Listen queues: length / limit (top listeners)", [
        target(f"dropdoc_listen_queue_length{{{SELECT}}} / dropdoc_listen_queue_limit{{{SELECT}}}",
               "{{instance}} {{netns}} {{socket}} {{process}}")], "percentunit",
        "Accept queue fill of the busiest listening sockets: at 100% new connections are dropped "
        "(tcp.listen_overflow).", thresholds=[(0.9, "orange"), (1, "red")])
    udp = panel("UDP sockets: drops (top sockets)", [target(
        f"rate(dropdoc_udp_socket_drops_total{{{SELECT}}}[$__rate_interval])",
        "{{instance}} {{netns}} {{socket}} {{process}}")], "pps",
        "Per-socket receive-buffer drops of the UDP sockets that drop most (udp.rcvbuf_full).")
    conntrack = panel("Conntrack table fill", [target(
        f"dropdoc_conntrack_entries{{{SELECT}}} / (dropdoc_conntrack_max{{{SELECT}}} > 0)",
        "{{instance}} {{netns}}")], "percentunit",
        f"nf_conntrack_count / nf_conntrack_max. Alert DropdocConntrackTableNearlyFull at {NEAR_FULL:.0%}.",
        thresholds=[(NEAR_FULL, "orange"), (1, "red")])
    squeeze = panel("Softirq time squeeze", [target(
        'max by (instance) (rate(dropdoc_softnet_time_squeeze_total{instance=~"$instance"}[$__rate_interval]))',
        "{{instance}}")], "ops",
        "net_rx_action ran out of budget (cpu.time_squeeze): a delay, not a drop. Host-wide.")
    reasons = panel("Kernel drop reasons (kfree_skb trace)", [
        target(f"sum by (reason) (rate(dropdoc_trace_drops_total{{{SELECT}}}[$__rate_interval]))", "{{reason}}"),
        # One tracer serves every namespace: its lost count is repeated under each netns label.
        target('max by (instance) (rate(dropdoc_trace_lost_events_total{instance=~"$instance"}[$__rate_interval]))',
               "lost events {{instance}}", "B")], "pps",
        "Drops by kernel drop reason, from `dropdoc serve --trace`; lost events mean these undercount.")
    sources = panel("Source health", [
        target(f"min by (instance, netns, source) (dropdoc_source_up{{{SELECT}}})",
               "{{instance}} {{netns}} {{source}}"),
        target(f"dropdoc_trace_up{{{SELECT}}}", "{{instance}} {{netns}} trace", "B"),
        target(f'up{{job="{JOB}", instance=~"$instance"}}', "{{instance}} exporter up", "C"),
        # -1: the host lacks the source (coverage, not a failure: no alert).
        target(f"-max by (instance, netns, source) (dropdoc_source_unavailable{{{SELECT}}})",
               "{{instance}} {{netns}} {{source}}", "D")], "none",
        "1 = read, 0 = failed or needs privilege: the findings that need it are blind (DropdocSourceDown); "
        "-1 = this host does not have it (no conntrack module, ...): not measured here, no alert.",
        kind="state-timeline")
    sources["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
        "1": {"text": "up", "color": "green"}, "0": {"text": "down", "color": "red"},
        "-1": {"text": "not on this host", "color": "text"}}}]
    sources["fieldConfig"]["defaults"]["min"] = -1
    cost = panel("Scrape cost", [
        target(f"dropdoc_scrape_duration_seconds{{{SELECT}}}", "wall {{instance}} {{netns}}"),
        target(f"dropdoc_scrape_cpu_seconds{{{SELECT}}}", "CPU {{instance}} {{netns}}", "B")], "s",
        "Wall and CPU time of each namespace's last collection (gauges): what one scrape costs the host.")
    errors = panel("Scrape errors and version", [
        target('sum by (instance) (rate(dropdoc_scrape_errors_total{instance=~"$instance"}[$__rate_interval]))',
               "errors/s {{instance}}"),
        target('count by (instance, version, kernel) (dropdoc_build_info{instance=~"$instance"})',
               "{{instance}} dropdoc {{version}} kernel {{kernel}}", "B")], "none",
        "Errors while building a scrape (each also shown as a source down), and what runs where.")
    return [overview, by_layer, *causes, listen, udp, conntrack, squeeze, reasons, sources, cost, errors]


def layout(panels: list[dict]) -> list[dict]:
    """Two panels per row, ids in order (Grafana needs both unique and a grid position)."""
    for index, item in enumerate(panels):
        item["id"] = index + 1
        item["gridPos"] = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}
    return panels


def variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": query, "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


def build_dashboard() -> dict:
    return {
        "title": "dropdoc: packet drops",
        "uid": "dropdoc-drops",
        "description": ("Packet drops per cause from `dropdoc serve` (metric contract: monitoring/README.md). "
                        "The host namespace has an empty netns label: select All to include it."),
        "tags": ["dropdoc", "network", "packet-drops"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            variable("instance", "Instance", "label_values(dropdoc_build_info, instance)"),
            variable("netns", "Network namespace", 'label_values(dropdoc_drops_total{instance=~"$instance"}, netns)'),
        ]},
        "annotations": {"list": []},
        "panels": layout(dashboard_panels()),
    }
