"""Property tests of the kernel area's parsers (sources/qdisc.py): whatever bytes a
netlink reply holds, the parser returns qdiscs or raises ParseError - nothing else.

The one documented exception (as for every netlink parser): netlink.messages raises
OSError(errno) for an NLMSG_ERROR message carrying a negative errno.
"""

from __future__ import annotations

import struct

from fuzzing import BINARY_EDITS, FUZZ, REFUSED, fixtures, mutated, nl_attr, nl_message, parse_or_refuse
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.sources import qdisc

QDISC_SEEDS = fixtures("qdisc", "rtm_getqdisc.bin", "rtm_getqdisc_fq_codel_mq.bin", "rtm_getqdisc_3.10.bin",
                       "rtm_getqdisc_legacy_stats.bin")
LINK_SEEDS = fixtures("qdisc", "rtm_getlink.bin", "rtm_getlink_crafted.bin")
LINKS = qdisc.parse_links(LINK_SEEDS[0])

KINDS = ["pfifo", "bfifo", "pfifo_fast", "tbf", "fq_codel", "fq", "codel", "sfq", "netem", "htb", "mq"]


def damaged(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed dump with 1..4 truncations, byte changes, insertions or deletions."""
    return mutated(seeds, BINARY_EDITS, min_edits=1)


@st.composite
def framed_qdisc(draw: st.DrawFn) -> bytes:
    """A well-framed RTM_NEWQDISC whose attributes are random: reaches the option/stats parsers."""
    body = struct.pack("=BxxxiIII", 0, draw(st.integers(0, 8)), draw(st.integers(0, 2**32 - 1)),
                       draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFF1, 0x10001, 1])), 0)
    body += nl_attr(1, draw(st.sampled_from(KINDS)).encode() + b"\0")
    for _ in range(draw(st.integers(0, 3))):
        attr_type = draw(st.sampled_from([2, 3, 4, 7]))
        if attr_type == 7:
            inner = b"".join(nl_attr(draw(st.sampled_from([1, 3, 4, 8])), draw(st.binary(max_size=44)))
                             for _ in range(draw(st.integers(0, 3))))
            body += nl_attr(7, inner)
        elif attr_type == 2 and draw(st.booleans()):
            inner = b"".join(nl_attr(draw(st.integers(0, 9)), draw(st.binary(max_size=40)))
                             for _ in range(draw(st.integers(0, 3))))
            body += nl_attr(2, inner)
        else:
            body += nl_attr(attr_type, draw(st.binary(max_size=48)))
    return nl_message(qdisc.RTM_NEWQDISC, body)


qdisc_inputs = st.one_of(st.binary(max_size=300), damaged(QDISC_SEEDS),
                         st.lists(framed_qdisc(), min_size=1, max_size=3).map(b"".join))


@FUZZ
@given(data=qdisc_inputs)
def test_qdisc_dump_raises_only_parse_error(data):
    qdiscs = parse_or_refuse(qdisc.parse_qdiscs, data, LINKS, netlink=True)
    if qdiscs is REFUSED:
        return
    for q in qdiscs:
        assert q.kind and "." not in q.kind and q.qid.count("/") == 1 and "." not in q.qid
        assert qdisc.split_counter(f"{q.counter_prefix}.drops") == (q.dev, q.kind, q.qid, "drops")
        assert all(v is None or (isinstance(v, int) and 0 <= v < 2**32) for v in qdisc.counters([q]).values())
        assert q.limit is None or q.limit >= 0


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), damaged(LINK_SEEDS)))
def test_link_dump_raises_only_parse_error(data):
    links = parse_or_refuse(qdisc.parse_links, data, netlink=True)
    if links is not REFUSED:
        assert all(l.name and "/" not in l.name for l in links.values())


@FUZZ
@given(qdisc_data=damaged(QDISC_SEEDS), link_data=damaged(LINK_SEEDS))
def test_both_dumps_together(qdisc_data, link_data):
    parse_or_refuse(qdisc.parse, qdisc_data, link_data, netlink=True)


@FUZZ
@given(name=st.text(max_size=60))
def test_split_counter_never_raises(name):
    parts = qdisc.split_counter(name)
    assert parts is None or (len(parts) == 4 and "/" in parts[2])
