"""/proc/net/{tcp,tcp6,udp,udp6}: one socket per line, columns named by the header.

   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0

Two header names cover one data field each ("tx_queue rx_queue" -> "tx:rx", "tr tm->when"
-> "tr:when"); we join them and then map every column by name. The UDP files carry the
per-socket drop counter ("drops") that udp.rcvbuf_full names the socket by.

The udp_sockets source reads the same sockets through sock_diag (inet_diag dump of
IPPROTO_UDP with the SK_MEMINFO extension: rqueue, wqueue, uid, inode and sk_drops, which
is what the drops column prints) and falls back to the files when that is not available
(copied --root trees, old bundles, kernels without udp_diag or without SK_MEMINFO_DROPS,
added in 4.7). The reason is cost: the kernel restarts its walk of the UDP hash table from
the first bucket for every page of /proc/net/udp it prints, so reading the file is
quadratic in the number of sockets - 15 s for 100k sockets on this machine, against
0.2 s for the netlink dump (benchmarks/many_sockets.py).
"""

from __future__ import annotations

import gc
import ipaddress
import operator
import os
import socket
import struct
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from typing import Iterator

from .. import netlink
from ..errors import NeedsPrivilege, ParseError, SourceUnavailable
from .base import ReadContext, Source, register

_JOINED = {("tx_queue", "rx_queue"): "tx_queue:rx_queue", ("tr", "tm->when"): "tr:tm->when"}

TCP_LISTEN = 0x0A
TCP_CLOSE = 0x07


@dataclass(frozen=True)
class ProcSocket:
    family: int  # 4 or 6
    local: str
    port: int
    remote: str
    remote_port: int
    state: int
    tx_queue: int
    rx_queue: int
    uid: int
    inode: int
    drops: int | None  # UDP files only

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.local, self.port)


_FIELDS = ("family", "local", "port", "remote", "remote_port", "state", "tx_queue", "rx_queue", "uid",
           "inode", "drops")


def _new_socket(family: int, local: str, port: int, remote: str, remote_port: int, state: int,
                tx_queue: int, rx_queue: int, uid: int, inode: int, drops: int | None) -> ProcSocket:
    """ProcSocket(...) without the frozen dataclass __init__ (one object.__setattr__ per
    field): the same object - equal, same hash and repr - built ~40% faster, which counts
    at 100k sockets. Falls back to the constructor if the fields ever change."""
    obj = _object_new(ProcSocket)
    _object_setattr(obj, "__dict__", {
        "family": family, "local": local, "port": port, "remote": remote, "remote_port": remote_port,
        "state": state, "tx_queue": tx_queue, "rx_queue": rx_queue, "uid": uid, "inode": inode,
        "drops": drops})
    return obj


_object_new, _object_setattr = object.__new__, object.__setattr__
if tuple(f.name for f in dataclasses.fields(ProcSocket)) != _FIELDS:  # pragma: no cover
    _new_socket = ProcSocket  # noqa: F811


def format_endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _header_names(header: str) -> list[str]:
    tokens = header.split()
    names: list[str] = []
    i = 0
    while i < len(tokens):
        pair = tuple(tokens[i:i + 2])
        if pair in _JOINED:
            names.append(_JOINED[pair])
            i += 2
        else:
            names.append(tokens[i])
            i += 1
    return names


def parse_address(text: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 words are in host (little-endian) order."""
    return _split_address(text)


def _bad_address(text: str) -> None:
    raise ParseError(f"bad socket address {text[:50]!r}")


def _decode_address(addr_hex: str, text: str) -> str:
    if len(addr_hex) not in (8, 32):
        _bad_address(text)
    try:
        raw = bytes.fromhex(addr_hex)
    except ValueError:
        raise ParseError(f"bad socket address {text[:50]!r}") from None
    if len(raw) * 2 != len(addr_hex):  # fromhex() skips whitespace
        _bad_address(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


# Most sockets of a table share a handful of addresses: decode each text once.
_HEX_CACHE: dict[str, str] = {}
_CACHE_MAX = 4096


def _address_from_hex(addr_hex: str, text: str) -> str:
    address = _HEX_CACHE.get(addr_hex)
    if address is None:
        address = _decode_address(addr_hex, text)
        if len(_HEX_CACHE) >= _CACHE_MAX:
            _HEX_CACHE.clear()
        _HEX_CACHE[addr_hex] = address
    return address


def _split_address(text: str) -> tuple[str, int]:
    """parse_address() for the per-line loop: the port is parsed without a helper call."""
    addr_hex, sep, port_hex = text.partition(":")
    if not sep:
        _bad_address(text)
    address = _address_from_hex(addr_hex, text)
    try:
        return address, int(port_hex, 16)
    except ValueError:
        raise ParseError(f"port: {port_hex[:40]!r} is not a number") from None


def _hex(token: str, what: str) -> int:
    try:
        return int(token, 16)
    except ValueError:
        raise ParseError(f"{what}: {token[:40]!r} is not a number") from None


def _dec(token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ParseError(f"{what}: {token[:40]!r} is not a number") from None


def parse(text: str, family: int) -> list[ProcSocket]:
    with _gc_paused():
        return _parse_table(text, family)


def _parse_table(text: str, family: int) -> list[ProcSocket]:
    lines = text.splitlines()
    if not lines:
        raise ParseError("empty socket table (no header)")
    names = _header_names(lines[0])
    if "local_address" not in names or "inode" not in names:
        raise ParseError(f"unexpected socket table header {lines[0].strip()[:60]!r}")
    # Column positions, looked up by name once per table (the last one wins for a
    # repeated name, as a dict built from the header would).
    column = {name: i for i, name in enumerate(names)}
    i_local, i_inode = column["local_address"], column["inode"]
    # IPv4 tables name the column rem_address, IPv6 tables remote_address.
    i_rem, i_remote = column.get("rem_address"), column.get("remote_address")
    i_st, i_queues, i_uid, i_drops = (column.get(n) for n in ("st", "tx_queue:rx_queue", "uid", "drops"))
    needed = max(i_local, i_inode) + 1
    sockets = []
    append = sockets.append
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        count = len(fields)
        if count < needed:
            raise ParseError(f"short socket line {line.strip()[:60]!r}")
        local, port = _split_address(fields[i_local])
        if i_rem is not None and i_rem < count:
            remote, remote_port = _split_address(fields[i_rem])
        elif i_remote is not None and i_remote < count:
            remote, remote_port = _split_address(fields[i_remote])
        else:
            remote, remote_port = "0.0.0.0", 0
        state = _hex(fields[i_st], "st") if i_st is not None and i_st < count else 0
        if i_queues is not None and i_queues < count:
            tx_hex, _, rx_hex = fields[i_queues].partition(":")
            tx_queue, rx_queue = _hex(tx_hex, "tx_queue"), _hex(rx_hex, "rx_queue")
        else:
            tx_queue = rx_queue = 0
        append(_new_socket(
            family, local, port, remote, remote_port, state, tx_queue, rx_queue,
            _dec(fields[i_uid], "uid") if i_uid is not None and i_uid < count else 0,
            _dec(fields[i_inode], "inode"),
            _dec(fields[i_drops], "drops") if i_drops is not None and i_drops < count else None,
        ))
    return sockets


# --- UDP sockets through sock_diag ------------------------------------------------------------

SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_SKMEMINFO = 7
SK_MEMINFO_DROPS = 8  # index in the u32 array (kernel >= 4.7)
UDP_STATES = 0xFFF
_DIAG_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2 (family, protocol, ext, states, id)
_DIAG_MSG = struct.Struct("=BBxx2H16s16s16xIIII")  # inet_diag_msg: 72 bytes (if, cookie, expires skipped)
_NLMSG = struct.Struct("=IH")  # nlmsghdr length and type
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")


def udp_diag_request(family: int) -> bytes:
    # Byte for byte the request sources/socket_memory.py sends for UDP: one netlink answer
    # can serve both within a snapshot.
    return _DIAG_REQ.pack(family, socket.IPPROTO_UDP, 1 << (INET_DIAG_SKMEMINFO - 1), UDP_STATES)


_RAW_CACHE: dict[bytes, str] = {}


def _raw_address(raw: bytes) -> str:
    """4 or 16 address bytes in network order -> text, IPv4-mapped IPv6 as IPv4 (cached)."""
    address = _RAW_CACHE.get(raw)
    if address is None:
        if len(raw) == 4:
            address = socket.inet_ntoa(raw)
        else:
            ip6 = ipaddress.IPv6Address(raw)
            address = str(ip6.ipv4_mapped or ip6)
        if len(_RAW_CACHE) >= _CACHE_MAX:
            _RAW_CACHE.clear()
        _RAW_CACHE[raw] = address
    return address


def parse_udp_diag(reply: bytes) -> list[ProcSocket]:
    """A SOCK_DIAG_BY_FAMILY dump of UDP sockets (with INET_DIAG_SKMEMINFO) as the
    ProcSockets /proc/net/udp{,6} would give: rx_queue/tx_queue are idiag_rqueue/wqueue
    (the same udp_rqueue_get()/sk_wmem_alloc_get() the file prints) and drops is
    SK_MEMINFO_DROPS (sk_drops, the file's drops column), None when the kernel omits it.

    A kernel sends every UDP socket with the same attributes, so the messages of a dump
    are records of one length: they are unpacked with one struct (iter_unpack), each
    record checked against the first one's layout. Anything else - other lengths, other
    attributes, errors, damage - goes through the general parser, which checks every
    message and attribute. Both give the same result for the same reply."""
    with _gc_paused():
        fast = _parse_udp_diag_records(reply)
        return fast if fast is not None else _parse_udp_diag_general(reply)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building 100k objects triggers many useless collections: pause the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _layout(reply: bytes, length: int) -> tuple[struct.Struct, tuple[int, ...], int] | None:
    """(record struct, indices of the attribute headers, index of drops or -1) for
    messages shaped like the first one; None if the first message is not a clean one."""
    msg_size = _DIAG_MSG.size
    if length < 16 + msg_size or length % 4 or length > len(reply):
        return None
    fmt = ["=IH10x", "BBxxHH16s16s16xIIII"]
    index = 12  # fields before the attributes
    headers: list[int] = []
    drops_at = -1
    attr, end = 16 + msg_size, length
    while attr < end:
        if attr + 4 > end:
            return None
        attr_len, attr_type = _RTA.unpack_from(reply, attr)
        padded = (attr_len + 3) & ~3
        if attr_len < 4 or attr + padded > end:
            return None
        fmt.append("HH")
        headers += [index, index + 1]
        index += 2
        payload = padded - 4
        if attr_type & 0x3FFF == INET_DIAG_SKMEMINFO and attr_len - 4 >= (SK_MEMINFO_DROPS + 1) * 4:
            before = SK_MEMINFO_DROPS * 4
            fmt.append(f"{before}xI{payload - before - 4}x")
            drops_at = index
            index += 1
        elif payload:
            fmt.append(f"{payload}x")
        attr += padded
    return struct.Struct("".join(fmt)), tuple(headers), drops_at


def _parse_udp_diag_records(reply: bytes) -> list[ProcSocket] | None:
    total = len(reply)
    if total < 16:
        return None
    length, msg_type = _NLMSG.unpack_from(reply, 0)
    if msg_type != SOCK_DIAG_BY_FAMILY:
        return None
    layout = _layout(reply, length)
    if layout is None:
        return None
    record, header_index, drops_at = layout
    count = total // length
    # Past the records: nothing, or the NLMSG_DONE that ends a dump - else the general path.
    if total - count * length not in (0, 20) or (
            total - count * length == 20 and _NLMSG.unpack_from(reply, total - 20) != (20, netlink.NLMSG_DONE)):
        return None
    first = record.unpack_from(reply, 0)
    expected_headers = tuple(first[i] for i in header_index)
    headers_of = operator.itemgetter(*header_index) if header_index else None  # pairs: a tuple
    cache, address_of = _RAW_CACHE, _raw_address
    sockets: list[ProcSocket] = []
    append = sockets.append
    for fields in record.iter_unpack(memoryview(reply)[:count * length]):
        if fields[0] != length or fields[1] != SOCK_DIAG_BY_FAMILY:
            return None
        if headers_of is not None and headers_of(fields) != expected_headers:
            return None
        family, src, dst = fields[2], fields[6], fields[7]
        if family == 2:  # AF_INET
            src, dst, version = src[:4], dst[:4], 4
        elif family == 10:  # AF_INET6
            version = 6
        else:
            return None
        sport, dport = fields[4], fields[5]
        append(_new_socket(version, cache.get(src) or address_of(src), ((sport & 0xFF) << 8) | (sport >> 8),
                          cache.get(dst) or address_of(dst), ((dport & 0xFF) << 8) | (dport >> 8),
                          fields[3], fields[9], fields[8], fields[10], fields[11],
                          fields[drops_at] if drops_at >= 0 else None))
    return sockets


def _parse_udp_diag_general(reply: bytes) -> list[ProcSocket]:
    """A SOCK_DIAG_BY_FAMILY dump of UDP sockets (with INET_DIAG_SKMEMINFO) as the
    ProcSockets /proc/net/udp{,6} would give: rx_queue/tx_queue are idiag_rqueue/wqueue
    (the same udp_rqueue_get()/sk_wmem_alloc_get() the file prints) and drops is
    SK_MEMINFO_DROPS (sk_drops, the file's drops column), None when the kernel omits it.

    One pass over the buffer without copying message bodies (100k sockets: 16 MB); it
    checks what netlink.messages/attributes check and raises the same errors. The
    general path of parse_udp_diag."""
    sockets: list[ProcSocket] = []
    append = sockets.append
    unpack_header, unpack_msg = _NLMSG.unpack_from, _DIAG_MSG.unpack_from
    unpack_rta, unpack_u32 = _RTA.unpack_from, _U32.unpack_from
    cache, address_of = _RAW_CACHE, _raw_address
    drops_end = (SK_MEMINFO_DROPS + 1) * 4
    msg_size = _DIAG_MSG.size
    total = len(reply)
    offset = 0
    while offset + 16 <= total:
        length, msg_type = unpack_header(reply, offset)
        end = offset + length
        if length < 16 or end > total:
            raise ParseError(f"netlink message of length {length} at offset {offset} is truncated")
        body = offset + 16
        if msg_type == netlink.NLMSG_ERROR and length >= 20:
            (error,) = _I32.unpack_from(reply, body)
            if error:
                if not 0 < -error < 4096:
                    raise ParseError(f"netlink error message with bad error code {error}")
                raise OSError(-error, os.strerror(-error))
        if msg_type == SOCK_DIAG_BY_FAMILY:
            if length - 16 < msg_size:
                raise ParseError(f"inet_diag_msg of {length - 16} bytes, expected {msg_size}")
            family, state, sport, dport, src, dst, rqueue, wqueue, uid, inode = unpack_msg(reply, body)
            if family == 2:  # AF_INET
                src, dst, version = src[:4], dst[:4], 4
            elif family == 10:  # AF_INET6
                version = 6
            else:
                raise ParseError(f"unexpected address family {family} in inet_diag_msg")
            drops = None
            attr = body + msg_size
            while attr + 4 <= end:
                attr_len, attr_type = unpack_rta(reply, attr)
                if attr_len < 4 or attr + attr_len > end:
                    raise ParseError(f"netlink attribute of length {attr_len} is truncated")
                if attr_type & 0x3FFF == INET_DIAG_SKMEMINFO and attr_len - 4 >= drops_end:
                    drops = unpack_u32(reply, attr + 4 + SK_MEMINFO_DROPS * 4)[0]
                attr += (attr_len + 3) & ~3
            local = cache.get(src) or address_of(src)
            remote = cache.get(dst) or address_of(dst)
            # Ports are big-endian on the wire; the struct read them in host order.
            append(_new_socket(version, local, ((sport & 0xFF) << 8) | (sport >> 8), remote,
                              ((dport & 0xFF) << 8) | (dport >> 8), state, wqueue, rqueue, uid, inode, drops))
        offset += (length + 3) & ~3
    if offset < total and reply[offset:].strip(b"\0"):
        raise ParseError(f"{total - offset} trailing bytes after the last netlink message")
    return sockets


def _udp_from_diag(ctx: ReadContext) -> list[ProcSocket]:
    sockets = parse_udp_diag(ctx.netlink_dump(netlink.NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY,
                                              udp_diag_request(socket.AF_INET), "sock_diag UDP dump"))
    try:
        sockets += parse_udp_diag(ctx.netlink_dump(netlink.NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY,
                                                   udp_diag_request(socket.AF_INET6), "sock_diag UDP6 dump"))
    except (SourceUnavailable, NeedsPrivilege, ParseError, OSError):
        pass  # IPv6 disabled: IPv4 sockets still count (as with /proc/net/udp6 missing)
    if any(s.drops is None for s in sockets):
        raise SourceUnavailable("sock_diag gives no per-socket drops here (kernel < 4.7)")
    return sockets


def _reader(proto: str):
    def read(ctx: ReadContext) -> list[ProcSocket]:
        sockets = parse(ctx.read("proc", "net", proto), 4)
        try:
            sockets += parse(ctx.read("proc", "net", proto + "6"), 6)
        except Exception:  # noqa: BLE001 - IPv6 disabled: IPv4 sockets still count
            pass
        return sockets
    return read


_read_udp_files = _reader("udp")


def read_udp(ctx: ReadContext) -> list[ProcSocket]:
    """sock_diag on the live system (and in bundles that recorded it), else the files."""
    if ctx.live or ctx.replay is not None:
        try:
            return _udp_from_diag(ctx)
        except (SourceUnavailable, NeedsPrivilege, ParseError, OSError):
            pass  # no udp_diag, no SK_MEMINFO_DROPS, or a bundle of the files: read those
    return _read_udp_files(ctx)


def udp_counters(sockets: list[ProcSocket]) -> dict[str, int | None]:
    # Per-socket drop counters, keyed by inode so a reused port is not confused.
    return {f"udpsock.{s.inode}.drops": s.drops for s in sockets if s.drops is not None and s.inode}


register(Source("udp_sockets", read_udp, udp_counters,
                description="UDP sockets with per-socket drops (sock_diag, else /proc/net/udp{,6})"))
