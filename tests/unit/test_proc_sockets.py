"""proc_sockets.parse / parse_address on /proc/net/{tcp,tcp6,udp,udp6}.

The real tables were captured by tests/fixtures/capture_netlink.py while it held the
sockets listed in tests/fixtures/capture.json open.
"""

import json
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import proc_sockets
from dropdoc.sources.proc_sockets import TCP_CLOSE, TCP_LISTEN

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURE = json.loads((FIXTURES / "capture.json").read_text())


def text(relpath: str) -> str:
    return (FIXTURES / relpath).read_bytes().decode("utf-8", errors="replace")


def opened(proto: str, port: int) -> dict:
    return next(s for s in CAPTURE["sockets"] if s["proto"] == proto and s["port"] == port)


# --- parse_address -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("0100007F:1F90", ("127.0.0.1", 8080)),
    ("00000000:0035", ("0.0.0.0", 53)),
    ("0A01A8C0:007B", ("192.168.1.10", 123)),
    ("0100007f:ffff", ("127.0.0.1", 65535)),  # lower-case hex
    ("00000000000000000000000001000000:B79A", ("::1", 47002)),
    ("00000000000000000000000000000000:0000", ("::", 0)),
    ("B80D0120000000000000000001000000:01BB", ("2001:db8::1", 443)),
    ("000080FE00000000FF00FC00010000FE:0016", ("fe80::fc:ff:fe00:1", 22)),  # eth0 link-local here
    # IPv4-mapped IPv6 addresses are reported as the IPv4 address.
    ("0000000000000000FFFF00000100007F:B79B", ("127.0.0.1", 47003)),
    ("0000000000000000FFFF00000500000A:14E9", ("10.0.0.5", 5353)),
])
def test_parse_address(raw, expected):
    assert proc_sockets.parse_address(raw) == expected


@pytest.mark.parametrize("raw", [
    "", ":", "0100007F", "0100007F:", "0100007:1F90", "0100007F0:1F90", "0100007G:1F90",
    "0100007F:zz", "0100 7F :0050", "0100\t7F :0050", "01 00 07F:0050",
    "0000000000000000FFFF00000100007:0001", "ＡＡＡＡＡＡＡＡ:0001",
])
def test_parse_address_rejects(raw):
    with pytest.raises(ParseError):
        proc_sockets.parse_address(raw)


# --- real 6.18 tables ------------------------------------------------------------------------

def test_real_tcp():
    sockets = proc_sockets.parse(text("proc_sockets/tcp"), 4)
    assert [(s.local, s.port, s.state) for s in sockets] == [
        ("0.0.0.0", 2024, TCP_LISTEN), ("127.0.0.1", 47001, TCP_LISTEN)]
    assert sockets[0].inode == 1159
    assert sockets[1].inode == opened("tcp", 47001)["inode"]
    assert all(s.family == 4 and s.remote == "0.0.0.0" and s.remote_port == 0 for s in sockets)
    assert all(s.rx_queue == 0 and s.tx_queue == 0 and s.uid == 0 for s in sockets)
    assert all(s.drops is None for s in sockets)  # TCP tables have no drops column
    assert sockets[1].endpoint == "127.0.0.1:47001"


def test_real_tcp6_with_ipv4_mapped_listener():
    sockets = proc_sockets.parse(text("proc_sockets/tcp6"), 6)
    assert [(s.local, s.port) for s in sockets] == [("127.0.0.1", 47003), ("::1", 47002)]
    assert [s.inode for s in sockets] == [opened("tcp", 47003)["inode"], opened("tcp", 47002)["inode"]]
    assert all(s.family == 6 and s.state == TCP_LISTEN and s.remote == "::" for s in sockets)
    assert sockets[1].endpoint == "[::1]:47002"


def test_real_udp_and_udp6():
    (udp,) = proc_sockets.parse(text("proc_sockets/udp"), 4)
    assert (udp.local, udp.port, udp.state, udp.drops) == ("127.0.0.1", 47004, TCP_CLOSE, 0)
    assert udp.inode == opened("udp", 47004)["inode"]
    (udp6,) = proc_sockets.parse(text("proc_sockets/udp6"), 6)
    assert (udp6.local, udp6.port, udp6.drops, udp6.family) == ("::1", 47005, 0, 6)
    assert udp6.inode == opened("udp", 47005)["inode"]


def test_udp_counters_keyed_by_inode():
    sockets = proc_sockets.parse(text("proc_sockets/udp"), 4) + proc_sockets.parse(text("proc_sockets/udp6"), 6)
    flat = proc_sockets.udp_counters(sockets)
    assert flat == {f"udpsock.{opened('udp', 47004)['inode']}.drops": 0,
                    f"udpsock.{opened('udp', 47005)['inode']}.drops": 0}


# --- crafted -------------------------------------------------------------------------------

def test_udp_drops_and_queues():
    sockets = proc_sockets.parse(text("proc_sockets/udp_drops"), 4)
    dns, stub, syslog = sockets
    assert (dns.local, dns.port, dns.uid, dns.inode) == ("0.0.0.0", 53, 101, 23817)
    assert dns.drops == 48211
    assert dns.rx_queue == 0x3A980
    assert (stub.local, stub.drops) == ("127.0.0.53", 0)
    assert (syslog.remote, syslog.remote_port, syslog.state) == ("10.0.0.9", 514, 1)
    assert (syslog.tx_queue, syslog.drops) == (0x300, 7)


def test_old_udp_without_drops_column():
    # 2.6.2x: the header stops at "inode" though "ref pointer" values follow.
    sockets = proc_sockets.parse(text("proc_sockets/udp_2.6_no_drops"), 4)
    assert [(s.local, s.port) for s in sockets] == [("0.0.0.0", 53), ("192.168.1.10", 123)]
    assert [s.drops for s in sockets] == [None, None]  # unknown, not 0
    assert sockets[0].rx_queue == 0x1100
    assert sockets[1].uid == 38
    assert proc_sockets.udp_counters(sockets) == {}


def test_udp6_ipv4_mapped():
    mapped, native = proc_sockets.parse(text("proc_sockets/udp6_mapped"), 6)
    assert (mapped.local, mapped.port, mapped.family, mapped.drops) == ("10.0.0.5", 5353, 6, 315)
    assert mapped.endpoint == "10.0.0.5:5353"
    assert (native.local, native.port) == ("2001:db8::1", 53)
    assert native.endpoint == "[2001:db8::1]:53"


def test_tcp6_remote_address_column():
    # IPv6 tables call the column "remote_address", not "rem_address".
    listener, established = proc_sockets.parse(text("proc_sockets/tcp6_established"), 6)
    assert (listener.local, listener.port, listener.rx_queue) == ("::", 443, 0x80)
    assert (established.remote, established.remote_port) == ("2001:db8::2", 51000)
    assert (established.state, established.uid, established.inode) == (1, 33, 51301)


def test_header_only_is_no_socket():
    assert proc_sockets.parse(text("proc_sockets/tcp_header_only"), 4) == []


def test_blank_lines_skipped():
    lines = text("proc_sockets/tcp").splitlines()
    assert proc_sockets.parse("\n".join([lines[0], "", *lines[1:], "   "]), 4) == \
        proc_sockets.parse(text("proc_sockets/tcp"), 4)


@pytest.mark.parametrize("relpath, message", [
    ("proc_sockets/tcp_truncated", "short socket line"),
    ("proc_sockets/tcp_bad_address", "bad socket address '0000000:07E8'"),
    ("proc_sockets/tcp_non_numeric_inode", "'11x9' is not a number"),
    ("proc_sockets/tcp_no_header", "unexpected socket table header"),
    ("common/empty", "empty socket table"),
    ("common/blank_lines", "unexpected socket table header"),
    ("common/garbage.bin", None),
    ("snmp/snmp", None),
])
def test_broken_inputs_raise_parse_error(relpath, message):
    with pytest.raises(ParseError, match=message):
        proc_sockets.parse(text(relpath), 4)


def test_non_hex_state_and_queue():
    header, line = text("proc_sockets/tcp").splitlines()[:2]
    with pytest.raises(ParseError, match="st"):
        proc_sockets.parse(header + "\n" + line.replace(" 0A ", " QQ "), 4)
    with pytest.raises(ParseError, match="tx_queue"):
        proc_sockets.parse(header + "\n" + line.replace(" 00000000:00000000 ", " 0000000g:00000000 "), 4)


def test_columns_found_by_name_in_any_order():
    text = "inode st local_address\n9 0A 0100007F:0050\n"
    (sock,) = proc_sockets.parse(text, 4)
    assert (sock.inode, sock.state, sock.local, sock.port) == (9, 10, "127.0.0.1", 80)
    assert (sock.remote, sock.tx_queue, sock.uid, sock.drops) == ("0.0.0.0", 0, 0, None)


def test_line_too_short_for_local_address_after_inode():
    # Was a KeyError: the length check only looked at where "inode" is.
    with pytest.raises(ParseError, match="short socket line"):
        proc_sockets.parse("sl inode local_address\n0: 5\n", 4)
