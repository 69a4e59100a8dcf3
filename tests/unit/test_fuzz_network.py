"""Property tests of the network-layer parsers: whatever a kernel file or netlink reply
holds, they return a result or raise ParseError - nothing else (IndexError, ValueError,
UnicodeError, struct.error, ipaddress errors...) may escape.

Inputs: random text/bytes, text from each format's own alphabet, mutations of the real
fixtures (truncation, byte flips, lines dropped/duplicated/swapped, words swapped), and
well-framed netlink messages with random bodies.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from fuzzing import (FUZZ, HEX, REFUSED, fixtures, mutated, nl_attr, nl_message, parse_or_refuse, text_edits,
                     text_inputs)
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.sources import neighbour, network_conf

EDITS = text_edits(b"ffffffffffffffffffff")  # a hex field longer than any address

NEIGH_SEEDS = fixtures("neighbour", "arp_cache", "ndisc_cache", "arp_cache_2.6.32", "arp_cache_4.x_table_full")
ROUTE_SEEDS = fixtures("network_conf", "host/proc/net/route", "lab_router/proc/net/route")
ROUTE6_SEEDS = fixtures("network_conf", "host/proc/net/ipv6_route", "lab_router/proc/net/ipv6_route")

TEXT_PARSERS: dict[str, tuple[Callable[[str], Any], list[bytes], str]] = {
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
    result = parse_or_refuse(parser, data.draw(text_inputs(seeds, alphabet, edits=EDITS), label="text"))
    if result is not REFUSED:
        check(name, result)


HEADER = neighbour.KNOWN_COLUMNS
cell = st.one_of(st.text(alphabet=HEX, min_size=1, max_size=18), st.sampled_from(["-1", "0x10", "zz", "", "1_0"]))


@FUZZ
@given(columns=st.lists(st.sampled_from(HEADER + ("x", "entries", "Entries")), max_size=15),
       rows=st.lists(st.lists(cell, max_size=15), max_size=4))
def test_neighbour_any_header_any_rows(columns, rows):
    text = "\n".join([" ".join(columns)] + [" ".join(row) for row in rows])
    table = parse_or_refuse(neighbour.parse, text)
    if table is not REFUSED:
        assert set(table.counters) == set(columns[1:])


NETLINK_SEEDS = fixtures("network_conf", "lab_router/rtm_getlink.bin", "lab_router/rtm_getneigh.bin",
                         "host/rtm_getneigh.bin")
# ndmsg/ifinfomsg-sized headers followed by plausible attributes with random payloads
structured = st.lists(st.tuples(
    st.sampled_from([network_conf.RTM_NEWLINK, network_conf.RTM_NEWNEIGH, 2, 3]),
    st.binary(min_size=0, max_size=16),
    st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 0x8001]), st.binary(max_size=20)), max_size=4),
), max_size=4).map(lambda msgs: b"".join(
    nl_message(t, head + b"".join(nl_attr(a, p) for a, p in attrs)) for t, head, attrs in msgs))
netlink_inputs = st.one_of(st.binary(max_size=300), mutated(NETLINK_SEEDS, EDITS), structured)


@FUZZ
@given(data=netlink_inputs)
def test_parse_links_raises_only_parse_error(data):
    links = parse_or_refuse(network_conf.parse_links, data, netlink=True)
    if links is not REFUSED:
        assert all(isinstance(name, str) and (mtu is None or mtu >= 0) for name, mtu in links.values())


@FUZZ
@given(data=netlink_inputs)
def test_parse_neighbours_raises_only_parse_error(data):
    entries = parse_or_refuse(lambda buf: network_conf.parse_neighbours(buf, {1: "lo"}), data, netlink=True)
    if entries is not REFUSED:
        assert all(n.family in (4, 6) and isinstance(n.state, str) for n in entries)
