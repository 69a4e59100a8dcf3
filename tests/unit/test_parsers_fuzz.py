"""Property tests: whatever bytes a kernel file or netlink reply holds, a parser either
returns a result or raises ParseError. Anything else escaping (IndexError, ValueError,
UnicodeError, struct.error, OverflowError...) is a bug: read_source would report it as
"FAILED: IndexError ..." instead of naming the broken file.

Inputs: random text and bytes, text from each format's own alphabet (to get past the first
checks), and mutations of the real fixtures - truncation at any offset, byte flips, lines
dropped, duplicated or swapped, random insertions.

The one documented exception: netlink.messages raises OSError(errno) for an NLMSG_ERROR
message carrying a (negative) errno, which dropdoc.netlink.dump translates at the boundary.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from fuzzing import (DIGITS, FIXTURES, FUZZ, HEX, REFUSED, TEXT_EDITS, decode, fixture, fixtures, mutated,
                     nl_messages, parse_or_refuse, text_inputs)
from hypothesis import given
from hypothesis import strategies as st

from dropdoc import netlink
from dropdoc.sources import (
    link_stats,
    netdev,
    proc_sockets,
    process_sockets,
    snmp,
    snmp6,
    softnet,
    sysctls,
    tcp_listeners,
)

# parser(text) -> result, fixtures to mutate, an alphabet that reaches past the first checks
TEXT_PARSERS: dict[str, tuple[Callable[[str], Any], list[bytes], str]] = {
    "snmp": (snmp.parse, fixtures("snmp", "snmp", "netstat", "snmp_3.10", "netstat_3.10"),
             "TcpUdIpExt: \n-" + DIGITS),
    "snmp6": (snmp6.parse, fixtures("snmp6", "snmp6", "snmp6_3.10"), "Ip6Udp6Lite6Icmp6Ab \t\n-" + DIGITS),
    "softnet": (softnet.parse, fixtures("softnet", "softnet_stat", "softnet_stat_3.10", "softnet_stat_4.x",
                                        "softnet_stat_5.10_cpu2_offline"),
                " \n" + HEX),
    "netdev": (netdev.parse, fixtures("netdev", "dev", "dev_busy_host"), "|: \neth0rx" + DIGITS),
    "proc_sockets": (lambda text: proc_sockets.parse(text, 6),
                     fixtures("proc_sockets", "tcp", "tcp6", "udp", "udp6", "udp_drops", "udp_2.6_no_drops",
                              "udp6_mapped", "tcp6_established"),
                     ": \n" + HEX),
}


def check_result(name: str, result: Any) -> None:
    """Cheap sanity of what a parser returned for input it accepted."""
    if name == "snmp":
        assert result and all(isinstance(v, int) for t in result.values() for v in t.values())
    elif name == "snmp6":
        assert result and all(isinstance(v, int) for v in result.values())
    elif name == "softnet":
        assert result and all(isinstance(c.dropped, int) for c in result)
    elif name == "netdev":
        assert all(isinstance(v, int) for t in result.values() for v in t.values())
    elif name == "proc_sockets":
        assert all(isinstance(s.local, str) and isinstance(s.port, int) and isinstance(s.inode, int)
                   for s in result)


@pytest.mark.parametrize("name", list(TEXT_PARSERS))
@FUZZ
@given(data=st.data())
def test_text_parsers_raise_only_parse_error(name, data):
    parser, seeds, alphabet = TEXT_PARSERS[name]
    result = parse_or_refuse(parser, data.draw(text_inputs(seeds, alphabet), label="text"))
    if result is not REFUSED:
        check_result(name, result)


# "0100007F:1F90"-like strings built from byte pairs and whitespace (bytes.fromhex skips it)
address_like = st.builds(
    lambda parts, port: "".join(parts) + ":" + port,
    st.lists(st.sampled_from(["00", "01", "7F", "ff", "FFFF", "0000", " ", "\t", "\n", "\x0b", "0", "g0"]),
             max_size=18),
    st.text(alphabet=HEX + " -", max_size=6),
)


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.text(alphabet=HEX + ": \t\n\x0b", max_size=60), address_like))
def test_parse_address_raises_only_parse_error(text):
    result = parse_or_refuse(proc_sockets.parse_address, text)
    if result is not REFUSED:
        address, port = result
        assert isinstance(address, str) and isinstance(port, int)


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet=DIGITS + " \t\n-+_x", max_size=80),
                      mutated(fixtures("sysctls/proc/sys/net", "ipv4/tcp_rmem", "core/somaxconn"),
                              TEXT_EDITS).map(decode)))
def test_sysctl_parse_value_raises_only_parse_error(text):
    value = parse_or_refuse(sysctls.parse_value, text)
    if value is REFUSED:
        assert not text.split()
    else:
        assert isinstance(value, (int, tuple, str))


@FUZZ
@given(target=st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\Asocket:\[.{0,12}\]\Z"),
    # decimal digits of any script, and other characters str.isdigit() accepts (e.g. superscripts)
    st.text(alphabet=st.characters(categories=("Nd", "No")) | st.sampled_from(DIGITS), min_size=1, max_size=6)
    .map(lambda digits: f"socket:[{digits}]"),
))
def test_parse_fd_link_never_raises(target):
    inode = process_sockets.parse_fd_link(target)
    assert inode is None or (target.startswith("socket:[") and int(target[8:-1]) == inode >= 0)


SYS_FILES = {p.name: p.read_text() for p in (FIXTURES / "link_stats" / "sys" / "eth0").iterdir()}


@FUZZ
@given(files=st.dictionaries(st.sampled_from(sorted(SYS_FILES)),
                             st.one_of(st.text(max_size=24), st.sampled_from(list(SYS_FILES.values()))),
                             max_size=6))
def test_statistics_files_raise_only_parse_error(files):
    stats = parse_or_refuse(link_stats.parse_statistics_files, files, "eth0")
    if stats is not REFUSED:
        assert set(stats) == set(files)


NETLINK_SEEDS = [fixture("link_stats/rtm_getlink.bin"), *fixtures("tcp_listeners", "sock_diag_inet.bin",
                                                                  "sock_diag_inet6.bin")]
netlink_inputs = st.one_of(
    st.binary(max_size=300),
    mutated(NETLINK_SEEDS, TEXT_EDITS),
    # well-framed messages with random bodies, so the body parsers are reached
    nl_messages([2, 3, 16, 20, 24], st.binary(max_size=120)),
)


@FUZZ
@given(data=netlink_inputs)
def test_rtnl_links_raise_only_parse_error(data):
    links = parse_or_refuse(link_stats.parse_rtnl_links, data, netlink=True)
    if links is not REFUSED:
        assert all(isinstance(v, int) for t in links.values() for v in t.values())


@FUZZ
@given(data=netlink_inputs)
def test_diag_reply_raises_only_parse_error(data):
    listeners = parse_or_refuse(tcp_listeners.parse_diag_reply, data, netlink=True)
    if listeners is not REFUSED:
        assert all(l.family in (4, 6) for l in listeners)


@FUZZ
@given(data=netlink_inputs)
def test_netlink_framing_raises_only_parse_error(data):
    parse_or_refuse(lambda buf: list(netlink.messages(buf)), data, netlink=True)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated([fixture("link_stats/rtm_getlink.bin")[32:1468]],
                                                       TEXT_EDITS)),
       offset=st.integers(0, 8))
def test_netlink_attributes_raise_only_parse_error(data, offset):
    attributes: list[tuple[int, bytes]] = []  # also those before a ParseError
    parse_or_refuse(lambda: attributes.extend(netlink.attributes(data, offset)))
    assert all(0 <= _type <= 0x3FFF and isinstance(payload, bytes) for _type, payload in attributes)


SOCKET_COLUMNS = ["sl", "local_address", "rem_address", "remote_address", "st", "tx_queue", "rx_queue",
                  "tr", "tm->when", "retrnsmt", "uid", "timeout", "inode", "ref", "pointer", "drops"]
socket_token = st.sampled_from(["0:", "0100007F:0050", "00000000:0000", "0A", "00000000:00000000",
                                "00:00000000", "0", "1159", "-1", "ffff8a1c3b2e4400", "zz", ":"])


@FUZZ
@given(header=st.permutations(SOCKET_COLUMNS).flatmap(lambda cols: st.lists(st.sampled_from(cols), max_size=16)),
       rows=st.lists(st.lists(socket_token, max_size=17), max_size=4))
def test_socket_tables_with_any_header_raise_only_parse_error(header, rows):
    """Column order and count come from the header: any header, any row length."""
    text = "\n".join([" ".join(header)] + [" ".join(row) for row in rows])
    parse_or_refuse(proc_sockets.parse, text, 4)
