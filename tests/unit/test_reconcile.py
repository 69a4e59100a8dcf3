"""Counters vs trace reconciliation: trace evidence on findings, what only one side saw."""

from __future__ import annotations

from dropdoc.model import Finding
from dropdoc.rules.engine import load_rules
from dropdoc.rules.reconcile import matches, reason_table, reconcile


def finding(rule_id: str, drops: int) -> Finding:
    return Finding(id=rule_id, layer="transport", severity="critical", drops=drops, rate_per_s=drops / 5,
                   benign=False, summary="")


def trace(*drops, status="ok"):
    return {"backend": "bpf", "status": status, "error": None, "lost": 0, "seconds": 5.0,
            "drops": [{"reason": r, "location": loc, "count": n} for r, loc, n in drops]}


def test_location_prefix_restricts_a_reason():
    assert matches(("NO_SOCKET@__udp",), {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv+0x7a2"})
    assert not matches(("NO_SOCKET@__udp",), {"reason": "NO_SOCKET", "location": "tcp_v4_rcv+0x10"})
    assert matches(("NETFILTER_DROP",), {"reason": "NETFILTER_DROP", "location": "nft_do_chain+0x1"})


def test_matching_reasons_become_evidence_and_partial_sight_is_said():
    overflow = finding("tcp.listen_overflow", 1213)
    section = reconcile([overflow], trace(("TCP_LISTEN_OVERFLOW", "tcp_v4_rcv+0x91", 28),
                                          ("NO_SOCKET", "cookie_v4_check+0x4e5", 900),
                                          ("TCP_OLD_SEQUENCE", "tcp_validate_incoming+0x1", 7)))
    reasons = {e["reason"]: e["count"] for e in overflow.evidence if "reason" in e}
    assert reasons == {"TCP_LISTEN_OVERFLOW": 28, "NO_SOCKET": 900}
    notes = [e["note"] for e in overflow.evidence if "note" in e]
    assert notes and "928 of the 1213" in notes[0]
    assert [u["reason"] for u in section["unmatched"]] == ["TCP_OLD_SEQUENCE"]
    assert section["unmatched"][0]["benign"] is True
    assert section["total"] == 935 and section["counter_only"] == []


def test_drop_without_reason_is_counter_only_with_the_rules_note():
    syn = finding("tcp.syn_queue_full", 50)
    section = reconcile([syn], trace())
    assert section["counter_only"] == ["tcp.syn_queue_full"]
    assert "no drop reason" in syn.evidence[-1]["note"]


def test_trace_only_reason_names_the_rule_that_would_claim_it():
    section = reconcile([], trace(("NEIGH_QUEUEFULL", "__neigh_event_send+0x2", 120)))
    entry = section["unmatched"][0]
    assert entry["hint"] == "neigh.unresolved" and entry["benign"] is False
    assert entry["rate_per_s"] == 24.0


def test_low_rate_not_specified_is_benign_high_rate_is_not():
    low = reconcile([], trace(("NOT_SPECIFIED", "x+0x1", 10)))["unmatched"][0]
    high = reconcile([], trace(("NOT_SPECIFIED", "x+0x1", 500)))["unmatched"][0]
    assert low["benign"] is True and high["benign"] is False


def test_tracer_unavailable_gives_a_gap_not_evidence():
    overflow = finding("tcp.listen_overflow", 10)
    section = reconcile([overflow], trace(status="needs-privilege"))
    assert section["status"] == "needs-privilege" and "unmatched" not in section
    assert not any(e.get("source") == "trace" for e in overflow.evidence)
    assert reconcile([overflow], None) is None


def test_reason_table_and_rule_patterns_use_real_reason_names():
    # Names must exist in the running kernel's enum (captured format file, kernel 6.18).
    import pathlib
    import re

    fmt = pathlib.Path(__file__).parent.parent / "fixtures" / "trace" / "kfree_skb_format_6.18"
    known = set(re.findall(r'"([A-Z0-9_]+)"', fmt.read_text()))
    used = {p.partition("@")[0] for r in load_rules() for p in r.trace_reasons} | set(reason_table())
    assert used - known == set()
