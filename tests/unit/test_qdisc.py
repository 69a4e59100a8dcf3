"""qdisc source: RTM_GETQDISC + RTM_GETLINK dumps captured on this machine (compared with
`tc -s -d qdisc show` of the same instant), crafted older/other layouts, broken dumps.

Fixture provenance: tests/fixtures/qdisc/README.md.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.sources import SOURCES, ReadContext, qdisc
from dropdoc.sources.qdisc import TC_H_INGRESS, TC_H_ROOT, format_handle, split_counter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "qdisc"


def data(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


REAL = qdisc.parse(data("rtm_getqdisc.bin"), data("rtm_getlink.bin"))
CRAFTED_LINKS = data("rtm_getlink_crafted.bin")


def by_dev(qdiscs, dev, kind=None):
    found = [q for q in qdiscs if q.dev == dev and (kind is None or q.kind == kind)]
    assert found, f"no qdisc on {dev}"
    return found


# --- the real capture ---------------------------------------------------------------------

TC_HEADER = re.compile(r"^qdisc (\S+) (\S+) dev (\S+) (root|parent \S+)")
TC_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+) requeues (\d+)\)")
TC_BACKLOG = re.compile(r"backlog (\d+)b (\d+)p")


def tc_text_entries() -> list[dict]:
    """`tc -s -d qdisc show` of the same instant, parsed the simple way."""
    entries, current = [], None
    for line in data("tc_s_qdisc.txt").decode().splitlines():
        if m := TC_HEADER.match(line):
            parent = m.group(4).split()[-1]
            current = {"kind": m.group(1), "handle": m.group(2), "dev": m.group(3),
                       "parent": "ingress" if parent == "ffff:fff1" else parent}
            entries.append(current)
        elif m := TC_SENT.search(line):
            current.update(zip(("bytes", "packets", "drops", "overlimits", "requeues"), map(int, m.groups())))
        elif m := TC_BACKLOG.search(line):
            current.setdefault("backlog", int(m.group(1)))
            current.setdefault("qlen", int(m.group(2)))
    return entries


def test_real_dump_agrees_with_tc_of_the_same_instant():
    entries = tc_text_entries()
    assert len(entries) == len(REAL) == 12
    for entry, q in zip(entries, REAL):
        assert (q.kind, q.handle_str, q.dev, q.parent_str) == (entry["kind"], entry["handle"], entry["dev"],
                                                               entry["parent"])
        for name in ("bytes", "packets", "drops", "overlimits", "requeues", "backlog", "qlen"):
            assert getattr(q, name) == entry[name], (q.dev, q.kind, name)


def test_real_tbf_dropped_and_was_over_its_rate():
    (tbf,) = by_dev(REAL, "qtbf")
    assert (tbf.kind, tbf.handle_str, tbf.parent_str, tbf.is_root) == ("tbf", "1:", "root", True)
    assert tbf.drops == 289 and tbf.overlimits == 311 and tbf.packets == 14
    # tc qdisc add ... tbf rate 1mbit burst 4kb limit 8kb
    assert tbf.rate == 125_000  # bytes/s
    assert tbf.burst == 4096
    assert (tbf.limit, tbf.limit_unit) == (8192, "bytes")
    sent = json.loads(data("capture.json"))["sent_per_target"]
    assert tbf.packets + tbf.drops <= sent["198.18.10.2"] + 5  # a few IPv6/ARP frames at most


def test_real_htb_counts_its_leaf_drops():
    htb, leaf = by_dev(REAL, "qhtb")
    assert (htb.kind, htb.handle_str, htb.parent_str) == ("htb", "1:", "root")
    assert (leaf.kind, leaf.handle_str, leaf.parent_str) == ("pfifo", "10:", "1:10")
    assert (leaf.limit, leaf.limit_unit) == (5, "packets")
    assert htb.drops == leaf.drops == 293  # the root holds every drop of the tree once
    assert htb.overlimits > 0 and leaf.overlimits == 0
    assert htb.limit is None  # htb's queues live in its classes


def test_real_mq_sums_its_per_queue_children():
    mq, *children = by_dev(REAL, "qmq")
    assert mq.kind == "mq" and mq.handle_str == "3:"
    assert sorted(c.parent_str for c in children) == ["3:1", "3:2"]
    assert all(c.kind == "pfifo_fast" and c.handle_str == "0:" for c in children)
    assert mq.packets == sum(c.packets for c in children)
    assert mq.bytes == sum(c.bytes for c in children)
    # distinct counter names although all children have handle 0:
    names = qdisc.counters(REAL)
    assert "qdisc.qmq.pfifo_fast.0:/3:1.drops" in names and "qdisc.qmq.pfifo_fast.0:/3:2.drops" in names


def test_real_limits_and_txqueuelen():
    (pfifo, clsact) = by_dev(REAL, "qpfifo")
    assert (pfifo.limit, pfifo.limit_unit, pfifo.txqueuelen) == (50, "packets", 500)
    assert clsact.kind == "clsact" and clsact.is_ingress and clsact.parent_str == "ingress"
    assert clsact.limit is None
    (bfifo, ingress) = by_dev(REAL, "qbfifo")
    assert (bfifo.limit, bfifo.limit_unit) == (3000, "bytes")
    assert ingress.kind == "ingress" and ingress.handle_str == "ffff:"
    (fast,) = by_dev(REAL, "qfast")
    # pfifo_fast has no limit of its own: its bands are txqueuelen long
    assert (fast.kind, fast.limit, fast.limit_unit, fast.txqueuelen) == ("pfifo_fast", 64, "packets", 64)
    (lo,) = by_dev(REAL, "lo")
    assert lo.kind == "noqueue" and lo.drops == 0 and lo.limit is None


def test_real_counters_names_and_values():
    flat = qdisc.counters(REAL)
    assert flat["qdisc.qtbf.tbf.1:/root.drops"] == 289
    assert flat["qdisc.qtbf.tbf.1:/root.overlimits"] == 311
    assert flat["qdisc.qhtb.pfifo.10:/1:10.drops"] == 293
    assert flat["qdisc.qpfifo.clsact.ffff:/ingress.drops"] == 0
    assert flat["qdisc.qfast.pfifo_fast.5:/root.packets"] == 304
    assert all(split_counter(name) is not None for name in flat)
    assert len(flat) == 4 * len(REAL)


def test_links():
    links = qdisc.parse_links(data("rtm_getlink.bin"))
    assert {l.name: l.txqueuelen for l in links.values()} == {
        "lo": 1000, "qtbf": 1000, "qhtb": 1000, "qpfifo": 500, "qmq": 1000, "qbfifo": 1000, "qfast": 64}


def test_unknown_ifindex_is_named_by_number():
    qs = qdisc.parse_qdiscs(data("rtm_getqdisc.bin"), {})
    assert qs[1].dev == "ifindex2" and qs[1].txqueuelen is None
    # without the link, pfifo_fast's limit is unknown, not 0
    assert [q.limit for q in qs if q.kind == "pfifo_fast"] == [None, None, None]


# --- crafted layouts ----------------------------------------------------------------------

def test_fq_codel_under_mq_with_xstats():
    qs = qdisc.parse(data("rtm_getqdisc_fq_codel_mq.bin"), CRAFTED_LINKS)
    mq, q1, q2 = by_dev(qs, "eth0")
    assert (mq.kind, mq.handle_str, mq.parent_str) == ("mq", "0:", "root")
    assert (q1.kind, q1.handle_str, q1.parent_str) == ("fq_codel", "0:", ":1")
    assert (q1.limit, q1.limit_unit) == (10240, "packets")
    assert q1.xstats == {"drop_overlimit": 650, "ecn_mark": 5, "drop_overmemory": 0}
    assert q2.xstats["drop_overlimit"] == 0
    assert mq.drops == q1.drops + q2.drops == 740
    flat = qdisc.counters(qs)
    assert flat["qdisc.eth0.fq_codel.0:/:1.drop_overlimit"] == 650
    assert "qdisc.eth0.mq.0:/root.drop_overlimit" not in flat


def test_64_bit_rate_and_packet_count():
    qs = qdisc.parse(data("rtm_getqdisc_fq_codel_mq.bin"), CRAFTED_LINKS)
    (tbf,) = by_dev(qs, "eth0.100")
    assert tbf.rate == 5_000_000_000  # from TCA_TBF_RATE64: the u32 field is saturated
    assert tbf.packets == 6_000_000_000  # from TCA_STATS_PKT64
    assert qdisc.counters(qs)["qdisc.eth0.100.tbf.1:/root.packets"] == 6_000_000_000 & 0xFFFFFFFF
    assert split_counter("qdisc.eth0.100.tbf.1:/root.drops") == ("eth0.100", "tbf", "1:/root", "drops")


def test_3_10_layout():
    qs = qdisc.parse(data("rtm_getqdisc_3.10.bin"), CRAFTED_LINKS)
    tbf, fq_codel = qs
    # TCA_STATS2 wins over the compat TCA_STATS sent beside it (it has requeues)
    assert (tbf.drops, tbf.overlimits, tbf.requeues, tbf.packets) == (321, 4000, 7, 90_000)
    assert (tbf.rate, tbf.limit) == (1_250_000, 15_000)
    assert tbf.burst == 96_000  # 1_200_000 ticks of 64 ns at 1.25 MB/s
    assert fq_codel.handle_str == "8001:"
    assert fq_codel.xstats == {"drop_overlimit": 4, "ecn_mark": 0}  # before drop_overmemory (4.9)


def test_legacy_stats_only_has_no_requeues():
    qs = qdisc.parse(data("rtm_getqdisc_legacy_stats.bin"), CRAFTED_LINKS)
    fast, bare = qs
    assert (fast.drops, fast.overlimits, fast.packets) == (17, 0, 4000)
    assert fast.requeues is None  # the kernel lacks it: None, never 0
    assert bare.drops is None and bare.packets is None
    flat = qdisc.counters(qs)
    assert flat["qdisc.eth0.pfifo_fast.0:/root.requeues"] is None
    assert flat["qdisc.eth0.100.pfifo.2:/root.drops"] is None


@pytest.mark.parametrize("value, text", [
    (TC_H_ROOT, "root"), (TC_H_INGRESS, "ingress"), (0, "0:"), (0x10000, "1:"),
    (0x10010, "1:10"), (0x2, ":2"), (0x80010000, "8001:"), (0xFFFF0000, "ffff:"),
])
def test_format_handle(value, text):
    assert format_handle(value) == text


@pytest.mark.parametrize("name", ["Udp.NoPorts", "qdisc.eth0.drops", "qdisc.eth0.tbf.1:.drops", "link.eth0.x"])
def test_split_counter_rejects_other_names(name):
    assert split_counter(name) is None


# --- broken input -------------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("rtm_getqdisc_short_queue_stats.bin", "TCA_STATS_QUEUE"),
    ("rtm_getqdisc_no_kind.bin", "without TCA_KIND"),
    ("rtm_getqdisc_short_tcmsg.bin", "shorter than tcmsg"),
    ("rtm_getqdisc_bad_kind.bin", "not a qdisc name"),
    ("rtm_getqdisc_short_tbf_parms.bin", "TCA_TBF_PARMS"),
])
def test_broken_dumps(name, message):
    with pytest.raises(ParseError, match=message):
        qdisc.parse(data(name), CRAFTED_LINKS)


def test_every_truncation_of_the_real_dump_raises_parse_error_or_parses_a_prefix():
    reply = data("rtm_getqdisc.bin")
    for end in range(len(reply)):
        try:
            qs = qdisc.parse_qdiscs(reply[:end])
        except ParseError:
            continue
        assert len(qs) <= len(REAL)


def test_every_truncation_of_the_link_dump():
    reply = data("rtm_getlink.bin")
    for end in range(0, len(reply), 7):
        try:
            qdisc.parse_links(reply[:end])
        except ParseError:
            pass


def test_empty_reply_is_no_qdisc():
    assert qdisc.parse_qdiscs(b"") == []


def test_short_link_message():
    body = struct.pack("=BxH", 0, 1)
    msg = struct.pack("=IHHII", 16 + len(body), qdisc.RTM_NEWLINK, 2, 1, 0) + body
    with pytest.raises(ParseError, match="ifinfomsg"):
        qdisc.parse_links(msg)


# --- reading ------------------------------------------------------------------------------

def test_registered_with_u32_counters():
    source = SOURCES["qdisc"]
    assert source.counter_bits == 32 and not source.final_only


def test_read_replays_recorded_dumps():
    recorded = {
        f"netlink/0-{qdisc.RTM_GETLINK}-{qdisc.link_request().hex()}": data("rtm_getlink.bin"),
        f"netlink/0-{qdisc.RTM_GETQDISC}-{qdisc.qdisc_request().hex()}": data("rtm_getqdisc.bin"),
    }
    ctx = ReadContext(root="/nonexistent", live=False, replay=recorded)
    assert qdisc.read(ctx) == REAL


def test_read_without_live_netlink_is_unavailable():
    with pytest.raises(SourceUnavailable):
        qdisc.read(ReadContext(root="/nonexistent", live=False))
