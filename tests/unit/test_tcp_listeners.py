"""tcp_listeners.parse_diag_reply on sock_diag dumps captured by tests/fixtures/capture_netlink.py.

The capture held listeners on 127.0.0.1:47001 (listen(7)), [::1]:47002 (listen(13)) and
[::ffff:127.0.0.1]:47003 (listen(100000), capped at somaxconn) - see capture.json.
"""

import json
import socket
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import proc_sockets, tcp_listeners
from dropdoc.sources.tcp_listeners import SOCK_DIAG_BY_FAMILY, Listener

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURE = json.loads((FIXTURES / "capture.json").read_text())
INET = (FIXTURES / "tcp_listeners" / "sock_diag_inet.bin").read_bytes()
INET6 = (FIXTURES / "tcp_listeners" / "sock_diag_inet6.bin").read_bytes()


def inode(port: int) -> int:
    return next(s["inode"] for s in CAPTURE["sockets"] if s["proto"] == "tcp" and s["port"] == port)


def nlmsg(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, 2, 1, 0) + body + b"\0" * (-length % 4)


def diag_msg(family: int, state: int, sport: int, src: bytes, rqueue: int, wqueue: int,
             uid: int = 0, ino: int = 1, tail: bytes = b"") -> bytes:
    sockid = struct.pack("!HH", sport, 0) + src.ljust(16, b"\0") + b"\0" * 16 + struct.pack("=I", 0) + b"\0" * 8
    body = struct.pack("=BBBB", family, state, 0, 0) + sockid + struct.pack("=IIIII", 0, rqueue, wqueue, uid, ino)
    assert len(body) == 72
    return nlmsg(SOCK_DIAG_BY_FAMILY, body + tail)


DONE = nlmsg(3, struct.pack("=i", 0))


def test_real_ipv4_listeners():
    assert tcp_listeners.parse_diag_reply(INET) == [
        Listener(4, "0.0.0.0", 2024, 0, 128, 0, 1159),
        Listener(4, "127.0.0.1", 47001, 0, 7, 0, inode(47001)),
    ]


def test_real_ipv6_listeners_with_mapped_address():
    mapped, loopback = tcp_listeners.parse_diag_reply(INET6)
    assert mapped == Listener(6, "127.0.0.1", 47003, 0, CAPTURE["somaxconn"], 0, inode(47003))
    assert CAPTURE["somaxconn"] == 4096  # listen(100000) is capped at somaxconn
    assert mapped.endpoint == "127.0.0.1:47003"
    assert loopback == Listener(6, "::1", 47002, 0, 13, 0, inode(47002))
    assert loopback.endpoint == "[::1]:47002"


def test_real_dump_agrees_with_proc_net_tcp_of_the_same_instant():
    from_diag = {(l.address, l.port, l.inode) for l in
                 tcp_listeners.parse_diag_reply(INET) + tcp_listeners.parse_diag_reply(INET6)}
    from_proc = {(s.local, s.port, s.inode) for name, family in (("tcp", 4), ("tcp6", 6))
                 for s in proc_sockets.parse((FIXTURES / "proc_sockets" / name).read_text(), family)
                 if s.state == proc_sockets.TCP_LISTEN}
    assert from_diag == from_proc


def test_accept_queue_and_uid_and_non_listeners():
    reply = (diag_msg(socket.AF_INET, 10, 8080, bytes([10, 0, 0, 1]), rqueue=129, wqueue=128, uid=33, ino=77)
             + diag_msg(socket.AF_INET, 1, 8080, bytes([10, 0, 0, 1]), rqueue=0, wqueue=0)  # ESTABLISHED
             + nlmsg(24, b"")  # some other message type
             + DONE)
    assert tcp_listeners.parse_diag_reply(reply) == [Listener(4, "10.0.0.1", 8080, 129, 128, 33, 77)]


def test_extension_attributes_after_the_message_are_ignored():
    reply = diag_msg(socket.AF_INET6, 10, 443, socket.inet_pton(socket.AF_INET6, "2001:db8::5"), 0, 511,
                     tail=struct.pack("=HH", 8, 1) + b"\0" * 4)
    (listener,) = tcp_listeners.parse_diag_reply(reply)
    assert (listener.address, listener.port, listener.backlog) == ("2001:db8::5", 443, 511)


def test_empty_dump():
    assert tcp_listeners.parse_diag_reply(b"") == []
    assert tcp_listeners.parse_diag_reply(DONE) == []


def test_short_inet_diag_msg():
    with pytest.raises(ParseError, match="inet_diag_msg of 40 bytes"):
        tcp_listeners.parse_diag_reply(nlmsg(SOCK_DIAG_BY_FAMILY, b"\x02\x0a" + b"\0" * 38))


def test_unknown_family():
    with pytest.raises(ParseError, match="address family 1"):
        tcp_listeners.parse_diag_reply(diag_msg(socket.AF_UNIX, 10, 1, b"", 0, 0))


@pytest.mark.parametrize("reply", [INET, INET6])
def test_every_truncation_of_the_real_dumps(reply):
    full = tcp_listeners.parse_diag_reply(reply)
    for cut in range(len(reply)):
        try:
            listeners = tcp_listeners.parse_diag_reply(reply[:cut])
        except ParseError:
            continue
        assert listeners == full[:len(listeners)]
