"""The change kinds of dropdoc fix: parsers of the tools they read, validation against
kernel limits and relations, journal records. Fixtures: tests/fixtures/fix/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.fix import sysctl as sysctl_mod
from dropdoc.fix.changes import (KINDS, Change, QdiscLimitChange, RingChange, SysctlChange, TxQueueLenChange,
                                 find_qdisc, parse_ethtool_rings, parse_ip_link_json, parse_tc_qdisc_json)
from dropdoc.fix.sysctl import UnsafeChange
from dropdoc.sources import sysctls as sysctl_source

FIXTURES = Path(__file__).parent.parent / "fixtures" / "fix"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- ethtool -g ------------------------------------------------------------------------------

def test_ethtool_rings_virtio_capture_at_maximum():
    rings = parse_ethtool_rings(fixture("ethtool_g_eth0_virtio.txt"))
    assert rings["max"] == {"rx": 256, "rx-mini": None, "rx-jumbo": None, "tx": 256}
    assert rings["current"] == {"rx": 256, "rx-mini": None, "rx-jumbo": None, "tx": 256}


def test_ethtool_rings_older_layout_below_maximum():
    rings = parse_ethtool_rings(fixture("ethtool_g_ixgbe_4x.txt"))
    assert (rings["current"]["rx"], rings["max"]["rx"]) == (512, 4096)
    assert rings["current"]["rx-mini"] == 0


@pytest.mark.parametrize("name", ["ethtool_g_truncated.txt", "ethtool_g_non_numeric.txt"])
def test_ethtool_rings_broken(name):
    with pytest.raises(ParseError):
        parse_ethtool_rings(fixture(name))


# --- ip -j link / tc -j qdisc ----------------------------------------------------------------

def test_ip_link_json_capture():
    assert parse_ip_link_json(fixture("ip_link_veth.json"), "vfa")["txqlen"] == 1000
    with pytest.raises(SourceUnavailable):
        parse_ip_link_json(fixture("ip_link_veth.json"), "eth9")
    with pytest.raises(ParseError):
        parse_ip_link_json("{", "vfa")
    with pytest.raises(ParseError):
        parse_ip_link_json('{"ifname": "vfa"}', "vfa")


def test_tc_qdisc_json_captures():
    pfifo = find_qdisc(parse_tc_qdisc_json(fixture("tc_qdisc_veth_pfifo.json")), "1:")
    assert (pfifo["kind"], pfifo["root"], pfifo["options"]["limit"]) == ("pfifo", True, 100)
    fast = find_qdisc(parse_tc_qdisc_json(fixture("tc_qdisc_eth0.json")), "0:")
    assert fast["kind"] == "pfifo_fast" and "limit" not in fast["options"]
    with pytest.raises(SourceUnavailable):
        find_qdisc(parse_tc_qdisc_json(fixture("tc_qdisc_veth_pfifo.json")), "2:")
    for bad in ("nope", "[1]", '{"kind": "pfifo"}'):
        with pytest.raises(ParseError):
            parse_tc_qdisc_json(bad)


# --- validation without the system ----------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    (QdiscLimitChange("ns", 1000, interface="eth0", handle="1:", qdisc="netem"), "reset its other options"),
    (QdiscLimitChange("ns", 1000, interface="eth0", handle="1:", qdisc="sfq"), "reset its other options"),
    (QdiscLimitChange("ns", 1000, interface="eth0", handle="root", qdisc="pfifo"), "not of the form N:"),
    (QdiscLimitChange("ns", 0, interface="eth0", handle="1:", qdisc="pfifo"), "1..1048576"),
    (QdiscLimitChange("ns", 1 << 21, interface="eth0", handle="1:", qdisc="fq_codel"), "1..1048576"),
    (TxQueueLenChange("ns", 0, interface="eth0"), "1..100000"),
    (TxQueueLenChange("ns", 10**6, interface="eth0"), "1..100000"),
    (TxQueueLenChange("ns", 1000, interface="eth0; reboot"), "not an interface name"),
    (TxQueueLenChange("ns", 1000, interface="a-very-long-interface-name"), "not an interface name"),
])
def test_link_changes_refuse_unsafe_values(change, words):
    with pytest.raises(UnsafeChange, match=words):
        change.validate(None)


def test_link_changes_accept_sane_values():
    QdiscLimitChange("ns", 1 << 20, interface="eth0", handle="8001:", qdisc="fq_codel").validate(None)
    QdiscLimitChange("ns", 1 << 24, interface="eth0", handle="1:", qdisc="bfifo").validate(None)  # bytes
    TxQueueLenChange("ns", 10000, interface="eth0.100").validate(None)


@pytest.mark.parametrize("key, value", [
    ("net.core.somaxconn", 65535), ("net.core.somaxconn", 0), ("net.ipv4.tcp_syncookies", 2),
    ("net.ipv4.conf.all.rp_filter", 2), ("net.ipv4.conf.eth0/100.rp_filter", 0),
    ("net.ipv4.tcp_rmem", (4096, 131072, 6291456)), ("net.ipv4.tcp_rmem", [4096, 4096, 4096]),
    ("net.ipv4.neigh.default.gc_thresh3", 4096),
])
def test_sysctl_values_within_kernel_limits(key, value):
    sysctl_mod.validate(key, value, None)


@pytest.mark.parametrize("key, value, netns, words", [
    ("net.core.somaxconn", 65536, "ns", "0..65535"),
    ("net.core.somaxconn", True, "ns", "outside"),
    ("net.ipv4.tcp_rmem", (4096, 131072), "ns", "three integers"),
    ("net.ipv4.tcp_rmem", (4096, 1, 6291456), "ns", "out of order"),
    ("net.ipv4.tcp_wmem", (4096, 16384, "x"), "ns", "three integers"),
    ("net.core.netdev_max_backlog", 2000, "ns", "global"),
    ("net.netfilter.nf_conntrack_max", 262144, "ns", "global"),
    ("net.ipv4.neigh.default.gc_thresh3", 4096, "ns", "global"),
    ("kernel.panic", 1, None, "not a sysctl dropdoc manages"),
])
def test_sysctl_values_refused(key, value, netns, words):
    with pytest.raises(UnsafeChange, match=words):
        sysctl_mod.validate(key, value, netns)


def test_global_keys_follow_what_areas_declare(monkeypatch):
    monkeypatch.setattr(sysctl_source, "GLOBAL_KEYS", sysctl_source.GLOBAL_KEYS | {"net.ipv4.ipfrag_time"})
    assert sysctl_mod.is_global("net.ipv4.ipfrag_time")
    with pytest.raises(UnsafeChange, match="global"):
        sysctl_mod.validate("net.ipv4.ipfrag_time", 30, "ns")


def test_relations_use_the_value_in_force_for_untouched_keys():
    in_force = {"net.core.rmem_max": 212992, "net.ipv4.neigh.default.gc_thresh2": 512}.get
    assert sysctl_mod.check_relations({"net.core.rmem_default": 425984}, in_force) == {
        "net.core.rmem_default": "net.core.rmem_max (212992) would be below net.core.rmem_default (425984): "
                                 "raise net.core.rmem_max as well, or less"}
    assert sysctl_mod.check_relations({"net.core.rmem_default": 106496}, in_force) == {}
    # lowering the upper key below the lower one in force names the upper key
    problems = sysctl_mod.check_relations({"net.ipv4.neigh.default.gc_thresh3": 256}, in_force)
    assert list(problems) == ["net.ipv4.neigh.default.gc_thresh3"]
    # a key this kernel lacks (None) satisfies every relation
    assert sysctl_mod.check_relations({"net.core.wmem_default": 1 << 20}, lambda key: None) == {}


def test_order_puts_limits_first():
    keys = ["net.ipv4.neigh.default.gc_thresh1", "net.core.somaxconn", "net.ipv4.neigh.default.gc_thresh3",
            "net.core.rmem_default", "net.ipv4.neigh.default.gc_thresh2", "net.core.rmem_max"]
    ordered = sysctl_mod.order_changes(keys)
    assert ordered.index("net.core.rmem_max") < ordered.index("net.core.rmem_default")
    assert ordered.index("net.ipv4.neigh.default.gc_thresh3") < ordered.index("net.ipv4.neigh.default.gc_thresh2") \
        < ordered.index("net.ipv4.neigh.default.gc_thresh1")
    assert sorted(ordered) == sorted(keys)


# --- records ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [
    SysctlChange("srv", 1024, key="net.core.somaxconn"),
    SysctlChange(None, (4096, 131072, 6291456), key="net.ipv4.tcp_rmem"),
    TxQueueLenChange("srv", 2000, interface="veth0"),
    QdiscLimitChange(None, 500, interface="eth0", handle="1:", qdisc="pfifo"),
    RingChange("srv", 4096, interface="eth1", ring="tx"),
])
def test_journal_record_rebuilds_the_same_change(change):
    record = change.to_record()
    assert record["kind"] in KINDS and record["target"] == change.target
    rebuilt = Change.from_record(record, change.value)
    assert rebuilt == change and rebuilt.identity() == change.identity()


def test_unknown_record_kind_is_a_parse_error():
    with pytest.raises(ParseError):
        Change.from_record({"kind": "firmware"}, 1)


def test_commands_an_administrator_would_run():
    assert SysctlChange("srv", 1024, key="net.core.somaxconn").command() == \
        "ip netns exec srv sysctl -w net.core.somaxconn=1024"
    assert SysctlChange(None, 1024, key="net.core.somaxconn").command() == "sysctl -w net.core.somaxconn=1024"
    assert RingChange(None, 4096, interface="eth1").command() == "ethtool -G eth1 rx 4096"
    assert TxQueueLenChange(None, 2000, interface="eth0").command(1000) == "ip link set dev eth0 txqueuelen 1000"
    assert SysctlChange("srv", 1, key="net.core.somaxconn").effect == "listen"
    assert SysctlChange("srv", 1, key="net.core.rmem_default").effect == "new-sockets"
    assert SysctlChange("srv", 1, key="net.ipv4.tcp_max_syn_backlog").effect == "immediate"
