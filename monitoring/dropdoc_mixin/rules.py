"""The alert rules: one alert per main cause (critical and warning, thresholds from the
catalogue), the conntrack fill warning and the meta-alerts. Why the windows and `for:`
durations are what they are: monitoring/README.md."""

from __future__ import annotations

from dataclasses import dataclass

from dropdoc.rules.engine import Rule, load_rules
from dropdoc.rules.enrichers.netfilter import NEAR_FULL

from .contract import JOB

RUNBOOK = "docs/runbook.md"


@dataclass(frozen=True)
class Cause:
    alert: str
    finding: str
    # softnet_stat is host-wide: every namespace dropdoc serves shows the same counters, so
    # the alert is one per host (max over namespaces) instead of one per namespace.
    host_wide: bool = False


CAUSES = (
    Cause("DropdocListenOverflow", "tcp.listen_overflow"),
    Cause("DropdocSynQueueFull", "tcp.syn_queue_full"),
    Cause("DropdocUdpReceiveBufferFull", "udp.rcvbuf_full"),
    Cause("DropdocSoftnetBacklogDrop", "cpu.backlog_drop", host_wide=True),
    Cause("DropdocConntrackTableFull", "conntrack.table_full"),
    Cause("DropdocQdiscDrop", "qdisc.drop"),
    Cause("DropdocNicRxMissed", "nic.rx_missed"),
)

# Critical: the catalogue's critical rate averaged over CRITICAL_WINDOW, for longer than the
# window; warning: any drop (or the warning rate) over WARNING_WINDOW, for longer than that
# window. A single burst keeps a rate over a window up for at most the window, so with
# `for:` = window + 5m it never fires on its own, while bursts that recur within the window
# keep the condition true and fire. The reasoning: monitoring/README.md.
CRITICAL_WINDOW, CRITICAL_FOR = "5m", "10m"
WARNING_WINDOW, WARNING_FOR = "10m", "15m"
NEARLY_FULL_FOR = "5m"
SOURCE_DOWN_FOR = "10m"
EXPORTER_DOWN_FOR = "5m"

WHERE = '{{ if $labels.netns }}netns {{ $labels.netns }}{{ else }}the host namespace{{ end }}'
DIAGNOSE = '`dropdoc diagnose{{ if $labels.netns }} --netns {{ $labels.netns }}{{ end }}`'


def catalogue() -> dict[str, Rule]:
    return {rule.id: rule for rule in load_rules()}


def number(value: float) -> str:
    """A threshold as PromQL and YAML spell it (1.0 -> 1, 0.9 -> 0.9)."""
    return f"{value:g}"


def seconds(duration: str) -> int:
    amount, unit = int(duration[:-1]), duration[-1]
    return amount * {"s": 1, "m": 60, "h": 3600}[unit]





def drops_rate(cause: Cause, window: str) -> str:
    rate = f'rate(dropdoc_drops_total{{finding="{cause.finding}"}}[{window}])'
    return f"max without (netns) ({rate})" if cause.host_wide else rate


def warning_condition(rule: Rule) -> str:
    # warning_per_s = 0 means "any drop": a rate >= 0 would always be true.
    return "> 0" if rule.warning_per_s <= 0 else f">= {number(rule.warning_per_s)}"


def counters(rule: Rule, shown: int = 3) -> str:
    names = list(rule.drop_counters)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def runbook_url(base: str, anchor: str) -> str:
    return f"{base}{RUNBOOK}#{anchor}"


def cause_annotations(cause: Cause, rule: Rule, window: str, base: str) -> dict[str, str]:
    where = "host-wide" if cause.host_wide else f"in {WHERE}"
    diagnose = "`dropdoc diagnose`" if cause.host_wide else DIAGNOSE
    return {
        "summary": (f"{rule.title} ({cause.finding}): {{{{ $value | humanize }}}} drops/s over {window} "
                    f"{where} on {{{{ $labels.instance }}}}"),
        "description": (f"dropdoc counts {cause.finding} drops ({counters(rule)}) "
                        f"on {{{{ $labels.instance }}}}. Run {diagnose} there: it names the affected "
                        f"socket, process or device and the fix."),
        "runbook_url": runbook_url(base, rule.runbook),
    }


def cause_rules(cause: Cause, rule: Rule, base: str) -> list[dict]:
    critical = {
        "alert": cause.alert,
        "expr": f"{drops_rate(cause, CRITICAL_WINDOW)} >= {number(rule.critical_per_s)}",
        "for": CRITICAL_FOR,
        "labels": {"severity": "critical", "finding": cause.finding},
        "annotations": cause_annotations(cause, rule, CRITICAL_WINDOW, base),
    }
    warning = {
        "alert": cause.alert,
        "expr": f"{drops_rate(cause, WARNING_WINDOW)} {warning_condition(rule)}",
        "for": WARNING_FOR,
        "labels": {"severity": "warning", "finding": cause.finding},
        "annotations": cause_annotations(cause, rule, WARNING_WINDOW, base),
    }
    return [critical, warning]


def nearly_full_rule(rules: dict[str, Rule], base: str) -> dict:
    return {
        "alert": "DropdocConntrackTableNearlyFull",
        "expr": f"dropdoc_conntrack_entries / (dropdoc_conntrack_max > 0) >= {number(NEAR_FULL)}",
        "for": NEARLY_FULL_FOR,
        "labels": {"severity": "warning", "finding": "conntrack.table_full"},
        "annotations": {
            "summary": (f"conntrack table {{{{ $value | humanizePercentage }}}} full in {WHERE} "
                        "on {{ $labels.instance }}: new connections are dropped once it fills"),
            "description": ("nf_conntrack_count / nf_conntrack_max has stayed at or above "
                            f"{NEAR_FULL:.0%} for {NEARLY_FULL_FOR}. Run {DIAGNOSE} on {{{{ $labels.instance }}}} "
                            "for the proposed nf_conntrack_max and what fills the table."),
            "runbook_url": runbook_url(base, rules["conntrack.table_full"].runbook),
        },
    }


def meta_rules(base: str) -> list[dict]:
    readme = f"{base}monitoring/README.md"
    return [
        {
            "alert": "DropdocSourceDown",
            # The exporter's contract: dropdoc_source_up is 1 (read) or 0 (failed, needs
            # privilege) for a source this host has; one it lacks (no conntrack module) has no
            # source_up series but dropdoc_source_unavailable, and dropdoc_trace_up exists only
            # with --trace. So every 0 here is something to fix, for as long as it lasts.
            "expr": 'dropdoc_source_up == 0 or label_replace(dropdoc_trace_up == 0, "source", "trace", "", "")',
            "for": SOURCE_DOWN_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": ("dropdoc cannot read {{ $labels.source }} in " + WHERE
                            + " on {{ $labels.instance }}: the findings that rely on it are blind"),
                "description": ("The source has failed or needed privilege for " + SOURCE_DOWN_FOR + ". Run "
                                "`dropdoc collect{{ if $labels.netns }} --netns {{ $labels.netns }}{{ end }}`"
                                " on {{ $labels.instance }}: its coverage says why (needs-privilege: run "
                                "dropdoc serve as root; failed: the error); the exporter logs it too."),
                "runbook_url": f"{readme}#dropdocsourcedown",
            },
        },
        {
            "alert": "DropdocTraceLostEvents",
            # One tracer serves every namespace: the same count under each netns label.
            "expr": f"max without (netns) (rate(dropdoc_trace_lost_events_total[{WARNING_WINDOW}])) > 0",
            "for": WARNING_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": ("dropdoc's kfree_skb tracer on {{ $labels.instance }} loses {{ $value | humanize }} "
                            "events/s: dropdoc_trace_drops_total undercounts"),
                "description": ("The per-reason drop counts are incomplete; the counter-based drop "
                                "metrics (dropdoc_drops_total) are not affected."),
                "runbook_url": f"{readme}#dropdoctracelostevents",
            },
        },
        {
            "alert": "DropdocExporterDown",
            "expr": f'up{{job="{JOB}"}} == 0',
            "for": EXPORTER_DOWN_FOR,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "dropdoc exporter {{ $labels.instance }} is down: packet drops on it go unnoticed",
                "description": ("Prometheus has failed to scrape `dropdoc serve` for " + EXPORTER_DOWN_FOR
                                + "; every other Dropdoc alert of this instance is blind meanwhile."),
                "runbook_url": f"{readme}#dropdocexporterdown",
            },
        },
    ]


def build_rules(base: str = "") -> dict:
    rules = catalogue()
    group = []
    for cause in CAUSES:
        group += cause_rules(cause, rules[cause.finding], base)
        if cause.finding == "conntrack.table_full":
            group.append(nearly_full_rule(rules, base))
    return {"groups": [
        {"name": "dropdoc-drops", "rules": group},
        {"name": "dropdoc-meta", "rules": meta_rules(base)},
    ]}
