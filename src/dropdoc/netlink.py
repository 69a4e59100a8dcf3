"""A minimal netlink dump client: send one request, collect the reply messages.

dropdoc needs two netlink dumps (sock_diag for listening sockets, rtnetlink for link
statistics). Hand-written rather than pyroute2 because importing pyroute2 alone takes
~280 ms here while a full snapshot is ~1 ms of work, and because the parsers below are
pure functions over bytes that unit tests run on captured replies.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Iterator

from .errors import ParseError, from_os_error

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid


def dump(protocol: int, msg_type: int, payload: bytes, what: str) -> bytes:
    """Send a dump request; return the raw reply (all messages up to NLMSG_DONE)."""
    request = _HEADER.pack(_HEADER.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as sock:
            sock.sendall(request)
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if _ends_dump(chunk):
                    break
    except OSError as exc:
        raise from_os_error(exc, what) from exc
    return b"".join(chunks)


def _ends_dump(chunk: bytes) -> bool:
    for msg_type, _body in messages(chunk):
        if msg_type in (NLMSG_DONE, NLMSG_ERROR):
            return True
    return False


def messages(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (type, body) for each netlink message; NLMSG_ERROR with errno raises OSError."""
    offset = 0
    while offset + _HEADER.size <= len(buf):
        length, msg_type, _flags, _seq, _pid = _HEADER.unpack_from(buf, offset)
        if length < _HEADER.size or offset + length > len(buf):
            raise ParseError(f"netlink message of length {length} at offset {offset} is truncated")
        body = buf[offset + _HEADER.size: offset + length]
        if msg_type == NLMSG_ERROR and len(body) >= 4:
            (error,) = struct.unpack_from("=i", body)
            if error:
                if not 0 < -error < 4096:  # a negative errno (MAX_ERRNO is 4095)
                    raise ParseError(f"netlink error message with bad error code {error}")
                raise OSError(-error, os.strerror(-error))
        yield msg_type, body
        offset += (length + 3) & ~3
    if offset < len(buf) and buf[offset:].strip(b"\0"):
        raise ParseError(f"{len(buf) - offset} trailing bytes after the last netlink message")


def attributes(buf: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (type, payload) of the netlink attributes starting at offset."""
    while offset + 4 <= len(buf):
        length, attr_type = struct.unpack_from("=HH", buf, offset)
        if length < 4 or offset + length > len(buf):
            raise ParseError(f"netlink attribute of length {length} is truncated")
        yield attr_type & 0x3FFF, buf[offset + 4: offset + length]
        offset += (length + 3) & ~3


RTM_NEWLINK = 16
IFLA_IFNAME = 3
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


def links(reply: bytes) -> Iterator[tuple[int, dict[int, bytes]]]:
    """Walk an RTM_GETLINK dump: (ifindex, {attribute type: payload}) per link (the last
    payload when an attribute repeats). Shared by every source that reads the link dump."""
    for msg_type, body in messages(reply):
        if msg_type != RTM_NEWLINK:
            continue
        if len(body) < IFINFOMSG.size:
            raise ParseError("RTM_NEWLINK message shorter than ifinfomsg")
        yield IFINFOMSG.unpack_from(body)[2], dict(attributes(body, IFINFOMSG.size))


def ifname(attrs: dict[int, bytes]) -> str | None:
    """IFLA_IFNAME of a link's attributes, None if absent."""
    payload = attrs.get(IFLA_IFNAME)
    return None if payload is None else payload.split(b"\0", 1)[0].decode("utf-8", "replace")
