"""Firewall and conntrack labs end to end: real nft rules, a real conntrack table, real traffic
between the lab's namespaces; the diagnosis must name the rule / the table as the top finding."""

from __future__ import annotations

import subprocess

import pytest

from dropdoc.lab import scenarios
from dropdoc.lab.catalog import netfilter as catalog
from dropdoc.rules.enrichers.netfilter import table_proposal

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=True).stdout


def host_conntrack_max() -> int:
    with open("/proc/sys/net/netfilter/nf_conntrack_max", encoding="ascii") as handle:
        return int(handle.read())


def load_of(result, module_args: str) -> dict:
    programs = result.before.load.get("programs", [result.before.load])
    return programs[0] if module_args == "udp" else programs[1]


def test_netfilter_drop_names_the_rule_and_its_counter_delta(no_leftovers):
    ruleset_before = host_ruleset()
    result = scenarios.run("netfilter-drop")
    diagnosis = result.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "netfilter.drop"
    assert top.severity == "critical" and diagnosis.exit_code() == 2
    udp, tcp = load_of(result, "udp"), load_of(result, "tcp")
    assert udp["sent"] == 10000 and tcp["started"] == 100 and tcp["connected"] == 0
    by_comment = {s["comment"]: s for s in top.subjects}
    blocked = by_comment[f"dropdoc lab: block udp {catalog.UDP_PORT}"]
    refused = by_comment[f"dropdoc lab: refuse tcp {catalog.TCP_PORT}"]
    # every datagram sent hit the drop rule; every connection attempt's SYN hit the reject rule
    assert blocked["drops"] == udp["sent"]
    assert refused["drops"] == tcp["started"]
    assert (blocked["family"], blocked["table"], blocked["chain"]) == ("inet", catalog.FW_TABLE, "input")
    assert blocked["matches"] == f"udp dport {catalog.UDP_PORT}" and blocked["verdict"] == "drop"
    assert refused["verdict"] == "reject"
    assert blocked["rule"].startswith(f"inet {catalog.FW_TABLE} input handle {blocked['handle']}: ")
    counter = f"nft.drop.inet.{catalog.FW_TABLE}.input.{blocked['handle']}.packets"
    assert diagnosis.counter_deltas[counter] == blocked["drops"]
    assert top.drops == blocked["drops"] + refused["drops"]
    fix = top.fixes[0]["text"]
    assert f"chain input handle {blocked['handle']}" in fix and "is intended" in fix
    assert diagnosis.coverage["nftables"] == "ok"
    assert host_ruleset() == ruleset_before  # the rules lived in the lab namespace only


def test_conntrack_full_names_the_table_and_restores_the_host_limit(no_leftovers):
    limit_before = host_conntrack_max()
    try:
        result = scenarios.run("conntrack-full")
    except catalog.ScenarioSkipped as exc:
        assert host_conntrack_max() == limit_before
        pytest.skip(str(exc))
    assert host_conntrack_max() == limit_before  # restored on teardown
    diagnosis = result.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "conntrack.table_full"
    assert top.severity == "critical"
    subject = top.subjects[0]
    # The fill is a gauge read at the two snapshots: full during the burst, early drops may
    # have freed some entries by the end of the window.
    assert subject["max"] == catalog.CT_LOWERED
    assert 0.8 * catalog.CT_LOWERED <= subject["count_peak"] <= catalog.CT_LOWERED
    assert result.server_ns in subject["conntrack_table"]
    deltas = diagnosis.counter_deltas

    def total(name: str) -> int:
        return sum(v for k, v in deltas.items() if k.startswith("conntrack.cpu") and k.endswith(f".{name}") and v)
    assert top.drops == total("drop") - total("insert_failed") + total("early_drop") > 0
    # every datagram was a new flow: tracked, evicted-and-replaced, or dropped - except those
    # whose random source port repeated one still tracked (~3% of 3000 here): same flow
    sent = result.before.load["sent"]
    assert 0.9 * sent <= catalog.CT_LOWERED + top.drops <= sent
    fix = next(f for f in top.fixes if f["kind"] == "sysctl")
    assert fix["key"] == "net.netfilter.nf_conntrack_max"
    # the peak plus every refused connection, with 50% headroom (lab --fix: tests/functional/test_lab_fixes.py)
    assert (fix["current"], fix["proposed"]) == (catalog.CT_LOWERED,
                                                 table_proposal(catalog.CT_LOWERED, subject["count_peak"], top.drops))
    assert fix["proposed"] >= subject["count_peak"] + top.drops
    assert fix["scope"].startswith("global")


def test_conntrack_full_refuses_when_it_could_not_be_safe():
    current = host_conntrack_max()
    with pytest.raises(catalog.ScenarioSkipped, match="already"):
        catalog.check_conntrack_room(lowered=current)
    counts = catalog.conntrack_counts()
    assert any("/proc/1/ns/net" in label or "net:[" in label for label in counts)
