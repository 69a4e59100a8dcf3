"""Network-layer lab scenarios end to end: real namespaces, real traffic inside the lab
range, the real kernel's counters -> the expected finding is the top one, with the
interface, route or neighbour it names and fixes derived from the measured numbers."""

from __future__ import annotations

import shutil

import pytest

from dropdoc.lab import scenarios
from dropdoc.lab.topology import ROUTER_SERVER_ADDRESS, LabNet

from .conftest import lab_namespaces, requires_root

pytestmark = [requires_root, pytest.mark.functional]


def tag_of(server_ns: str) -> str:
    return server_ns[len("ddlab-"):-len("-srv")]


def run(name: str, fix: bool = False):
    result = scenarios.run(name, fix=fix)
    diagnosis = result.before.diagnosis
    assert diagnosis.findings, f"{name}: nothing found; load {result.before.load}"
    top = diagnosis.findings[0]
    assert top.id == result.scenario.expected_finding, [(f.id, f.severity, f.drops) for f in diagnosis.findings]
    assert top.severity == "critical" and not top.benign
    assert diagnosis.exit_code() == 2
    tag = tag_of(result.server_ns)
    assert not [ns for ns in lab_namespaces() if f"-{tag}-" in ns], "the lab left namespaces behind"
    return result, diagnosis, top


def sysctl_fix(finding, key):
    return next((f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == key), None)


def test_rp_filter_then_loose_mode_fixes_it(no_leftovers):
    result, diagnosis, top = run("rp-filter", fix=True)
    sent = result.before.load["sent"]
    assert sent >= 1000
    # every datagram from the spoofed-looking source died in the filter
    assert top.drops == diagnosis.counter_deltas["TcpExt.IPReversePathFilter"] == sent
    server_if = f"dd{tag_of(result.server_ns)}s"
    assert top.subjects[0]["interface"] == server_if
    assert top.subjects[0]["mode"] == "strict" and top.subjects[0]["rx_packets"] >= sent
    fix = sysctl_fix(top, f"net.ipv4.conf.{server_if}.rp_filter")
    assert (fix["current"], fix["proposed"], fix["netns"]) == (1, 2, result.server_ns)
    # applied in the lab namespace, same load again: the filter lets it through (to the receiver)
    assert [(a["key"], a["new"], a["netns"]) for a in result.applied] == [
        (f"net.ipv4.conf.{server_if}.rp_filter", 2, result.server_ns)]
    after = result.after.diagnosis
    assert after.counter_deltas["TcpExt.IPReversePathFilter"] == 0
    assert after.finding("ip.rp_filter") is None
    assert after.counter_deltas["Udp.InDatagrams"] >= result.after.load["sent"] >= 1000


def test_no_route_at_the_router(no_leftovers):
    result, diagnosis, top = run("no-route")
    assert diagnosis.netns.endswith("-rtr")
    sent = result.before.load["sent"]
    assert diagnosis.counter_deltas["IpExt.InNoRoutes"] == sent >= 1000
    assert top.drops >= sent  # plus any IPv6 packets without a route
    v4 = next(s for s in top.subjects if s["routing_table"] == "IPv4 main")
    assert v4["default_route"] is False and v4["forwarding"] == 1
    assert "no default route" in top.explanation


def test_ttl_exceeded_routing_loop(no_leftovers):
    result, diagnosis, top = run("ttl-exceeded")
    sent = result.before.load["sent"]
    assert diagnosis.counter_deltas["Ip.InHdrErrors"] == sent >= 500
    loop = top.subjects[0]
    assert loop["routing_loop"] is True
    # TTL 64 from the client: the server forwards each packet 31 times before it expires there
    assert loop["forwarded_per_drop"] == pytest.approx(31.0, abs=0.5)
    assert any(s.get("next_hop") == ROUTER_SERVER_ADDRESS for s in top.subjects)  # the router


def test_frag_needed_at_the_router(no_leftovers):
    result, diagnosis, top = run("frag-needed")
    sent = result.before.load["sent"]
    assert diagnosis.counter_deltas["Ip.FragFails"] == sent >= 300
    router_server_if = f"dd{tag_of(result.server_ns)}r"
    assert top.subjects == [{"interface": router_server_if, "mtu": 1280, "largest_mtu": 1500}]
    assert any("MSS 1240" in f.get("text", "") for f in top.fixes)


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (scripts/install.sh installs it)")
def test_reassembly_timeout(no_leftovers):
    result, diagnosis, top = run("reassembly-timeout")
    sent = result.before.load["sent"]
    assert diagnosis.counter_deltas["Ip.ReasmTimeout"] == diagnosis.counter_deltas["Ip.ReasmFails"] == sent >= 200
    assert top.subjects[0]["failed_share"] == 1.0
    fix = sysctl_fix(top, "net.ipv4.ipfrag_time")
    assert (fix["current"], fix["proposed"]) == (1, 30)


def test_neigh_unresolved(no_leftovers):
    result, diagnosis, top = run("neigh-unresolved")
    sent = result.before.load["sent"]
    # host-wide counters: at least what this lab discarded (other namespaces may add)
    discarded = diagnosis.counter_deltas["neigh.arp.unresolved_discards"]
    assert sent - 10 <= discarded and top.drops >= discarded
    server_if = f"dd{tag_of(result.server_ns)}s"
    subject = top.subjects[0]
    assert (subject["neighbour"], subject["interface"]) == ("198.18.0.5", server_if)
    assert subject["state"] in ("INCOMPLETE", "FAILED") and subject["unres_qlen_bytes"] == 2048
    assert "host-wide" in top.explanation
    assert any(e.get("scope", "").startswith("host-wide") for e in top.evidence)


def test_router_topology_builds_and_leaves_nothing(no_leftovers):
    with LabNet(router=True) as lab:
        names = {lab.namespace(side) for side in ("server", "client", "router")}
        assert names <= set(lab_namespaces())
        routes = lab.run(lab.client_ns, "ip", "route")
        assert "198.18.0.0/15 via 198.18.1.1" in routes and "default" not in routes
        assert lab.run(lab.router_ns, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert not names & set(lab_namespaces())
    with LabNet() as plain:  # the two-namespace lab is unchanged
        with pytest.raises(Exception, match="no 'router' namespace"):
            plain.namespace("router")
