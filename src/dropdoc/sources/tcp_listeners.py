"""Listening TCP sockets with their accept queue and the backlog in force.

sock_diag (NETLINK_SOCK_DIAG, inet_diag) reports for a listener idiag_rqueue = current
accept-queue length and idiag_wqueue = sk_max_ack_backlog, i.e. min(backlog the app
passed to listen(), somaxconn at that time) - what `ss -lnt` shows as Recv-Q/Send-Q.
/proc/net/tcp has the queue length but not the backlog, so it is only the fallback for
copied --root trees (backlog None).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from .. import netlink
from ..errors import ParseError
from .base import ReadContext, Source, register
from .proc_sockets import TCP_LISTEN, format_endpoint, parse as parse_proc

SOCK_DIAG_BY_FAMILY = 20
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (48 bytes)
_REQ = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retrans (4), sockid{sport dport (be16) src[16] dst[16]
# if cookie[2]} (48), expires, rqueue, wqueue, uid, inode (20): rqueue starts at byte 56.
_MSG_SIZE = 72


@dataclass(frozen=True)
class Listener:
    family: int  # 4 or 6
    address: str
    port: int
    accept_queue: int
    backlog: int | None  # backlog in force; None when unknown (no sock_diag)
    uid: int
    inode: int

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.address, self.port)


def parse_diag_reply(reply: bytes) -> list[Listener]:
    """Parse a SOCK_DIAG_BY_FAMILY dump reply (inet_diag_msg records)."""
    listeners = []
    for msg_type, body in netlink.messages(reply):
        if msg_type != SOCK_DIAG_BY_FAMILY:
            continue
        if len(body) < _MSG_SIZE:
            raise ParseError(f"inet_diag_msg of {len(body)} bytes, expected {_MSG_SIZE}")
        family, state = body[0], body[1]
        sport = struct.unpack_from("!H", body, 4)[0]
        src = body[8:24]
        rqueue, wqueue, uid, inode = struct.unpack_from("=IIII", body, 56)
        if family == socket.AF_INET:
            address = ipaddress.IPv4Address(src[:4])
        elif family == socket.AF_INET6:
            address = ipaddress.IPv6Address(src)
            if address.ipv4_mapped:
                address = address.ipv4_mapped
        else:
            raise ParseError(f"unexpected address family {family} in inet_diag_msg")
        if state != TCP_LISTEN:
            continue
        listeners.append(Listener(4 if family == socket.AF_INET else 6, str(address), sport,
                                  rqueue, wqueue, uid, inode))
    return listeners


def listener_request(family: int) -> bytes:
    return _REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)


def dump_listeners(ctx: ReadContext | None = None) -> list[Listener]:
    ctx = ctx or ReadContext()
    listeners = []
    for family in (socket.AF_INET, socket.AF_INET6):
        reply = ctx.netlink_dump(netlink.NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, listener_request(family),
                                 "sock_diag TCP dump")
        listeners += parse_diag_reply(reply)
    return listeners


def _from_proc(ctx: ReadContext) -> list[Listener]:
    found = []
    for name, family in (("tcp", 4), ("tcp6", 6)):
        try:
            text = ctx.read("proc", "net", name)
        except Exception:  # noqa: BLE001 - tcp6 absent when IPv6 is disabled
            if family == 4:
                raise
            continue
        found += [Listener(s.family, s.local, s.port, s.rx_queue, None, s.uid, s.inode)
                  for s in parse_proc(text, family) if s.state == TCP_LISTEN]
    return found


def read(ctx: ReadContext) -> list[Listener]:
    return dump_listeners(ctx) if ctx.live or ctx.replay is not None else _from_proc(ctx)


register(Source("tcp_listeners", read,
                description="listening TCP sockets: accept queue and backlog (sock_diag)"))
