"""Half-open TCP connections (the SYN queues), counted per local address and port.

A sock_diag (inet_diag) dump with the TCP_SYN_RECV state bit also returns the request
sockets that wait in listeners' SYN queues (the kernel adds TCP_NEW_SYN_RECV when
SYN_RECV is asked for): one inet_diag_msg per half-open connection, state SYN_RECV,
idiag_retrans = SYN-ACKs retransmitted so far, no inode (a request is not a socket).
That is what names the listener behind tcp.syn_queue_full: TCPReqQFullDrop says only
that some SYN queue was full. Counting, not listing: a SYN flood has 100k entries.

Read in the final snapshot only: it is a gauge of the moment the window ends.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from .. import netlink
from ..errors import ParseError
from .base import ReadContext, Source, register
from .proc_sockets import format_endpoint
from .socket_memory import address_text
from .tcp_listeners import SOCK_DIAG_BY_FAMILY

TCP_SYN_RECV = 3
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2 (as in tcp_listeners)
_MSG_SIZE = 72


@dataclass
class HalfOpen:
    """The half-open connections of one local address:port."""
    family: int  # 4 or 6
    address: str
    port: int
    count: int = 0
    retransmitted: int = 0       # requests whose SYN-ACK was sent more than once
    max_retrans: int = 0         # most SYN-ACK retransmits of one request
    peers: list[str] = field(default_factory=list)  # distinct remote addresses (first 16)
    peer_count: int = 0

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.address, self.port)


MAX_PEERS_KEPT = 16


_HEAD = struct.Struct("=BBBB2s2x16s16s")  # family state timer retrans, sport, (dport), src, dst


def parse_diag_reply(reply: bytes) -> list[HalfOpen]:
    """Parse a SOCK_DIAG_BY_FAMILY dump reply; aggregate SYN_RECV entries per local endpoint.
    Addresses are decoded once per distinct value (a SYN flood has many entries, few keys)."""
    counts: dict[tuple[int, bytes, bytes], list[int]] = {}  # key -> [count, retransmitted, max]
    peers: dict[tuple[int, bytes, bytes], set[bytes]] = {}
    for msg_type, body in netlink.messages(reply):
        if msg_type != SOCK_DIAG_BY_FAMILY:
            continue
        if len(body) < _MSG_SIZE:
            raise ParseError(f"inet_diag_msg of {len(body)} bytes, expected {_MSG_SIZE}")
        family, state, _timer, retrans, sport, src, dst = _HEAD.unpack_from(body)
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ParseError(f"unexpected address family {family} in inet_diag_msg")
        if state != TCP_SYN_RECV:
            continue
        key = (family, src, sport)
        entry = counts.get(key)
        if entry is None:
            entry = counts[key] = [0, 0, 0]
            peers[key] = set()
        entry[0] += 1
        entry[1] += retrans > 0
        entry[2] = max(entry[2], retrans)
        peers[key].add(dst)
    found = []
    for (family, src, sport), (count, retransmitted, max_retrans) in counts.items():
        addresses = sorted({address_text(family, raw) for raw in peers[(family, src, sport)]})
        found.append(HalfOpen(4 if family == socket.AF_INET else 6, address_text(family, src),
                              int.from_bytes(sport, "big"), count, retransmitted, max_retrans,
                              addresses[:MAX_PEERS_KEPT], len(addresses)))
    return sorted(found, key=lambda h: (-h.count, h.port, h.address))


def syn_recv_request(family: int) -> bytes:
    return _REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_SYN_RECV)


def read(ctx: ReadContext) -> list[HalfOpen]:
    entries: list[HalfOpen] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        reply = ctx.netlink_dump(netlink.NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, syn_recv_request(family),
                                 "sock_diag TCP SYN_RECV dump")
        entries += parse_diag_reply(reply)
    return entries


def for_listener(entries: list[HalfOpen], address: str, port: int) -> list[HalfOpen]:
    """The half-open connections a listener on address:port holds (0.0.0.0/:: take any address)."""
    wildcard = address in ("0.0.0.0", "::")
    return [e for e in entries if e.port == port and (wildcard or e.address == address)]


register(Source("tcp_syn_recv", read, final_only=True,
                description="half-open TCP connections per listening port (sock_diag SYN_RECV)"))
