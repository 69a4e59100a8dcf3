"""A rule whose counters come from several sources is never counted from part of them:
udp.no_port = Udp.NoPorts (snmp) + Udp6.NoPorts (snmp6). A failed source makes the rule
"not evaluated" (reason names the source); an unavailable one is absent (rules/coverage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc import rules
from dropdoc.rules import coverage
from dropdoc.rules.engine import load_rules
from dropdoc.sources import SOURCES, conntrack, neighbour, qdisc, snmp, snmp6, softnet

from windows import Host, make_window

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def window(host: Host, change=lambda h: None, end_broken: dict | None = None):
    before = host.snapshot(0.0)
    change(host)
    if end_broken is not None:
        host.broken = end_broken
    return make_window(before, host.snapshot(5.0))


def evaluate(w):
    findings, not_evaluated = rules.evaluate(w)
    return {f.id: f for f in findings}, not_evaluated


def no_port(v4: int = 0, v6: int = 0):
    def change(h: Host) -> None:
        h.bump("snmp", "Udp.NoPorts", v4)
        h.bump("snmp6", "Udp6.NoPorts", v6)
    return change


# --- udp.no_port: the QA case ---------------------------------------------------------------

def test_snmp_failed_snmp6_ok_is_not_evaluated_naming_snmp():
    host = Host(broken={"snmp": ("failed", "snmp: odd number of lines (3)")})
    by_id, not_evaluated = evaluate(window(host, no_port(v4=500, v6=7)))
    assert "udp.no_port" not in by_id  # never 7: Udp6 alone is a number too small
    assert not_evaluated["udp.no_port"] == "snmp failed: snmp: odd number of lines (3)"


def test_snmp_failed_and_udp6_quiet_is_not_no_drops():
    host = Host(broken={"snmp": ("needs-privilege", "/proc/net/snmp: permission denied")})
    by_id, not_evaluated = evaluate(window(host))
    assert not_evaluated["udp.no_port"].startswith("snmp needs-privilege")


def test_snmp6_unavailable_host_without_ipv6_counts_udp_alone():
    host = Host(broken={"snmp6": ("unavailable", "/proc/net/snmp6: no such file")})
    by_id, not_evaluated = evaluate(window(host, no_port(v4=500)))
    assert "udp.no_port" not in not_evaluated
    assert by_id["udp.no_port"].drops == 500


def test_snmp6_failed_with_snmp_ok_is_not_evaluated():
    host = Host(broken={"snmp6": ("failed", "line 3: expected 'name value'")})
    by_id, not_evaluated = evaluate(window(host, no_port(v4=500)))
    assert "udp.no_port" not in by_id
    assert not_evaluated["udp.no_port"] == "snmp6 failed: line 3: expected 'name value'"


def test_source_failing_at_the_end_only_says_where():
    host = Host()
    w = window(host, no_port(v4=40, v6=2), end_broken={"snmp": ("failed", "truncated")})
    by_id, not_evaluated = evaluate(w)
    assert "udp.no_port" not in by_id
    assert not_evaluated["udp.no_port"] == "snmp failed at the end of the window: truncated"


def test_source_gone_unavailable_mid_window_is_unknown_not_absent():
    # ok at the start, unavailable at the end: the counters existed, one end is missing.
    host = Host()
    w = window(host, no_port(v4=40), end_broken={"snmp6": ("unavailable", "gone")})
    by_id, not_evaluated = evaluate(w)
    assert "udp.no_port" not in by_id
    assert not_evaluated["udp.no_port"] == "snmp6 unavailable at the end of the window: gone"


def test_both_udp_sources_ok_adds_them():
    by_id, not_evaluated = evaluate(window(Host(), no_port(v4=40, v6=2)))
    assert by_id["udp.no_port"].drops == 42 and "udp.no_port" not in not_evaluated


# --- other rules spanning sources, and rules a failing source cannot touch ------------------

def test_failing_source_that_cannot_contribute_changes_nothing():
    host = Host(broken={"snmp": ("failed", "truncated")})
    by_id, not_evaluated = evaluate(window(host, lambda h: h.bump("netstat", "TcpExt.ListenOverflows", 286)))
    assert by_id["tcp.listen_overflow"].drops == 286
    assert "tcp.listen_overflow" not in not_evaluated and "tcp.syn_queue_full" not in not_evaluated


def test_ip_no_route_spans_netstat_and_snmp():
    host = Host(broken={"netstat": ("failed", "mismatched section")})
    host.snmp6.update({"Ip6.InNoRoutes": 0, "Ip6.OutNoRoutes": 0})
    by_id, not_evaluated = evaluate(window(host, lambda h: h.bump("snmp", "Ip.OutNoRoutes", 30)))
    assert "ip.no_route" not in by_id  # IpExt.InNoRoutes (netstat) is missing from the sum
    assert not_evaluated["ip.no_route"] == "netstat failed: mismatched section"


def test_socket_filter_evaluator_with_snmp6_failed():
    # InErrors - RcvbufErrors - ... per family: the Udp6 half is missing.
    host = Host(broken={"snmp6": ("failed", "truncated")})
    by_id, not_evaluated = evaluate(window(host, lambda h: h.bump("snmp", "Udp.InErrors", 25)))
    assert "socket.filter_drop" not in by_id
    assert not_evaluated["socket.filter_drop"] == "snmp6 failed: truncated"


def test_only_source_failed_keeps_the_engine_wording():
    # Nothing of the rule is known at all: no partial sum to hide, the usual wording stays.
    host = Host(broken={"snmp": ("failed", "truncated"), "snmp6": ("unavailable", "IPv6 off")})
    _, not_evaluated = evaluate(window(host))
    assert not_evaluated["udp.no_port"] == "counters not available"


# --- coverage helpers -----------------------------------------------------------------------

def test_incomplete_sources_leaves_out_sources_absent_at_both_ends():
    host = Host(broken={"snmp6": ("unavailable", "no IPv6"), "netstat": ("needs-privilege", "denied"),
                        "process_sockets": ("failed", "no counters anyway")})
    w = window(host)
    assert coverage.incomplete_sources(w.before, w.after) == {"netstat": "netstat needs-privilege: denied"}


def test_names_learned_from_the_end_that_answered():
    host = Host()
    w = window(host, end_broken={"snmp": ("failed", "x")})
    assert coverage.could_contribute("snmp", ("Udp.NoPorts",), w.before, w.after)
    assert not coverage.could_contribute("snmp", ("Udp.NoSuchCounter",), w.before, w.after)
    assert not coverage.could_contribute("snmp", ("TcpExt.ListenOverflows",), w.before, w.after)


@pytest.mark.parametrize("source, patterns, expected", [
    ("snmp", ("Udp.NoPorts", "Udp6.NoPorts"), True),
    ("snmp", ("Udp6.NoPorts",), False),
    ("snmp", ("IpExt.InNoRoutes",), False),
    ("netstat", ("IpExt.InNoRoutes", "Ip.OutNoRoutes"), True),
    ("ethtool", ("link.*.rx_missed_errors", "ethtool.*.rx_discards"), True),
    ("ethtool", ("link.*.tx_dropped",), False),
    ("not_a_known_source", ("Udp.NoPorts",), True),  # unknown: assume it could
])
def test_prefix_fallback_when_the_source_never_answered(source, patterns, expected):
    host = Host(broken={"snmp": ("failed", "x"), "netstat": ("failed", "x")})
    w = window(host)
    assert coverage.could_contribute(source, patterns, w.before, w.after) is expected


def _real_names() -> dict[str, set[str]]:
    """Counter names of captured files (tests/fixtures), per source."""
    text = lambda *p: FIXTURES.joinpath(*p).read_text()  # noqa: E731
    data = {
        "snmp": [snmp.parse(text("snmp", "snmp")), snmp.parse(text("snmp", "snmp_3.10"))],
        "netstat": [snmp.parse(text("snmp", "netstat")), snmp.parse(text("snmp", "netstat_3.10"))],
        "snmp6": [snmp6.parse(text("snmp6", "snmp6")), snmp6.parse(text("snmp6", "snmp6_3.10"))],
        "softnet": [softnet.parse(text("softnet", "softnet_stat"))],
        "conntrack": [conntrack.parse(text("conntrack", "nf_conntrack"))],
        "qdisc": [qdisc.parse(FIXTURES.joinpath("qdisc", "rtm_getqdisc.bin").read_bytes(),
                              FIXTURES.joinpath("qdisc", "rtm_getlink.bin").read_bytes())],
    }
    names = {name: set().union(*(SOURCES[name].counters(d) for d in values)) for name, values in data.items()}
    arp = neighbour.parse(text("neighbour", "arp_cache"))
    names["neighbour"] = set(SOURCES["neighbour"].counters(neighbour.NeighbourStats({"arp": arp})))
    snap = Host().snapshot(0.0)
    names["link_stats"] = set(snap.source_counters("link_stats"))
    return names


def test_prefixes_cover_every_real_counter_name():
    for source, names in _real_names().items():
        assert names, source
        stray = sorted(n for n in names if not n.startswith(coverage.PREFIXES[source]))
        assert stray == [], (source, stray[:5])


def test_prefixes_name_every_counter_source_and_no_two_overlap():
    counter_sources = {n for n, s in SOURCES.items() if s.counters is not None}
    assert counter_sources <= set(coverage.PREFIXES)
    owners: dict[str, str] = {}
    for source, prefixes in coverage.PREFIXES.items():
        for prefix in prefixes:
            clash = [o for p, o in owners.items() if p.startswith(prefix) or prefix.startswith(p)]
            assert clash == [], (source, prefix, clash)
            owners[prefix] = source


def test_every_catalogue_pattern_belongs_to_a_known_source():
    for rule in load_rules():
        for pattern in coverage.counted_patterns(rule):
            owners = [s for s, p in coverage.PREFIXES.items() if coverage.prefix_could_match((pattern,), p)]
            assert len(owners) == 1, (rule.id, pattern, owners)
