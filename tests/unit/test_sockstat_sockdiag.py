"""The sock_diag parsers of the transport area on replies captured from this machine
(tests/fixtures/sockstat/capture_sockdiag.py): half-open requests per listener
(tcp_syn_recv) and per-socket memory and drops (socket_memory)."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from dropdoc import netlink
from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.sources import socket_memory, tcp_syn_recv
from dropdoc.sources.base import ReadContext
from dropdoc.sources.proc_sockets import TCP_CLOSE, TCP_LISTEN

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "sockstat"
CAPTURE = json.loads((HERE / "capture_sockdiag.json").read_text())
INODES = CAPTURE["inodes"]


def raw(name: str) -> bytes:
    return (HERE / name).read_bytes()


# --- tcp_syn_recv --------------------------------------------------------------------------

def test_half_open_requests_counted_per_listener():
    entries = tcp_syn_recv.parse_diag_reply(raw("sock_diag_syn_recv_inet.bin"))
    assert len(entries) == 1
    half = entries[0]
    # listen(2): the SYN queue holds backlog + 1 requests, the other SYNs were dropped
    assert (half.family, half.address, half.port) == (4, "127.0.0.1", CAPTURE["ports"]["half_listener"])
    assert half.count == CAPTURE["half_listener_backlog"] + 1 == 3
    assert half.peers == ["127.0.0.1"] and half.peer_count == 1
    assert half.endpoint == "127.0.0.1:47011"
    assert CAPTURE["netstat_at_capture"]["TCPReqQFullDrop"] == CAPTURE["connect_attempts"] - half.count


def test_half_open_ipv6_dump_is_empty():
    assert tcp_syn_recv.parse_diag_reply(raw("sock_diag_syn_recv_inet6.bin")) == []


def test_half_open_for_listener_matches_wildcards():
    entries = tcp_syn_recv.parse_diag_reply(raw("sock_diag_syn_recv_inet.bin"))
    assert tcp_syn_recv.for_listener(entries, "0.0.0.0", 47011) == entries
    assert tcp_syn_recv.for_listener(entries, "::", 47011) == entries
    assert tcp_syn_recv.for_listener(entries, "127.0.0.1", 47011) == entries
    assert tcp_syn_recv.for_listener(entries, "10.0.0.1", 47011) == []
    assert tcp_syn_recv.for_listener(entries, "0.0.0.0", 47010) == []


def diag_msg(family=socket.AF_INET, state=3, retrans=0, sport=8080, src=b"\x7f\0\0\1", dst=b"\x0a\0\0\2") -> bytes:
    body = struct.pack("=BBBB", family, state, 0, retrans) + struct.pack("!HH", sport, 40000)
    body += src.ljust(16, b"\0") + dst.ljust(16, b"\0") + b"\0" * 12 + b"\0" * 20
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_half_open_retransmits_and_peers_aggregated():
    reply = b"".join([diag_msg(retrans=0), diag_msg(retrans=3, dst=b"\x0a\0\0\3"), diag_msg(retrans=1),
                      diag_msg(state=1)])  # an established socket in the reply is ignored
    [half] = tcp_syn_recv.parse_diag_reply(reply)
    assert (half.count, half.retransmitted, half.max_retrans, half.peer_count) == (3, 2, 3, 2)
    assert half.peers == ["10.0.0.2", "10.0.0.3"]


def test_half_open_bad_family_and_short_message():
    with pytest.raises(ParseError, match="address family"):
        tcp_syn_recv.parse_diag_reply(diag_msg(family=7))
    short = struct.pack("=IHHII", 16 + 40, 20, 2, 1, 0) + b"\0" * 40
    with pytest.raises(ParseError, match="expected 72"):
        tcp_syn_recv.parse_diag_reply(short)


def test_half_open_needs_the_live_system_or_a_bundle():
    with pytest.raises(SourceUnavailable):
        tcp_syn_recv.read(ReadContext(root="/nonexistent", live=False))


def test_half_open_replayed_from_a_bundle():
    replay = {f"netlink/{netlink.NETLINK_SOCK_DIAG}-20-{tcp_syn_recv.syn_recv_request(f).hex()}": raw(name)
              for f, name in ((socket.AF_INET, "sock_diag_syn_recv_inet.bin"),
                              (socket.AF_INET6, "sock_diag_syn_recv_inet6.bin"))}
    entries = tcp_syn_recv.read(ReadContext(root="/nonexistent", live=False, replay=replay))
    assert [(e.port, e.count) for e in entries] == [(47011, 3)]


# --- socket_memory ------------------------------------------------------------------------

def tcp_sockets(keep_all=True):
    return (socket_memory.parse_diag_reply(raw("sock_diag_tcp_mem_inet.bin"), "tcp", keep_all)
            + socket_memory.parse_diag_reply(raw("sock_diag_tcp_mem_inet6.bin"), "tcp", keep_all))


def udp_sockets(keep_all=True):
    return (socket_memory.parse_diag_reply(raw("sock_diag_udp_mem_inet.bin"), "udp", keep_all)
            + socket_memory.parse_diag_reply(raw("sock_diag_udp_mem_inet6.bin"), "udp", keep_all))


def test_only_listeners_and_sockets_with_drops_or_memory_are_kept():
    kept = {s.inode for s in tcp_sockets(keep_all=False)}
    # the idle client ends, the half-open clients' sockets with nothing queued are left out
    assert {INODES["busy_listener"], INODES["half_listener"], INODES["server_conn"]} <= kept
    assert INODES["client_conn"] not in kept
    assert len(kept) < len(tcp_sockets())
    udp = {s.inode for s in udp_sockets(keep_all=False)}
    assert INODES["udp_small"] in udp and INODES["udp6"] not in udp


def test_tcp_listener_counts_its_syn_queue_drops():
    by_inode = {s.inode: s for s in tcp_sockets()}
    half = by_inode[INODES["half_listener"]]
    assert (half.state, half.endpoint) == (TCP_LISTEN, "127.0.0.1:47011")
    assert half.wqueue == CAPTURE["half_listener_backlog"]  # backlog in force
    assert half.drops == CAPTURE["netstat_at_capture"]["TCPReqQFullDrop"] == 3
    busy = by_inode[INODES["busy_listener"]]
    assert (busy.drops, busy.wqueue) == (0, 4)


def test_tcp_unread_data_is_queued_receive_memory():
    by_inode = {s.inode: s for s in tcp_sockets()}
    server = by_inode[INODES["server_conn"]]
    assert server.state == 1 and server.port == 47010
    assert server.rqueue == CAPTURE["bytes_unread"]
    assert server.rmem_alloc >= server.rqueue  # payload plus skb overhead
    assert server.rcvbuf > 0 and server.sndbuf > 0
    assert server.memory == server.rmem_alloc + (server.wmem_queued or server.wmem_alloc or 0)
    assert server.peer.startswith("127.0.0.1:")


def test_tcp_dump_has_no_time_wait_or_request_sockets():
    assert {s.state for s in tcp_sockets()} <= {1, 2, 4, 5, 7, 8, 9, 10, 11}


def test_udp_small_buffer_in_force_and_drops():
    by_inode = {s.inode: s for s in udp_sockets()}
    small = by_inode[INODES["udp_small"]]
    assert small.state == TCP_CLOSE and small.endpoint == "127.0.0.1:47012"
    assert small.rcvbuf == 2 * 4096  # SO_RCVBUF is doubled by the kernel
    assert 0 < small.drops < CAPTURE["datagrams_sent"]
    assert small.rmem_alloc <= small.rcvbuf
    six = by_inode[INODES["udp6"]]
    assert (six.family, six.endpoint, six.drops) == (6, "[::1]:47013", 0)


def meminfo_msg(values: tuple[int, ...], inode: int = 99) -> bytes:
    # inet_diag_msg: family state timer retrans, sport dport, src dst if cookie (44), expires rqueue wqueue uid inode
    body = struct.pack("=BBBB", socket.AF_INET, 7, 0, 0) + struct.pack("!HH", 53, 0) + b"\0" * 44
    body += struct.pack("=IIIII", 0, 0, 0, 0, inode)
    attr = struct.pack(f"={len(values)}I", *values)
    body += struct.pack("=HH", 4 + len(attr), socket_memory.INET_DIAG_SKMEMINFO) + attr
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_old_kernel_meminfo_without_drops_is_none():
    # SK_MEMINFO_DROPS (the 9th value) appeared in 4.x: a shorter array leaves it None
    [sock] = socket_memory.parse_diag_reply(meminfo_msg((10, 212992, 0, 212992, 0, 0, 0, 0)), "udp")
    assert (sock.rmem_alloc, sock.rcvbuf, sock.backlog, sock.drops) == (10, 212992, 0, None)
    [sock] = socket_memory.parse_diag_reply(meminfo_msg((1, 2, 3, 4, 5, 6, 7, 8, 9, 10)), "udp")
    assert sock.drops == 9  # values added by later kernels are ignored


def test_no_meminfo_attribute_leaves_memory_unknown():
    msg = meminfo_msg(())
    [sock] = socket_memory.parse_diag_reply(msg, "udp")
    assert sock.rcvbuf is None and sock.drops is None and sock.memory == 0


def test_drops_in_window_by_inode():
    from dataclasses import replace

    before = tcp_sockets(keep_all=False)
    half = next(s for s in before if s.inode == INODES["half_listener"])
    after = [replace(s, drops=s.drops + 40) if s.inode == half.inode else s for s in before]
    # not in the first dump: it had no drops then (or did not exist), all 5 are the window's
    newcomer = replace(half, inode=123456, drops=5, state=1, port=1234)
    moved = socket_memory.drops_in_window(before, after + [newcomer])
    assert [(d, s.inode, c) for d, s, c in moved] == [(40, half.inode, False), (5, 123456, False)]
    assert [s.inode for _, s, _ in socket_memory.drops_in_window(before, after + [newcomer], state=TCP_LISTEN)] == [half.inode]
    assert socket_memory.drops_in_window(before, None) == []
    assert socket_memory.drops_in_window(before, before) == []
    # no first dump at all: counters since each socket started, flagged as such
    assert [(d, c) for d, _, c in socket_memory.drops_in_window(None, after)][:1] == [(43, True)]


@pytest.mark.parametrize("name", ["sock_diag_tcp_mem_inet.bin", "sock_diag_udp_mem_inet.bin",
                                  "sock_diag_syn_recv_inet.bin"])
def test_every_truncation_raises_parse_error_or_parses(name):
    data = raw(name)
    parse = (tcp_syn_recv.parse_diag_reply if "syn_recv" in name
             else lambda b: socket_memory.parse_diag_reply(b, "tcp"))
    for cut in range(len(data)):
        try:
            parse(data[:cut])
        except ParseError:
            pass


@pytest.mark.parametrize("family, raw_address, text", [
    (socket.AF_INET, bytes([198, 18, 0, 1]) + bytes(12), "198.18.0.1"),
    (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.5"), "10.0.0.5"),
    (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), "2001:db8::1"),
    (socket.AF_INET6, bytes(16), "::"),
])
def test_address_text(family, raw_address, text):
    assert socket_memory.address_text(family, raw_address) == text
