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

from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc import netlink
from dropdoc.errors import ParseError
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

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fixture(relpath: str) -> bytes:
    return (FIXTURES / relpath).read_bytes()


def decode(data: bytes) -> str:
    # What errors.read_text does with a kernel file.
    return data.decode("utf-8", errors="replace")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of the seed files with a few random edits."""
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
                [b" ", b"\n", b":", b"|", b"\t", b"-1", b"0x", b"\xff\xfe", b"\x00", b"\xc2\xb2", b"\r\n"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "lines":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["drop", "dup", "swap"]))
            if how == "drop":
                del lines[i]
            elif how == "dup":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "words":  # swap two words of one line (e.g. reorder header columns)
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            words = lines[i].split()
            if len(words) >= 2:
                a = draw(st.integers(0, len(words) - 1))
                b = draw(st.integers(0, len(words) - 1))
                words[a], words[b] = words[b], words[a]
                lines[i] = b" ".join(words)
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def text_inputs(seed_paths: list[str], alphabet: str) -> st.SearchStrategy[str]:
    seeds = [fixture(p) for p in seed_paths]
    return st.one_of(
        st.text(max_size=300),
        st.text(alphabet=alphabet, max_size=400),
        mutated(seeds).map(decode),
    )


HEX = "0123456789abcdefABCDEF"
DIGITS = "0123456789"

# parser(text) -> result, fixtures to mutate, an alphabet that reaches past the first checks
TEXT_PARSERS: dict[str, tuple[Callable[[str], Any], list[str], str]] = {
    "snmp": (snmp.parse, ["snmp/snmp", "snmp/netstat", "snmp/snmp_3.10", "snmp/netstat_3.10"],
             "TcpUdIpExt: \n-" + DIGITS),
    "snmp6": (snmp6.parse, ["snmp6/snmp6", "snmp6/snmp6_3.10"], "Ip6Udp6Lite6Icmp6Ab \t\n-" + DIGITS),
    "softnet": (softnet.parse, ["softnet/softnet_stat", "softnet/softnet_stat_3.10",
                                "softnet/softnet_stat_4.x", "softnet/softnet_stat_5.10_cpu2_offline"],
                " \n" + HEX),
    "netdev": (netdev.parse, ["netdev/dev", "netdev/dev_busy_host"], "|: \neth0rx" + DIGITS),
    "proc_sockets": (lambda text: proc_sockets.parse(text, 6),
                     ["proc_sockets/tcp", "proc_sockets/tcp6", "proc_sockets/udp", "proc_sockets/udp6",
                      "proc_sockets/udp_drops", "proc_sockets/udp_2.6_no_drops", "proc_sockets/udp6_mapped",
                      "proc_sockets/tcp6_established"],
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
    text = data.draw(text_inputs(seeds, alphabet), label="text")
    try:
        result = parser(text)
    except ParseError:
        return
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
    try:
        address, port = proc_sockets.parse_address(text)
    except ParseError:
        return
    assert isinstance(address, str) and isinstance(port, int)


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet=DIGITS + " \t\n-+_x", max_size=80),
                      mutated([fixture("sysctls/proc/sys/net/ipv4/tcp_rmem"),
                               fixture("sysctls/proc/sys/net/core/somaxconn")]).map(decode)))
def test_sysctl_parse_value_raises_only_parse_error(text):
    try:
        value = sysctls.parse_value(text)
    except ParseError:
        assert not text.split()
        return
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
    try:
        stats = link_stats.parse_statistics_files(files, "eth0")
    except ParseError:
        return
    assert set(stats) == set(files)


def netlink_call(parser: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parser(data)
    except ParseError:
        return None
    except OSError as exc:  # documented: NLMSG_ERROR with a negative errno
        assert exc.errno is not None and 0 < exc.errno < 4096
        return None


def nl_message(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return length.to_bytes(4, "little") + msg_type.to_bytes(2, "little") + bytes(10) + body


NETLINK_SEEDS = [fixture("link_stats/rtm_getlink.bin"), fixture("tcp_listeners/sock_diag_inet.bin"),
                 fixture("tcp_listeners/sock_diag_inet6.bin")]
netlink_inputs = st.one_of(
    st.binary(max_size=300),
    mutated(NETLINK_SEEDS),
    # well-framed messages with random bodies, so the body parsers are reached
    st.lists(st.tuples(st.sampled_from([2, 3, 16, 20, 24]), st.binary(max_size=120)), max_size=4)
    .map(lambda msgs: b"".join(nl_message(t, b).ljust((16 + len(b) + 3) & ~3, b"\0") for t, b in msgs)),
)


@FUZZ
@given(data=netlink_inputs)
def test_rtnl_links_raise_only_parse_error(data):
    links = netlink_call(link_stats.parse_rtnl_links, data)
    if links is not None:
        assert all(isinstance(v, int) for t in links.values() for v in t.values())


@FUZZ
@given(data=netlink_inputs)
def test_diag_reply_raises_only_parse_error(data):
    listeners = netlink_call(tcp_listeners.parse_diag_reply, data)
    if listeners is not None:
        assert all(l.family in (4, 6) for l in listeners)


@FUZZ
@given(data=netlink_inputs)
def test_netlink_framing_raises_only_parse_error(data):
    netlink_call(lambda buf: list(netlink.messages(buf)), data)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated([fixture("link_stats/rtm_getlink.bin")[32:1468]])),
       offset=st.integers(0, 8))
def test_netlink_attributes_raise_only_parse_error(data, offset):
    try:
        for _type, payload in netlink.attributes(data, offset):
            assert 0 <= _type <= 0x3FFF and isinstance(payload, bytes)
    except ParseError:
        pass


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
    try:
        proc_sockets.parse(text, 4)
    except ParseError:
        pass
