"""Property tests of the network-layer parsers: whatever a kernel file or netlink reply
holds, they return a result or raise ParseError - nothing else (IndexError, ValueError,
UnicodeError, struct.error, ipaddress errors...) may escape.

Inputs: random text/bytes, text from each format's own alphabet, mutations of the real
fixtures (truncation, byte flips, lines dropped/duplicated/swapped, words swapped), and
well-framed netlink messages with random bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import neighbour, network_conf

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEX = "0123456789abcdefABCDEF"


def fixture(relpath: str) -> bytes:
    return (FIXTURES / relpath).read_bytes()


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lines", "words"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b" ", b"\n", b"\t", b"-1", b"0x", b"_", b"\xff\xfe", b"\x00", b"ffffffffffffffffffff"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op in ("lines", "words"):
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if op == "lines":
                lines[i], lines[j] = lines[j], lines[i]
                if draw(st.booleans()):
                    del lines[i]
            else:
                words = lines[i].split()
                if len(words) >= 2:
                    a, b = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
                    words[a], words[b] = words[b], words[a]
                    lines[i] = b" ".join(words)
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def text_inputs(seeds: list[str], alphabet: str) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=300), st.text(alphabet=alphabet, max_size=400),
                     mutated([fixture(p) for p in seeds]).map(decode))


NEIGH_SEEDS = ["neighbour/arp_cache", "neighbour/ndisc_cache", "neighbour/arp_cache_2.6.32",
               "neighbour/arp_cache_4.x_table_full"]
ROUTE_SEEDS = ["network_conf/host/proc/net/route", "network_conf/lab_router/proc/net/route"]
ROUTE6_SEEDS = ["network_conf/host/proc/net/ipv6_route", "network_conf/lab_router/proc/net/ipv6_route"]

TEXT_PARSERS: dict[str, tuple[Callable[[str], Any], list[str], str]] = {
    "neighbour": (neighbour.parse, NEIGH_SEEDS, " \nentrisalocdh_" + HEX),
    "route": (network_conf.parse_route, ROUTE_SEEDS, " \t\nIfaceDstinGwyMk*" + HEX),
    "ipv6_route": (network_conf.parse_ipv6_route, ROUTE6_SEEDS, " \nlo" + HEX),
}


def check(name: str, result: Any) -> None:
    if name == "neighbour":
        assert result.cpus >= 1 and result.entries >= 0
        assert all(isinstance(v, int) and v >= 0 for v in result.counters.values())
        assert "entries" not in result.counters
    else:
        assert all(r.family in (4, 6) and isinstance(r.destination, str) for r in result)


@pytest.mark.parametrize("name", list(TEXT_PARSERS))
@FUZZ
@given(data=st.data())
def test_text_parsers_raise_only_parse_error(name, data):
    parser, seeds, alphabet = TEXT_PARSERS[name]
    text = data.draw(text_inputs(seeds, alphabet), label="text")
    try:
        result = parser(text)
    except ParseError:
        return
    check(name, result)


HEADER = neighbour.KNOWN_COLUMNS
cell = st.one_of(st.text(alphabet=HEX, min_size=1, max_size=18), st.sampled_from(["-1", "0x10", "zz", "", "1_0"]))


@FUZZ
@given(columns=st.lists(st.sampled_from(HEADER + ("x", "entries", "Entries")), max_size=15),
       rows=st.lists(st.lists(cell, max_size=15), max_size=4))
def test_neighbour_any_header_any_rows(columns, rows):
    text = "\n".join([" ".join(columns)] + [" ".join(row) for row in rows])
    try:
        table = neighbour.parse(text)
    except ParseError:
        return
    assert set(table.counters) == set(columns[1:])


def nl_message(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return (length.to_bytes(4, "little") + msg_type.to_bytes(2, "little") + bytes(10) + body).ljust(
        (length + 3) & ~3, b"\0")


def attribute(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return (length.to_bytes(2, "little") + attr_type.to_bytes(2, "little") + payload).ljust((length + 3) & ~3, b"\0")


NETLINK_SEEDS = [fixture("network_conf/lab_router/rtm_getlink.bin"), fixture("network_conf/lab_router/rtm_getneigh.bin"),
                 fixture("network_conf/host/rtm_getneigh.bin")]
# ndmsg/ifinfomsg-sized headers followed by plausible attributes with random payloads
structured = st.lists(st.tuples(
    st.sampled_from([network_conf.RTM_NEWLINK, network_conf.RTM_NEWNEIGH, 2, 3]),
    st.binary(min_size=0, max_size=16),
    st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 0x8001]), st.binary(max_size=20)), max_size=4),
), max_size=4).map(lambda msgs: b"".join(
    nl_message(t, head + b"".join(attribute(a, p) for a, p in attrs)) for t, head, attrs in msgs))
netlink_inputs = st.one_of(st.binary(max_size=300), mutated(NETLINK_SEEDS), structured)


def netlink_call(parser: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parser(data)
    except ParseError:
        return None
    except OSError as exc:  # documented in netlink.messages: NLMSG_ERROR carrying an errno
        assert exc.errno is not None and 0 < exc.errno < 4096
        return None


@FUZZ
@given(data=netlink_inputs)
def test_parse_links_raises_only_parse_error(data):
    links = netlink_call(network_conf.parse_links, data)
    if links is not None:
        assert all(isinstance(name, str) and (mtu is None or mtu >= 0) for name, mtu in links.values())


@FUZZ
@given(data=netlink_inputs)
def test_parse_neighbours_raises_only_parse_error(data):
    entries = netlink_call(lambda buf: network_conf.parse_neighbours(buf, {1: "lo"}), data)
    if entries is not None:
        assert all(n.family in (4, 6) and isinstance(n.state, str) for n in entries)
