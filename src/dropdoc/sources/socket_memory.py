"""Per-socket memory and drop counters of TCP and UDP sockets (sock_diag, SK_MEMINFO).

What `ss -tuam` shows as skmem:(r,rb,t,tb,f,w,o,bl,d): queued receive memory and the
receive buffer in force, send memory and buffer, forward allocation, write queue,
option memory, backlog and the socket's own drop counter (sk_drops). The kernel
counters (TcpExt.TCPBacklogDrop, Udp.MemErrors...) say how many packets died; sk_drops
says on which socket: every TCP drop path on an established socket (backlog full,
receive queue full, PAWS...) and every listen-path drop (tcp_listendrop: SYN or
accept queue full) increments it, as do UDP receive drops (buffer, memory, filter).

One inet_diag dump per protocol and family with idiag_ext = SKMEMINFO. TIME_WAIT and
half-open request sockets are left out (they have no memory of their own).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .. import netlink
from ..errors import ParseError
from .base import ReadContext, Source, register
from .proc_sockets import TCP_LISTEN, format_endpoint
from .tcp_listeners import SOCK_DIAG_BY_FAMILY

INET_DIAG_SKMEMINFO = 7
_REQ = struct.Struct("=BBBxI48x")
_MSG_SIZE = 72
# TCP states 1..11 except TIME_WAIT (6) and SYN_RECV (3: request sockets, see tcp_syn_recv)
TCP_STATES = sum(1 << s for s in range(1, 12) if s not in (3, 6))
UDP_STATES = 0xFFF
MEMINFO_NAMES = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued",
                 "optmem", "backlog", "drops")


@dataclass(frozen=True)
class SockMem:
    proto: str  # "tcp" or "udp"
    family: int  # 4 or 6
    local: str
    port: int
    remote: str
    remote_port: int
    state: int
    inode: int
    uid: int
    rqueue: int
    wqueue: int
    rmem_alloc: int | None = None  # bytes queued for the application (skmem r)
    rcvbuf: int | None = None      # receive buffer in force (rb): SO_RCVBUF x2 or the default
    wmem_alloc: int | None = None  # t
    sndbuf: int | None = None      # tb
    fwd_alloc: int | None = None
    wmem_queued: int | None = None
    optmem: int | None = None
    backlog: int | None = None
    drops: int | None = None       # sk_drops (kernel >= 4.7); None when not reported

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.local, self.port)

    @property
    def peer(self) -> str:
        return format_endpoint(self.remote, self.remote_port)

    @property
    def memory(self) -> int:
        """Bytes this socket holds: queued receive data plus its write queue."""
        return (self.rmem_alloc or 0) + (self.wmem_queued or self.wmem_alloc or 0)


_HEAD = struct.Struct("=BBBB2s2s16s16s12xIIIII")  # inet_diag_msg, 72 bytes
_ATTR = struct.Struct("=HH")
_ADDRESSES: dict[tuple[int, bytes], str] = {}  # a host has few distinct addresses


def address_text(family: int, raw: bytes) -> str:
    """inet_diag address bytes -> text (IPv4-mapped IPv6 as IPv4), cached."""
    key = (family, raw)
    text = _ADDRESSES.get(key)
    if text is None:
        if family == socket.AF_INET:
            text = socket.inet_ntop(socket.AF_INET, raw[:4])
        else:
            text = socket.inet_ntop(socket.AF_INET6, raw)
            if text.startswith("::ffff:") and "." in text:
                text = text[7:]  # IPv4-mapped
        if len(_ADDRESSES) > 4096:
            _ADDRESSES.clear()
        _ADDRESSES[key] = text
    return text


def _interesting(state: int, values: tuple[int, ...]) -> bool:
    """Listeners, and sockets that dropped or hold memory: the rest cannot be a subject.
    A socket left out of the first snapshot had no drops then, so its delta is still right."""
    if state == TCP_LISTEN or len(values) < len(MEMINFO_NAMES):
        return True
    rmem, _rb, wmem, _tb, _fwd, queued, _opt, backlog, drops = values[:9]
    return bool(drops or rmem or wmem or queued or backlog)


def parse_diag_reply(reply: bytes, proto: str, keep_all: bool = False) -> list[SockMem]:
    """Parse a SOCK_DIAG_BY_FAMILY dump reply with INET_DIAG_SKMEMINFO attributes.

    Only listeners and sockets with drops or queued memory are kept (keep_all: every one):
    a busy server has 100k idle connections, and building objects for them would cost more
    than the dump itself."""
    sockets = []
    for msg_type, body in netlink.messages(reply):
        if msg_type != SOCK_DIAG_BY_FAMILY:
            continue
        if len(body) < _MSG_SIZE:
            raise ParseError(f"inet_diag_msg of {len(body)} bytes, expected {_MSG_SIZE}")
        family, state, _timer, _retrans, sport, dport, src, dst, _expires, rqueue, wqueue, uid, inode = \
            _HEAD.unpack_from(body)
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ParseError(f"unexpected address family {family} in inet_diag_msg")
        values: tuple[int, ...] = ()
        offset, size = _MSG_SIZE, len(body)
        while offset + 4 <= size:
            length, attr_type = _ATTR.unpack_from(body, offset)
            if length < 4 or offset + length > size:
                raise ParseError(f"netlink attribute of length {length} is truncated")
            if attr_type & 0x3FFF == INET_DIAG_SKMEMINFO:
                count = min((length - 4) // 4, len(MEMINFO_NAMES))
                values = struct.unpack_from(f"={count}I", body, offset + 4)
            offset += (length + 3) & ~3
        if not keep_all and not _interesting(state, values):
            continue
        sockets.append(SockMem(proto, 4 if family == socket.AF_INET else 6,
                               address_text(family, src), int.from_bytes(sport, "big"),
                               address_text(family, dst), int.from_bytes(dport, "big"),
                               state, inode, uid, rqueue, wqueue, *values))
    return sockets


def request(family: int, protocol: int, states: int) -> bytes:
    return _REQ.pack(family, protocol, 1 << (INET_DIAG_SKMEMINFO - 1), states)


def _dump(ctx: ReadContext, proto: str, number: int, states: int) -> list[SockMem]:
    found: list[SockMem] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        reply = ctx.netlink_dump(netlink.NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY,
                                 request(family, number, states), f"sock_diag {proto} memory dump")
        found += parse_diag_reply(reply, proto)
    return found


def read_tcp(ctx: ReadContext) -> list[SockMem]:
    return _dump(ctx, "tcp", socket.IPPROTO_TCP, TCP_STATES)


def read_udp(ctx: ReadContext) -> list[SockMem]:
    return _dump(ctx, "udp", socket.IPPROTO_UDP, UDP_STATES)


def drops_in_window(before: list[SockMem] | None, after: list[SockMem] | None,
                    state: int | None = None) -> list[tuple[int, SockMem, bool]]:
    """(drops during the window, socket, cumulative) for sockets whose sk_drops rose, most
    first. A socket missing from the first dump had no drops then (or did not exist), so
    its whole counter is the window's. cumulative=True: the first dump is missing
    altogether, the numbers are since each socket was created."""
    if not after:
        return []
    cumulative = before is None
    old = {s.inode: s.drops for s in before or () if s.inode}
    moved = []
    for sock in after:
        if sock.drops is None or not sock.inode or (state is not None and sock.state != state):
            continue
        delta = sock.drops - (old.get(sock.inode) or 0)
        if delta > 0:
            moved.append((delta, sock, cumulative))
    return sorted(moved, key=lambda item: (-item[0], item[1].port))


# TCP in both snapshots (per-socket drops during the window; the dump is cheap). UDP only
# at the end: the kernel walks the whole UDP hash table for it (~9 ms per family here),
# and per-socket UDP drop deltas already come from /proc/net/udp (udp_sockets).
register(Source("tcp_socket_memory", read_tcp,
                description="TCP sockets: memory, buffers in force and drops per socket (sock_diag skmem)"))
register(Source("udp_socket_memory", read_udp, final_only=True,
                description="UDP sockets: receive/send buffers in force and memory (sock_diag skmem)"))
