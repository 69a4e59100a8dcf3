"""Rule cases for netfilter.drop, conntrack.table_full and conntrack.insert_failed.

Windows are built from the real captures where there are some (the nft dump of
tests/fixtures/nftables, the conntrack statistics before/after the lab's table overflowed)
and from crafted statistics for the insert race, which the lab cannot reproduce on demand.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from windows import Host, make_window

from dropdoc import rules
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.snapshot import Snapshot
from dropdoc.sources import SourceResult, conntrack, nftables
from dropdoc.sources.conntrack import BUCKETS, COUNT, MAX

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RULESET = nftables.parse((FIXTURES / "nftables" / "rules.bin").read_bytes(),
                         (FIXTURES / "nftables" / "chains.bin").read_bytes())
CT = {name: conntrack.parse((FIXTURES / "conntrack" / name).read_text())
      for name in ("nf_conntrack_idle", "full_before", "full_after", "nf_conntrack_6.x_insert_failed",
                   "nf_conntrack_4.19")}

IDS = ("netfilter.drop", "conntrack.table_full", "conntrack.insert_failed")


@dataclass
class FwHost(Host):
    """A Host that also has nftables rules, legacy-iptables status and conntrack statistics."""

    nftables: Any = field(default_factory=lambda: copy.deepcopy(RULESET))
    conntrack: Any = field(default_factory=lambda: CT["nf_conntrack_idle"])
    legacy_error: str | None = None

    def __post_init__(self) -> None:
        self.sysctls.update({COUNT: 0, MAX: 262144, BUCKETS: 262144,
                             "net.netfilter.nf_conntrack_tcp_timeout_established": 432000,
                             "net.netfilter.nf_conntrack_udp_timeout_stream": 120})

    def snapshot(self, t: float) -> Snapshot:
        snap = super().snapshot(t)
        for name in ("nftables", "conntrack"):
            if name in self.broken:
                status, error = self.broken[name]
                snap.results[name] = SourceResult(status, error=error)
            else:
                snap.results[name] = SourceResult("ok", copy.deepcopy(getattr(self, name)))
        snap.results["iptables_legacy"] = (SourceResult("unavailable", error=self.legacy_error)
                                           if self.legacy_error else SourceResult("ok", {}))
        return snap

    # --- changing the firewall ---
    def hit_rule(self, table: str, handle: int, packets: int, size: int = 92) -> None:
        self.nftables.rules = [
            dataclasses.replace(r, packets=r.packets + packets, bytes=r.bytes + packets * size)
            if (r.table, r.handle) == (table, handle) else r for r in self.nftables.rules]

    def hit_policy(self, table: str, chain: str, packets: int) -> None:
        self.nftables.chains = [
            dataclasses.replace(c, packets=c.packets + packets, bytes=c.bytes + packets * 60)
            if (c.table, c.name) == (table, chain) else c for c in self.nftables.chains]


def evaluate(window):
    findings, not_evaluated = rules.evaluate(window)
    return {f.id: f for f in findings if f.id in IDS}, {k: v for k, v in not_evaluated.items() if k in IDS}


def window(host: FwHost, change=None, seconds: float = 5.0):
    before = host.snapshot(0.0)
    if change:
        change(host)
    return make_window(before, host.snapshot(seconds))


# --- netfilter.drop ----------------------------------------------------------------------------

def test_drop_rule_named_with_its_counter_delta():
    found, _ = evaluate(window(FwHost(), lambda h: h.hit_rule("filt", 4, 10_000)))
    finding = found["netfilter.drop"]
    assert finding.drops == 10_000
    assert finding.severity == "critical" and finding.rate_per_s == pytest.approx(2000.0)
    (subject,) = finding.subjects
    assert subject["rule"] == 'inet filt input handle 4: udp dport 9000 counter drop comment "block udp 9000"'
    assert (subject["table"], subject["chain"], subject["handle"], subject["drops"]) == ("filt", "input", 4, 10_000)
    assert subject["bytes"] == 920_000
    assert finding.evidence[0]["counter"] == "nft.drop.inet.filt.input.4.packets"
    assert finding.evidence[0]["delta"] == 10_000
    (fix,) = finding.fixes
    assert "table inet filt chain input handle 4" in fix["text"] and "is intended" in fix["text"]
    assert "nft delete rule inet filt input handle 4" in fix["text"]
    # the dump has a dropping rule without a counter: the report says its drops are invisible
    assert 'iifname "veth*" drop' in finding.explanation


def test_several_rules_ranked_by_drops_and_policy_drops_of_iptables_nft():
    def change(host):
        host.hit_rule("filt", 5, 30)
        host.hit_rule("filter", 2, 400)
        host.hit_policy("filter", "INPUT", 70)
    found, _ = evaluate(window(FwHost(), change))
    finding = found["netfilter.drop"]
    assert finding.drops == 500
    assert [s["drops"] for s in finding.subjects] == [400, 70, 30]
    assert finding.subjects[0]["comment"] == "ipt drop 9001"
    policy = finding.subjects[1]
    assert policy["policy"] == "drop" and policy["hook"] == "input" and "ip filter INPUT" in policy["chain"]
    assert "iptables -t filter -L INPUT" in finding.fixes[0]["text"]  # iptables-nft table
    assert "hit its `policy drop`" in finding.fixes[1]["text"]


def test_low_rate_is_a_warning():
    found, _ = evaluate(window(FwHost(), lambda h: h.hit_rule("filt", 8, 12)))  # ct state invalid drop
    assert found["netfilter.drop"].severity == "warning"


def test_counter_before_a_match_is_flagged():
    found, _ = evaluate(window(FwHost(), lambda h: h.hit_rule("filt", 14, 50)))
    assert "upper bound" in found["netfilter.drop"].subjects[0]["counter_note"]


def test_accept_rules_never_count():
    found, not_evaluated = evaluate(window(FwHost(), lambda h: h.hit_rule("filt", 16, 10_000)))
    assert "netfilter.drop" not in found
    # ... but the blind spots of this ruleset are said, instead of a silent "no drops"
    assert "without a `counter`" in not_evaluated["netfilter.drop"]


def test_fully_counted_ruleset_without_drops_is_silent():
    host = FwHost()
    host.nftables.rules = [r for r in host.nftables.rules if not (r.drops and r.packets is None)]
    found, not_evaluated = evaluate(window(host))
    assert "netfilter.drop" not in found and "netfilter.drop" not in not_evaluated


def test_empty_ruleset_is_silent():
    host = FwHost(nftables=nftables.Ruleset(generation=None))
    found, not_evaluated = evaluate(window(host))
    assert "netfilter.drop" not in found and "netfilter.drop" not in not_evaluated


def test_unreadable_ruleset_is_not_evaluated_never_zero():
    host = FwHost(broken={"nftables": ("needs-privilege", "nftables rule dump: Operation not permitted")})
    found, not_evaluated = evaluate(window(host))
    assert "netfilter.drop" not in found
    assert "Operation not permitted" in not_evaluated["netfilter.drop"]


def test_counters_reset_during_the_window():
    def reset(host):
        host.nftables.rules = [dataclasses.replace(r, packets=0, bytes=0) if r.packets else r
                               for r in host.nftables.rules]
    found, not_evaluated = evaluate(window(FwHost(), reset))
    assert "netfilter.drop" not in found
    assert "reset" in not_evaluated["netfilter.drop"]


def test_ruleset_change_and_legacy_tables_are_explained():
    host = FwHost(legacy_error="legacy x_tables rules exist (iptables: filter): their drop counters are not read")

    def change(host):
        host.hit_rule("filt", 4, 100)
        host.nftables.generation += 3
    found, _ = evaluate(window(host, change))
    explanation = found["netfilter.drop"].explanation
    assert "ruleset changed during the window" in explanation
    assert "legacy x_tables rules exist" in explanation


# --- conntrack.table_full ----------------------------------------------------------------------

def overflow(host: FwHost) -> None:
    """The lab's captured overflow: 0 -> 256 entries with nf_conntrack_max lowered to 256."""
    host.conntrack = CT["full_after"]
    host.sysctls[COUNT] = 256


def test_table_full_from_the_captured_overflow():
    host = FwHost(conntrack=CT["full_before"])
    host.sysctls[MAX] = 256
    found, _ = evaluate(window(host, overflow))
    finding = found["conntrack.table_full"]
    assert finding.drops == 1206 + 22  # drop + early_drop of the capture
    assert finding.severity == "critical"
    subject = finding.subjects[0]
    assert (subject["count_peak"], subject["max"], subject["fill"]) == (256, 256, 1.0)
    assert (subject["drops"], subject["early_drops"]) == (1206, 22)
    assert "ddlab" not in subject["conntrack_table"] and "srv" in subject["conntrack_table"]
    fix = next(f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == MAX)
    # the peak 256 plus the 1228 refused/evicted, with 50% headroom: 2226 -> 4096
    assert (fix["current"], fix["proposed"]) == (256, 4096)
    assert fix["scope"].startswith("global")
    assert "the peak of 256 entries plus the 1228 refused in the window" in fix["note"]
    assert "up to 1 MiB of kernel memory at 4096 entries" in fix["note"]
    # 262144 buckets already hold 4096 entries: no bucket change proposed
    assert not any(f.get("key") == BUCKETS for f in finding.fixes)
    assert "nf_conntrack_tcp_timeout_established=432000 s (5.0 days)" in next(
        f for f in finding.fixes if f["kind"] == "config")["text"]
    assert "host-wide limit" in finding.explanation


def test_bigger_limit_brings_the_buckets_along():
    host = FwHost(conntrack=CT["full_before"])
    host.sysctls.update({MAX: 65536, BUCKETS: 16384})

    def change(h):
        overflow(h)
        h.sysctls[COUNT] = 65536
    found, _ = evaluate(window(host, change))
    keys = {f["key"]: f for f in found["conntrack.table_full"].fixes if f["kind"] == "sysctl"}
    assert keys[MAX]["proposed"] == 131072
    assert (keys[BUCKETS]["current"], keys[BUCKETS]["proposed"]) == (16384, 131072)


def test_nearly_full_without_drops_is_a_warning():
    host = FwHost()
    host.sysctls[COUNT] = 240_000
    found, _ = evaluate(window(host))
    finding = found["conntrack.table_full"]
    assert finding.drops == 0 and finding.severity == "warning"
    assert "92% full" in finding.summary


def test_half_full_and_no_drops_is_silent():
    host = FwHost()
    host.sysctls[COUNT] = 131_072
    found, not_evaluated = evaluate(window(host))
    assert "conntrack.table_full" not in found and "conntrack.table_full" not in not_evaluated


def test_clash_drops_are_not_table_full():
    before, after = CT["nf_conntrack_6.x_insert_failed"], CT["nf_conntrack_6.x_insert_failed"]
    host = FwHost(conntrack=zeroed(before))
    found, _ = evaluate(window(host, lambda h: setattr(h, "conntrack", after)))
    # every drop of this kernel's window is also an insert_failed (an unresolved clash)
    assert "conntrack.table_full" not in found
    assert found["conntrack.insert_failed"].drops == 4012 + 3987


def test_conntrack_not_loaded_is_not_evaluated_with_the_reason():
    host = FwHost(broken={"conntrack": ("unavailable", "connection tracking is not loaded here")})
    found, not_evaluated = evaluate(window(host))
    assert "conntrack.table_full" not in found
    assert "not loaded" in not_evaluated["conntrack.table_full"]


# --- conntrack.insert_failed ---------------------------------------------------------------------

def zeroed(stats: conntrack.ConntrackStats) -> conntrack.ConntrackStats:
    return conntrack.ConntrackStats(stats.columns, tuple(
        conntrack.CpuConntrack(c.cpu, c.entries, {k: (0 if v is not None else None) for k, v in c.counters.items()})
        for c in stats.cpus))


def test_insert_failed_per_cpu_with_clash_resolution_and_nat_hint():
    host = FwHost(conntrack=zeroed(CT["nf_conntrack_6.x_insert_failed"]))
    host.sysctls[BUCKETS] = 65536
    host.nftables.chains.append(nftables.NftChain("ip", "nat", "POSTROUTING", 9, "postrouting", 100, "accept",
                                                  "nat", None, None))
    found, _ = evaluate(window(host, lambda h: setattr(h, "conntrack", CT["nf_conntrack_6.x_insert_failed"])))
    finding = found["conntrack.insert_failed"]
    assert finding.drops == 7999 and finding.severity == "critical"
    assert [(s["cpu"], s["insert_failed"]) for s in finding.subjects] == [(0, 4012), (1, 3987)]
    assert finding.subjects[0]["clash_resolve"] == 770239
    assert "resolved 1541902 other clashes" in finding.explanation
    assert "NAT is configured here (ip nat POSTROUTING" in finding.explanation
    texts = " ".join(f.get("text", "") for f in finding.fixes)
    assert "fully-random" in texts and "single-request-reopen" in texts
    # 3 inserts failed on too-long hash chains: more buckets, derived from the current number
    bucket_fix = next(f for f in finding.fixes if f.get("key") == BUCKETS)
    assert (bucket_fix["current"], bucket_fix["proposed"]) == (65536, 131072)


def test_insert_failed_on_an_old_kernel_is_an_upper_bound():
    host = FwHost(conntrack=zeroed(CT["nf_conntrack_4.19"]))
    found, _ = evaluate(window(host, lambda h: setattr(h, "conntrack", CT["nf_conntrack_4.19"])))
    finding = found["conntrack.insert_failed"]
    assert finding.drops == 1722 + 1650
    assert "upper bound" in finding.explanation
    assert not any(f.get("key") == BUCKETS for f in finding.fixes)  # no chaintoolong column here
    # an old kernel's drop counts clashes too and cannot be told apart: table_full reports it
    assert found["conntrack.table_full"].drops == 3372


def test_quiet_firewall_and_conntrack_fire_nothing():
    found, not_evaluated = evaluate(window(FwHost(nftables=nftables.Ruleset(generation=1))))
    assert found == {} and not_evaluated == {}


def test_diagnosis_json_carries_the_rule():
    diagnosis = diagnosis_from_window(window(FwHost(), lambda h: h.hit_rule("filt", 4, 500)))
    out = diagnosis.to_dict()
    finding = next(f for f in out["findings"] if f["id"] == "netfilter.drop")
    assert finding["subjects"][0]["handle"] == 4 and finding["drops"] == 500
    assert out["coverage"]["nftables"] == "ok"


def test_many_dropping_rules_name_the_largest_and_sum_the_rest():
    def change(host):
        for handle, packets in ((4, 900), (5, 800), (6, 700), (7, 600), (8, 500), (9, 400), (10, 300),
                                (12, 200), (14, 100), (17, 90)):
            host.hit_rule("filt", handle, packets)
        host.hit_rule("filter", 2, 7)
        host.hit_rule("filter", 3, 3)
    found, _ = evaluate(window(FwHost(), change))
    finding = found["netfilter.drop"]
    assert finding.drops == 4600
    assert len(finding.subjects) == len(finding.fixes) == 10
    assert [s["drops"] for s in finding.subjects][:2] == [900, 800]
    more = next(e for e in finding.evidence if "more_rules" in e)
    assert (more["more_rules"], more["drops"]) == (2, 10)
