"""The catalogue is data: check it against the design's id list, the runbook and the code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dropdoc.rules import enrichers
from dropdoc.rules.engine import LAYERS, load_rules, parse_rules

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"
DESIGN = Path(os.environ.get("DROPDOC_DESIGN", "/work/shared/DESIGN.md"))

# The finding catalogue of DESIGN.md (ids are part of the JSON contract) with their layers.
DESIGN_IDS = {
    "nic.rx_missed": "link", "nic.errors": "link", "nic.tx_errors": "link",
    "cloud.allowance_exceeded": "link",
    "cpu.backlog_drop": "kernel", "cpu.time_squeeze": "kernel", "qdisc.drop": "kernel",
    "netfilter.drop": "network", "conntrack.table_full": "network",
    "conntrack.insert_failed": "network", "ip.rp_filter": "network", "ip.no_route": "network",
    "ip.ttl_exceeded": "network", "ip.frag_needed": "network", "ip.reassembly_timeout": "network",
    "neigh.unresolved": "network",
    "tcp.listen_overflow": "transport", "tcp.syn_queue_full": "transport",
    "tcp.backlog_drop": "transport", "tcp.rcvq_drop": "transport",
    "tcp.memory_pressure": "transport", "tcp.paws_drop": "transport",
    "udp.rcvbuf_full": "transport", "udp.memory": "transport", "udp.no_port": "transport",
    "udp.sndbuf": "transport",
    "socket.filter_drop": "socket",
}

RULES = load_rules()
RULE_IDS = [rule.id for rule in RULES]


def anchor_for(finding_id: str) -> str:
    return re.sub(r"[._]", "-", finding_id)


def runbook_sections() -> dict[str, str]:
    """anchor -> the heading line right after it."""
    lines = RUNBOOK.read_text(encoding="utf-8").splitlines()
    sections = {}
    for index, line in enumerate(lines):
        match = re.fullmatch(r'<a id="([a-z0-9-]+)"></a>', line.strip())
        if match:
            assert match.group(1) not in sections, f"duplicate anchor {match.group(1)}"
            following = next((l for l in lines[index + 1:] if l.strip()), "")
            sections[match.group(1)] = following
    return sections


SECTIONS = runbook_sections()


def test_catalogue_is_not_empty():
    assert len(RULES) >= 6


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_rule_id_is_in_the_design_catalogue(rule):
    assert rule.id in DESIGN_IDS


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_rule_layer_is_known_and_matches_the_design(rule):
    assert rule.layer in LAYERS
    assert rule.layer == DESIGN_IDS[rule.id]


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_rule_runbook_anchor_exists(rule):
    assert rule.runbook == anchor_for(rule.id)
    assert rule.runbook in SECTIONS, f"docs/runbook.md has no <a id=\"{rule.runbook}\">"
    assert SECTIONS[rule.runbook].startswith(f"## {rule.id} — ")


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_rule_enricher_exists(rule):
    if rule.enricher is not None:
        assert rule.enricher in enrichers.ENRICHERS
        assert callable(enrichers.ENRICHERS[rule.enricher])


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_rule_is_well_formed(rule):
    assert rule.drop_counters, "a rule needs counters to count drops"
    assert rule.title and rule.summary
    assert 0 <= rule.warning_per_s <= rule.critical_per_s
    assert bool(rule.benign_below_per_s) == bool(rule.benign_reason)
    assert "{drops}" in rule.summary
    summary = rule.summary.format(drops=286, rate=57.2)
    assert "286" in summary and "57.2" in summary
    assert not set(rule.extra), f"unknown keys in the catalogue: {sorted(rule.extra)}"


def test_every_enricher_is_used():
    assert set(enrichers.ENRICHERS) == {rule.enricher for rule in RULES if rule.enricher}


def test_runbook_has_one_section_per_design_id():
    assert set(SECTIONS) == {anchor_for(i) for i in DESIGN_IDS}
    for finding_id in DESIGN_IDS:
        heading = SECTIONS[anchor_for(finding_id)]
        assert heading.startswith(f"## {finding_id} — "), heading


def test_runbook_marks_undetected_ids_as_planned():
    detected = set(RULE_IDS)
    for finding_id in DESIGN_IDS:
        heading = SECTIONS[anchor_for(finding_id)]
        assert ("(detection planned)" in heading) == (finding_id not in detected), heading


def test_runbook_internal_links_resolve():
    text = RUNBOOK.read_text(encoding="utf-8")
    targets = set(re.findall(r"\]\(#([a-z0-9-]+)\)", text))
    assert targets, "the runbook index links to its sections"
    assert targets <= set(SECTIONS)


def test_parse_rules_rejects_unknown_layer_and_duplicates():
    rule = 'id = "x.y"\nlayer = "{layer}"\ntitle = "t"\nsummary = "{{drops}}"\ndrop_counters = ["Udp.NoPorts"]\n'
    with pytest.raises(ValueError, match="unknown layer"):
        parse_rules("[[rule]]\n" + rule.format(layer="physics"))
    with pytest.raises(ValueError, match="duplicate"):
        parse_rules(("[[rule]]\n" + rule.format(layer="transport")) * 2)


@pytest.mark.skipif(not DESIGN.is_file(), reason="DESIGN.md not available here")
def test_design_ids_match_design_md():
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index("## Finding catalogue")
    table = text[start:text.index("\n## ", start + 1)]
    rows = re.findall(r"^\| ([a-z]+\.[a-z_]+) \| ([a-z]+) \|", table, flags=re.M)
    assert dict(rows) == DESIGN_IDS
