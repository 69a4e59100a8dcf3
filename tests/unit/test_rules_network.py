"""Rule cases of the network layer: hand-built windows (counters, interfaces, routes,
neighbour entries, sysctls) -> expected findings, evidence, subjects and fixes."""

from __future__ import annotations

import pytest

from dropdoc import rules
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.model import EXIT_HEALTHY
from dropdoc.rules.engine import load_rules
from dropdoc.sources.network_conf import NetworkConf

from windows import NetHost, make_window, neighbour, net_interface, quiet_window, route

NETWORK_IDS = {"ip.rp_filter", "ip.no_route", "ip.ttl_exceeded", "ip.frag_needed",
               "ip.reassembly_timeout", "neigh.unresolved"}


def evaluate(window):
    findings, not_evaluated = rules.evaluate(window)
    return {f.id: f for f in findings}, [f.id for f in findings], not_evaluated


def window_with(*changes, host: NetHost | None = None, seconds: float = 5.0):
    host = host or NetHost()
    before = host.snapshot(0.0)
    for change in changes:
        change(host)
    return make_window(before, host.snapshot(seconds))


def sysctl_fix(finding, key):
    matches = [f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == key]
    assert len(matches) <= 1
    return matches[0] if matches else None


def texts(finding, kind=None):
    return " | ".join(f.get("text", "") for f in finding.fixes if kind is None or f["kind"] == kind)


def evidence_delta(finding, counter):
    return next(e["delta"] for e in finding.evidence if e.get("counter") == counter)


def add_link(host: NetHost, name: str) -> None:
    host.link[name] = dict(host.link["eth0"]) | {"rx_packets": 1_000, "tx_packets": 1_000}

# --- one positive case per id -------------------------------------------------------------

def rp_filter_drops(host):
    host.bump("netstat", "TcpExt.IPReversePathFilter", 400)
    host.bump("link", "eth1.rx_packets", 400)


def no_route_drops(host):
    host.bump("netstat", "IpExt.InNoRoutes", 300)
    host.bump("snmp", "Icmp.OutDestUnreachs", 12)


def ttl_loop(host):
    host.bump("snmp", "Ip.InHdrErrors", 200)
    host.bump("snmp", "Ip.ForwDatagrams", 6200)
    host.bump("snmp", "Icmp.OutTimeExcds", 7)
    host.bump("snmp", "Icmp.OutRateLimitHost", 193)


def frag_drops(host):
    host.bump("snmp", "Ip.FragFails", 150)
    host.bump("snmp", "Icmp.OutDestUnreachs", 150)
    host.bump("snmp", "Ip.ForwDatagrams", 150)


def reasm_timeouts(host):
    for counter in ("Ip.ReasmFails", "Ip.ReasmTimeout", "Ip.ReasmReqds"):
        host.bump("snmp", counter, 200)
    host.bump("snmp", "Icmp.OutTimeExcds", 6)


def neigh_discards(host):
    host.bump_neigh("arp", "unresolved_discards", 1998)


def strict_eth1(host: NetHost) -> NetHost:
    add_link(host, "eth1")
    host.network_conf.interfaces["eth1"] = net_interface("eth1", 3, rp_filter=1)
    return host


def unresolved_on_eth1(host: NetHost, state: str = "INCOMPLETE") -> NetHost:
    host.network_conf.neighbours.append(neighbour("10.1.0.9", "eth1", state=state))
    return host


POSITIVE = {
    "ip.rp_filter": (rp_filter_drops, lambda: strict_eth1(NetHost())),
    "ip.no_route": (no_route_drops, NetHost),
    "ip.ttl_exceeded": (ttl_loop, NetHost),
    "ip.frag_needed": (frag_drops, NetHost),
    "ip.reassembly_timeout": (reasm_timeouts, NetHost),
    "neigh.unresolved": (neigh_discards, lambda: unresolved_on_eth1(NetHost())),
}


def test_every_network_rule_has_a_case():
    assert set(POSITIVE) == NETWORK_IDS
    assert NETWORK_IDS <= {rule.id for rule in load_rules()}
    assert {r.id for r in load_rules() if r.layer == "network" and r.id.startswith(("ip.", "neigh."))} == NETWORK_IDS


@pytest.mark.parametrize("rule_id", sorted(POSITIVE))
def test_positive_fires_only_its_rule(rule_id):
    change, make_host = POSITIVE[rule_id]
    by_id, ids, not_evaluated = evaluate(window_with(change, host=make_host()))
    assert ids == [rule_id]
    assert not NETWORK_IDS & set(not_evaluated)
    finding = by_id[rule_id]
    assert finding.layer == "network"
    assert finding.severity == "critical" and not finding.benign
    assert finding.rate_per_s == pytest.approx(finding.drops / 5.0)
    assert str(finding.drops) in finding.summary
    assert finding.runbook == f"docs/runbook.md#{rule_id.replace('.', '-').replace('_', '-')}"
    assert finding.fixes, "every network finding proposes something"


@pytest.mark.parametrize("rule_id", sorted(POSITIVE))
def test_quiet_window_fires_nothing_and_evaluates_everything(rule_id):
    by_id, ids, not_evaluated = evaluate(quiet_window(POSITIVE[rule_id][1]()))
    assert rule_id not in by_id
    assert rule_id not in not_evaluated

# --- ip.rp_filter -------------------------------------------------------------------------

def test_rp_filter_names_the_strict_interface_that_received_traffic():
    host = strict_eth1(NetHost())
    f = evaluate(window_with(rp_filter_drops, host=host))[0]["ip.rp_filter"]
    assert (f.drops, f.rate_per_s) == (400, pytest.approx(80.0))
    assert evidence_delta(f, "TcpExt.IPReversePathFilter") == 400
    assert f.subjects == [{"interface": "eth1", "rp_filter": 1, "all": 0, "effective": 1, "mode": "strict",
                           "rx_packets": 400}]
    assert "strict reverse-path filtering on eth1" in f.explanation
    fix = sysctl_fix(f, "net.ipv4.conf.eth1.rp_filter")
    assert (fix["current"], fix["proposed"], fix["scope"]) == (1, 2, "per network namespace")
    assert sysctl_fix(f, "net.ipv4.conf.all.rp_filter") is None  # all is 0: the interface alone decides
    assert "log_martians" in texts(f, "command")
    assert "ip route get" in texts(f, "config")


def test_rp_filter_all_strict_needs_all_lowered_too():
    # effective = max(all, interface): with all=1, lowering eth1 alone changes nothing.
    host = NetHost()
    add_link(host, "eth1")
    host.network_conf.rp_filter_all = 1
    f = evaluate(window_with(rp_filter_drops, host=host))[0]["ip.rp_filter"]
    assert [(s["interface"], s["rp_filter"], s["effective"]) for s in f.subjects] == [("eth1", 0, 1)]
    fix = sysctl_fix(f, "net.ipv4.conf.all.rp_filter")
    assert (fix["current"], fix["proposed"]) == (1, 2)
    assert sysctl_fix(f, "net.ipv4.conf.eth1.rp_filter") is None  # its own value is 0 already


def test_rp_filter_loose_mode_means_no_route_back():
    host = NetHost()
    add_link(host, "eth1")
    host.network_conf.interfaces["eth1"] = net_interface("eth1", 3, rp_filter=2)
    host.network_conf.routes = [route("10.1.0.0/24", "eth1")]
    f = evaluate(window_with(rp_filter_drops, host=host))[0]["ip.rp_filter"]
    assert f.subjects[0]["mode"] == "loose"
    assert "no route back to its source at all" in f.explanation
    assert [x for x in f.fixes if x["kind"] == "sysctl"] == []
    assert "no IPv4 default route" in texts(f, "config")


def test_rp_filter_several_strict_interfaces_none_receiving_are_suspects():
    host = NetHost()
    host.network_conf.rp_filter_all = 1

    def drops_only(h):
        h.bump("netstat", "TcpExt.IPReversePathFilter", 10)
    f = evaluate(window_with(drops_only, host=host))[0]["ip.rp_filter"]
    assert [s["interface"] for s in f.subjects] == ["eth0", "eth1"]
    assert all(s["suspected"] for s in f.subjects)


def test_rp_filter_off_everywhere_says_so():
    f = evaluate(window_with(rp_filter_drops, host=NetHost()))[0]["ip.rp_filter"]
    assert f.subjects == [] and f.fixes == []
    assert "switched off" in f.explanation


def test_rp_filter_not_evaluated_on_a_kernel_without_the_counter():
    host = NetHost()
    del host.netstat["TcpExt"]["IPReversePathFilter"]
    _, _, not_evaluated = evaluate(quiet_window(host))
    assert not_evaluated.get("ip.rp_filter") == "counters not available"

# --- ip.no_route --------------------------------------------------------------------------

def test_no_route_forwarded_without_default_route():
    host = NetHost()
    host.network_conf.routes = [route("198.18.0.0/30", "eth0"), route("198.18.1.0/30", "eth1")]
    f = evaluate(window_with(no_route_drops, host=host))[0]["ip.no_route"]
    assert (f.severity, f.drops, f.rate_per_s) == ("critical", 300, pytest.approx(60.0))
    assert evidence_delta(f, "IpExt.InNoRoutes") == 300
    assert evidence_delta(f, "Icmp.OutDestUnreachs") == 12
    assert f.subjects == [{"routing_table": "IPv4 main", "routes": 2, "default_route": False, "forwarding": 1}]
    assert "had to be forwarded" in f.explanation and "no default route" in f.explanation
    assert "icmp[icmpcode]==0" in texts(f, "command")
    assert "or a default route" in texts(f, "config")


def test_no_route_local_sends():
    def local(h):
        h.bump("snmp", "Ip.OutNoRoutes", 80)
    f = evaluate(window_with(local))[0]["ip.no_route"]
    assert f.severity == "critical" and f.drops == 80
    assert "ENETUNREACH" in f.explanation
    assert f.subjects[0]["default_route"] is True
    assert "ip route get" in texts(f, "command")


def test_no_route_ipv6_background_noise_is_benign():
    def noise(h):
        h.bump("snmp6", "Ip6.InNoRoutes", 3)  # e.g. multicast while an interface comes up
    window = window_with(noise)
    f = evaluate(window)[0]["ip.no_route"]
    assert (f.severity, f.benign) == ("info", True)
    assert f.explanation.startswith("fewer than 2 packets/s")
    assert f.subjects[0]["routing_table"] == "IPv6 main"
    assert diagnosis_from_window(window).exit_code() == EXIT_HEALTHY

# --- ip.ttl_exceeded ----------------------------------------------------------------------

def test_ttl_routing_loop():
    host = NetHost()
    host.network_conf.routes = [route("198.18.8.0/24", "eth0", gateway="198.18.0.1"),
                                route("default", "eth1", gateway="10.1.0.1"), route("198.18.0.0/30", "eth0")]
    f = evaluate(window_with(ttl_loop, host=host))[0]["ip.ttl_exceeded"]
    # 40/s is below the rule's critical rate, but a loop loses every packet to the prefix
    assert (f.severity, f.benign, f.drops) == ("critical", False, 200)
    assert f.subjects[0] == {"routing_loop": True, "forwarded_per_drop": 31.0, "forwarded": 6200, "dropped": 200}
    assert [s["route"] for s in f.subjects[1:]] == ["198.18.8.0/24 via 198.18.0.1 dev eth0",
                                                     "default via 10.1.0.1 dev eth1"]
    assert "about 31 times each" in f.explanation
    assert "198.18.0.1" in texts(f, "command")
    assert evidence_delta(f, "Icmp.OutRateLimitHost") == 193


def test_ttl_traceroute_probes_are_benign():
    def probes(h):
        h.bump("snmp", "Ip.InHdrErrors", 9)
        h.bump("snmp", "Icmp.OutTimeExcds", 9)
        h.bump("snmp", "Ip.ForwDatagrams", 2_000_000)  # busy transit router: not a loop
    window = window_with(probes)
    f = evaluate(window)[0]["ip.ttl_exceeded"]
    assert (f.severity, f.benign) == ("info", True)
    assert "traceroute" in f.explanation
    assert diagnosis_from_window(window).healthy


def test_ttl_header_errors_without_time_exceeded_are_not_ttl():
    def corrupt(h):
        h.bump("snmp", "Ip.InHdrErrors", 500)
    f = evaluate(window_with(corrupt))[0]["ip.ttl_exceeded"]
    assert f.severity == "critical" and not f.benign
    assert "malformed IP headers" in f.explanation
    assert "routing_loop" not in str(f.subjects)


def test_ttl_low_ttl_senders_without_loop():
    def low_ttl(h):
        h.bump("snmp", "Ip.InHdrErrors", 300)
        h.bump("snmp", "Icmp.OutTimeExcds", 300)
        h.bump("snmp", "Ip.ForwDatagrams", 300)
    f = evaluate(window_with(low_ttl))[0]["ip.ttl_exceeded"]
    assert f.severity == "critical"
    assert "no loop through this host" in f.explanation
    assert f.subjects == []

# --- ip.frag_needed -----------------------------------------------------------------------

def test_frag_needed_names_the_small_mtu_link_and_derives_mss():
    host = NetHost()
    host.network_conf.interfaces["eth1"] = net_interface("eth1", 3, mtu=1280)
    f = evaluate(window_with(frag_drops, host=host))[0]["ip.frag_needed"]
    assert (f.severity, f.drops) == ("critical", 150)
    assert f.subjects == [{"interface": "eth1", "mtu": 1280, "largest_mtu": 1500}]
    assert "smallest MTU here is 1280 (eth1)" in f.explanation
    assert "PMTU black hole" in f.explanation  # 150 ICMPs sent and the senders kept going
    assert "MSS 1240" in texts(f, "config") and "IPv6 1220" in texts(f, "config")
    assert "at most 1252 bytes" in texts(f, "app")
    assert "mtu 1500" in texts(f, "config")


def test_frag_needed_same_mtu_everywhere():
    f = evaluate(window_with(frag_drops))[0]["ip.frag_needed"]
    assert f.subjects == [{"interfaces": "eth0, eth1", "mtu": 1500}]
    assert "MSS 1460" in texts(f, "config")


def test_frag_needed_occasional_is_pmtu_discovery():
    def one(h):
        h.bump("snmp", "Ip.FragFails", 2)
        h.bump("snmp", "Icmp.OutDestUnreachs", 2)
    f = evaluate(window_with(one))[0]["ip.frag_needed"]
    assert (f.severity, f.benign) == ("info", True)
    assert f.explanation.startswith("path MTU discovery at work")
    assert "black hole" not in f.explanation

# --- ip.reassembly_timeout ----------------------------------------------------------------

def test_reassembly_timeouts_with_lowered_ipfrag_time():
    host = NetHost()
    host.sysctls["net.ipv4.ipfrag_time"] = 1
    f = evaluate(window_with(reasm_timeouts, host=host))[0]["ip.reassembly_timeout"]
    assert (f.severity, f.drops) == ("critical", 200)
    assert f.subjects == [{"datagrams_failed": 200, "timed_out": 200, "reassembled": 0,
                           "fragments_received": 200, "failed_share": 1.0}]
    assert "200 datagrams timed out" in f.explanation and "ipfrag_time (1 s)" in f.explanation
    fix = sysctl_fix(f, "net.ipv4.ipfrag_time")
    assert (fix["current"], fix["proposed"]) == (1, 30)
    assert "avoid fragmentation" in texts(f, "app")
    assert sysctl_fix(f, "net.ipv4.ipfrag_high_thresh") is None


def test_reassembly_timeouts_with_default_ipfrag_time_proposes_no_longer_wait():
    def some(h):
        h.bump("snmp", "Ip.ReasmFails", 20)
        h.bump("snmp", "Ip.ReasmTimeout", 20)
        h.bump("snmp", "Ip.ReasmOKs", 180)
    f = evaluate(window_with(some))[0]["ip.reassembly_timeout"]
    assert f.subjects[0]["failed_share"] == 0.1
    assert "10% of the fragmented datagrams" in f.explanation
    assert sysctl_fix(f, "net.ipv4.ipfrag_time") is None
    assert "will not help" in texts(f, "config")


def test_reassembly_memory_full_proposes_high_thresh():
    def memory(h):
        h.bump("snmp", "Ip.ReasmFails", 100)
        h.bump("snmp", "Ip.ReasmOKs", 900)
    f = evaluate(window_with(memory))[0]["ip.reassembly_timeout"]
    assert "100 failed without a timeout" in f.explanation
    fix = sysctl_fix(f, "net.ipv4.ipfrag_high_thresh")
    assert (fix["current"], fix["proposed"]) == (4_194_304, 8_388_608)


def test_reassembly_ipv6():
    def v6(h):
        h.bump("snmp6", "Ip6.ReasmFails", 30)
        h.bump("snmp6", "Ip6.ReasmTimeout", 30)
    f = evaluate(window_with(v6))[0]["ip.reassembly_timeout"]
    assert f.drops == 30 and evidence_delta(f, "Ip6.ReasmTimeout") == 30

# --- neigh.unresolved ---------------------------------------------------------------------

def test_neigh_unresolved_names_the_neighbour_and_says_host_wide():
    host = unresolved_on_eth1(NetHost())
    host.network_conf.interfaces["eth1"] = net_interface("eth1", 3, unres_qlen_bytes=2048)
    f = evaluate(window_with(neigh_discards, host=host))[0]["neigh.unresolved"]
    assert (f.severity, f.drops) == ("critical", 1998)
    assert "host-wide" in f.summary
    assert evidence_delta(f, "neigh.arp.unresolved_discards") == 1998
    host_wide = [e for e in f.evidence if e.get("source") == "neighbour"]
    assert host_wide == [{"source": "neighbour", "table": "arp", "scope": "host-wide (all network namespaces)",
                          "unresolved_discards": 1998, "table_fulls": 0, "entries_now": 12}]
    assert f.subjects == [{"neighbour": "10.1.0.9", "interface": "eth1", "state": "INCOMPLETE",
                           "unres_qlen_bytes": 2048}]
    assert "host-wide" in f.explanation and "10.1.0.9 on eth1 (INCOMPLETE)" in f.explanation
    fix = sysctl_fix(f, "net.ipv4.neigh.eth1.unres_qlen_bytes")
    assert (fix["current"], fix["proposed"]) == (2048, 65536)
    assert "arping -I eth1 10.1.0.9" in texts(f, "command")


def test_neigh_failed_neighbour_says_the_queue_does_not_help():
    host = unresolved_on_eth1(NetHost(), state="FAILED")
    f = evaluate(window_with(neigh_discards, host=host))[0]["neigh.unresolved"]
    fix = sysctl_fix(f, "net.ipv4.neigh.eth1.unres_qlen_bytes")
    assert (fix["current"], fix["proposed"]) == (212992, 524288)
    assert "never answered" in fix["note"]
    assert "remove or correct the route" in texts(f, "config")


def test_neigh_discards_of_another_namespace_are_info_only():
    window = window_with(neigh_discards, host=NetHost())  # nothing unresolved in this namespace
    f = evaluate(window)[0]["neigh.unresolved"]
    assert (f.severity, f.benign, f.harmful) == ("info", False, False)
    assert "elsewhere on the host" in f.explanation and "namespace srv" in f.explanation
    assert diagnosis_from_window(window).healthy


def test_neigh_ipv6_discards_match_ipv6_entries_only():
    host = unresolved_on_eth1(NetHost())  # an IPv4 entry: not the culprit of ndisc drops

    def v6(h):
        h.bump_neigh("ndisc", "unresolved_discards", 50)
    f = evaluate(window_with(v6, host=host))[0]["neigh.unresolved"]
    assert f.severity == "info"
    host.network_conf.neighbours.append(neighbour("fd00::9", "eth1", state="FAILED"))
    f = evaluate(window_with(v6, host=host))[0]["neigh.unresolved"]
    assert f.severity == "critical"
    assert [s["neighbour"] for s in f.subjects] == ["fd00::9"]
    assert sysctl_fix(f, "net.ipv6.neigh.eth1.unres_qlen_bytes") is not None


def test_neigh_table_full_proposes_gc_thresholds_from_entries():
    host = NetHost()
    host.neighbour.tables["arp"] = host.neighbour.tables["arp"].__class__(
        "arp", 1100, host.neighbour.tables["arp"].counters, 4)

    def full(h):
        h.bump_neigh("arp", "table_fulls", 50)
    f = evaluate(window_with(full, host=host))[0]["neigh.unresolved"]
    assert f.severity == "critical" and f.drops == 50
    assert "table was full" in f.explanation
    t3 = sysctl_fix(f, "net.ipv4.neigh.default.gc_thresh3")
    assert (t3["current"], t3["proposed"]) == (1024, 4096)
    assert t3["scope"].startswith("global")
    assert "1100 entries" in t3["note"]
    assert sysctl_fix(f, "net.ipv4.neigh.default.gc_thresh2")["proposed"] == 2048
    assert sysctl_fix(f, "net.ipv4.neigh.default.gc_thresh1")["proposed"] == 512
    assert sysctl_fix(f, "net.ipv6.neigh.default.gc_thresh3") is None


def test_neigh_table_full_seen_from_a_netns_without_gc_values():
    host = NetHost()
    for family in ("ipv4", "ipv6"):
        for n in (1, 2, 3):
            host.sysctls[f"net.{family}.neigh.default.gc_thresh{n}"] = None  # only the host shows them

    def full(h):
        h.bump_neigh("arp", "table_fulls", 5)
    f = evaluate(window_with(full, host=host))[0]["neigh.unresolved"]
    t3 = sysctl_fix(f, "net.ipv4.neigh.default.gc_thresh3")
    assert (t3["current"], t3["proposed"]) == (None, 2048)
    assert "initial namespace" in t3["note"]


def test_neigh_without_neighbour_entries_cannot_attribute():
    host = NetHost()
    host.network_conf = NetworkConf(interfaces=host.network_conf.interfaces, routes=[], neighbours=None,
                                    gaps={"neighbours": "rtnetlink neighbour dump: netlink needs the live system"})
    f = evaluate(window_with(neigh_discards, host=host))[0]["neigh.unresolved"]
    assert f.severity == "critical"
    assert "cannot be attributed" in f.explanation


def test_neigh_not_evaluated_without_the_source():
    host = NetHost()
    host.broken["neighbour"] = ("unavailable", "no neighbour statistics")
    _, _, not_evaluated = evaluate(quiet_window(host))
    assert not_evaluated.get("neigh.unresolved") == "counters not available"


def test_network_findings_without_network_conf_still_report():
    host = NetHost()
    host.broken["network_conf"] = ("failed", "ParseError: broken")
    by_id, _, _ = evaluate(window_with(frag_drops, no_route_drops, rp_filter_drops, neigh_discards, host=host))
    assert {"ip.frag_needed", "ip.no_route", "ip.rp_filter", "neigh.unresolved"} <= set(by_id)
    assert by_id["ip.rp_filter"].subjects == []
    assert by_id["neigh.unresolved"].severity == "critical"  # not attributable: keep the rate's severity
