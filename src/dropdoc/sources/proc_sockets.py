"""/proc/net/{tcp,tcp6,udp,udp6}: one socket per line, columns named by the header.

   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0

Two header names cover one data field each ("tx_queue rx_queue" -> "tx:rx", "tr tm->when"
-> "tr:when"); we join them and then map every column by name. The UDP files carry the
per-socket drop counter ("drops") that udp.rcvbuf_full names the socket by.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import ParseError
from .base import ReadContext, Source, parse_int, register

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
    addr_hex, sep, port_hex = text.partition(":")
    if not sep or len(addr_hex) not in (8, 32):
        raise ParseError(f"bad socket address {text[:50]!r}")
    try:
        raw = bytes.fromhex(addr_hex)
    except ValueError:
        raise ParseError(f"bad socket address {text[:50]!r}") from None
    if len(raw) * 2 != len(addr_hex):  # fromhex() skips whitespace
        raise ParseError(f"bad socket address {text[:50]!r}")
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), parse_int(port_hex, "port", 16)


def parse(text: str, family: int) -> list[ProcSocket]:
    lines = text.splitlines()
    if not lines:
        raise ParseError("empty socket table (no header)")
    names = _header_names(lines[0])
    if "local_address" not in names or "inode" not in names:
        raise ParseError(f"unexpected socket table header {lines[0].strip()[:60]!r}")
    needed = max(names.index("local_address"), names.index("inode")) + 1
    sockets = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < needed:
            raise ParseError(f"short socket line {line.strip()[:60]!r}")
        row = dict(zip(names, fields))
        local, port = parse_address(row["local_address"])
        # IPv4 tables name the column rem_address, IPv6 tables remote_address.
        remote, remote_port = parse_address(row.get("rem_address") or row.get("remote_address") or "00000000:0000")
        tx_hex, _, rx_hex = row.get("tx_queue:rx_queue", "0:0").partition(":")
        sockets.append(ProcSocket(
            family=family, local=local, port=port, remote=remote, remote_port=remote_port,
            state=parse_int(row.get("st", "0"), "st", 16),
            tx_queue=parse_int(tx_hex, "tx_queue", 16), rx_queue=parse_int(rx_hex, "rx_queue", 16),
            uid=parse_int(row.get("uid", "0"), "uid"), inode=parse_int(row["inode"], "inode"),
            drops=parse_int(row["drops"], "drops") if "drops" in row else None,
        ))
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


def udp_counters(sockets: list[ProcSocket]) -> dict[str, int | None]:
    # Per-socket drop counters, keyed by inode so a reused port is not confused.
    return {f"udpsock.{s.inode}.drops": s.drops for s in sockets if s.drops is not None and s.inode}


register(Source("udp_sockets", _reader("udp"), udp_counters,
                description="/proc/net/udp{,6}: UDP sockets with per-socket drops"))
