"""diagnose --trace: drop reasons from the kernel attached to the findings they explain,
and reconciled with the counters (exact where a reason exists, a pointer where it does not)."""

from __future__ import annotations

import json

import pytest

from dropdoc.lab import scenarios

from .conftest import requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]


def trace_evidence(finding) -> dict[str, int]:
    return {e["reason"]: e["count"] for e in finding.evidence if e.get("source") == "trace" and "reason" in e}


def test_firewall_drops_traced_exactly_as_the_rule_counters_count(no_leftovers):
    diagnosis = scenarios.run("netfilter-drop").before.diagnosis
    assert diagnosis.coverage["trace"] == "ok" and diagnosis.trace["backend"] == "bpf"
    top = diagnosis.findings[0]
    assert top.id == "netfilter.drop"
    # Counters (nft rule counters) and the in-kernel tracer agree to the packet.
    assert trace_evidence(top) == {"NETFILTER_DROP": top.drops}
    assert "netfilter.drop" not in diagnosis.trace["counter_only"]


def test_listen_overflow_trace_is_a_pointer_and_says_how_much_it_saw(no_leftovers):
    diagnosis = scenarios.run("listen-overflow").before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "tcp.listen_overflow"
    seen = trace_evidence(top)
    assert seen.get("TCP_LISTEN_OVERFLOW", 0) > 0
    assert sum(seen.values()) < top.drops  # most accept-queue drops carry no usable reason
    notes = [e["note"] for e in top.evidence if e.get("source") == "trace" and "note" in e]
    assert any(f"of the {top.drops} drops" in n for n in notes)


def test_syn_queue_drops_are_reported_as_seen_only_by_counters(no_leftovers):
    diagnosis = scenarios.run("syn-queue-full").before.diagnosis
    assert diagnosis.findings[0].id == "tcp.syn_queue_full"
    assert "tcp.syn_queue_full" in diagnosis.trace["counter_only"]


def test_no_trace_flag_and_json_section():
    proc = run_cli("diagnose", "--duration", "0.3", "--format", "json", "--no-trace")
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "trace" not in json.loads(proc.stdout)
    proc = run_cli("diagnose", "--duration", "0.3", "--format", "json", "--trace")
    document = json.loads(proc.stdout)
    assert document["coverage"]["trace"] == "ok"
    assert {"backend", "total", "reasons", "unmatched", "counter_only"} <= set(document["trace"])
