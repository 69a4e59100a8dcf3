"""Property tests of the kernel area's parsers (sources/qdisc.py): whatever bytes a
netlink reply holds, the parser returns qdiscs or raises ParseError - nothing else.

The one documented exception (as for every netlink parser): netlink.messages raises
OSError(errno) for an NLMSG_ERROR message carrying a negative errno.
"""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import qdisc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "qdisc"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

QDISC_SEEDS = [(FIXTURES / name).read_bytes() for name in (
    "rtm_getqdisc.bin", "rtm_getqdisc_fq_codel_mq.bin", "rtm_getqdisc_3.10.bin", "rtm_getqdisc_legacy_stats.bin")]
LINK_SEEDS = [(FIXTURES / name).read_bytes() for name in ("rtm_getlink.bin", "rtm_getlink_crafted.bin")]
LINKS = qdisc.parse_links(LINK_SEEDS[0])


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed dump with a few truncations, byte flips, insertions or deletions."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


def nlattr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


KINDS = ["pfifo", "bfifo", "pfifo_fast", "tbf", "fq_codel", "fq", "codel", "sfq", "netem", "htb", "mq"]


@st.composite
def framed_qdisc(draw: st.DrawFn) -> bytes:
    """A well-framed RTM_NEWQDISC whose attributes are random: reaches the option/stats parsers."""
    body = struct.pack("=BxxxiIII", 0, draw(st.integers(0, 8)), draw(st.integers(0, 2**32 - 1)),
                       draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFF1, 0x10001, 1])), 0)
    body += nlattr(1, draw(st.sampled_from(KINDS)).encode() + b"\0")
    for _ in range(draw(st.integers(0, 3))):
        attr_type = draw(st.sampled_from([2, 3, 4, 7]))
        if attr_type == 7:
            inner = b"".join(nlattr(draw(st.sampled_from([1, 3, 4, 8])), draw(st.binary(max_size=44)))
                             for _ in range(draw(st.integers(0, 3))))
            body += nlattr(7, inner)
        elif attr_type == 2 and draw(st.booleans()):
            inner = b"".join(nlattr(draw(st.integers(0, 9)), draw(st.binary(max_size=40)))
                             for _ in range(draw(st.integers(0, 3))))
            body += nlattr(2, inner)
        else:
            body += nlattr(attr_type, draw(st.binary(max_size=48)))
    length = 16 + len(body)
    return struct.pack("=IHHII", length, qdisc.RTM_NEWQDISC, 2, 1, 0) + body


qdisc_inputs = st.one_of(st.binary(max_size=300), mutated(QDISC_SEEDS),
                         st.lists(framed_qdisc(), min_size=1, max_size=3).map(b"".join))


def call(parser, data):
    try:
        return parser(data)
    except ParseError:
        return None
    except OSError as exc:  # documented: NLMSG_ERROR with a negative errno
        assert exc.errno is not None and 0 < exc.errno < 4096
        return None


@FUZZ
@given(data=qdisc_inputs)
def test_qdisc_dump_raises_only_parse_error(data):
    qdiscs = call(lambda d: qdisc.parse_qdiscs(d, LINKS), data)
    if qdiscs is None:
        return
    for q in qdiscs:
        assert q.kind and "." not in q.kind and q.qid.count("/") == 1 and "." not in q.qid
        assert qdisc.split_counter(f"{q.counter_prefix}.drops") == (q.dev, q.kind, q.qid, "drops")
        assert all(v is None or (isinstance(v, int) and 0 <= v < 2**32) for v in qdisc.counters([q]).values())
        assert q.limit is None or q.limit >= 0


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), mutated(LINK_SEEDS)))
def test_link_dump_raises_only_parse_error(data):
    links = call(qdisc.parse_links, data)
    if links is not None:
        assert all(l.name and "/" not in l.name for l in links.values())


@FUZZ
@given(qdisc_data=mutated(QDISC_SEEDS), link_data=mutated(LINK_SEEDS))
def test_both_dumps_together(qdisc_data, link_data):
    call(lambda d: qdisc.parse(d, link_data), qdisc_data)


@FUZZ
@given(name=st.text(max_size=60))
def test_split_counter_never_raises(name):
    parts = qdisc.split_counter(name)
    assert parts is None or (len(parts) == 4 and "/" in parts[2])
