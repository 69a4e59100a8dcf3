"""/proc/net/sockstat and sockstat6: socket counts and protocol memory, plus the
protocol memory limits net.ipv4.tcp_mem / udp_mem.

    sockets: used 15
    TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1
    UDP: inuse 0 mem 205
    UDPLITE: inuse 0
    RAW: inuse 0
    FRAG: inuse 0 memory 0

One "SECTION: name value name value ..." line per protocol, parsed by name: UDP has no
`mem` before 2.6.25, UDPLITE appeared in 2.6.20, and a value the kernel does not print is
absent (None to callers), never 0. These are gauges, not counters: no deltas.

What is per network namespace (kernel 6.x `sockstat_seq_show`): `inuse` (per protocol),
`tw`, `sockets: used` and FRAG. Host-wide: TCP `orphan`, `alloc` and the `mem` of TCP and
UDP (`proto_memory_allocated`, in pages) - and so are their limits tcp_mem/udp_mem
(`low pressure high`, pages), which exist only in the initial namespace's /proc/sys.
Read from inside a namespace those two files are missing; because they are global the
host's value is the right one: take_snapshot reads it in the host namespace before
entering the netns (ReadContext.host_sysctls, recorded in bundles as json/host_sysctls,
like the sysctls source does). `limits_from` says where the values came from: "netns"
(this namespace's /proc/sys), "host" (host_sysctls), None: unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DropdocError, ParseError, SourceUnavailable
from . import sysctls
from .base import ReadContext, Source, parse_int, register

Table = dict[str, dict[str, int]]

LIMIT_KEYS = ("net.ipv4.tcp_mem", "net.ipv4.udp_mem")
# The rules on protocol memory need these (both global: host-wide).
sysctls.want(LIMIT_KEYS, global_keys=LIMIT_KEYS)


def parse(text: str) -> Table:
    """'TCP: inuse 5 orphan 0 ...' lines -> {"TCP": {"inuse": 5, "orphan": 0, ...}, ...}."""
    tables: Table = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        section, sep, rest = line.partition(":")
        section = section.strip()
        if not sep or not section or any(ch.isspace() for ch in section):
            raise ParseError(f"sockstat line {line_no}: expected 'SECTION: name value ...', got {line.strip()[:50]!r}")
        tokens = rest.split()
        if not tokens or len(tokens) % 2:
            raise ParseError(f"sockstat {section}: {len(tokens)} fields, expected name value pairs (truncated?)")
        if section in tables:
            raise ParseError(f"sockstat: section {section[:20]!r} twice")
        table: dict[str, int] = {}
        for name, value in zip(tokens[0::2], tokens[1::2]):
            if name in table or not (name[0].isalpha() or name[0] == "_"):
                raise ParseError(f"sockstat {section}: bad or repeated field name {name[:20]!r}")
            table[name] = parse_int(value, f"sockstat {section}.{name}")
        tables[section] = table
    if not tables:
        raise ParseError("sockstat is empty")
    return tables


def parse_limit(text: str, key: str) -> tuple[int, int, int]:
    """'287898\\t383867\\t575796' -> (low, pressure, high) in pages."""
    value = sysctls.parse_value(text)
    if not (isinstance(value, tuple) and len(value) == 3) or any(v < 0 for v in value):
        raise ParseError(f"{key}: expected three page counts 'low pressure high', got {text.strip()[:40]!r}")
    low, pressure, high = value
    return low, pressure, high


@dataclass(frozen=True)
class Sockstat:
    tables: Table                      # /proc/net/sockstat
    tables6: Table | None              # /proc/net/sockstat6 (None: IPv6 off / file absent)
    tcp_mem: tuple[int, int, int] | None = None   # pages: low, pressure, high (global)
    udp_mem: tuple[int, int, int] | None = None
    limits_from: str | None = None     # "netns" (read here), "host" (pid 1's netns), None
    page_size: int = 4096

    def get(self, section: str, name: str) -> int | None:
        value = (self.tables.get(section) or {}).get(name)
        if value is None and self.tables6 is not None:
            value = (self.tables6.get(section) or {}).get(name)
        return value

    @property
    def tcp_mem_pages(self) -> int | None:
        return self.get("TCP", "mem")

    @property
    def udp_mem_pages(self) -> int | None:
        return self.get("UDP", "mem")

    def limit(self, key: str) -> tuple[int, int, int] | None:
        return {"net.ipv4.tcp_mem": self.tcp_mem, "net.ipv4.udp_mem": self.udp_mem}.get(key)


def _host_limits(ctx: ReadContext) -> dict[str, object]:
    """The global sysctls take_snapshot read in the host namespace (live, in a netns), or
    their recording in a bundle; {} when there are none (read in the host namespace)."""
    if ctx.host_sysctls is None and ctx.replay is None:
        return {}
    try:
        # The very key and value the sysctls source records: whichever reads first writes it.
        host = ctx.record_json("host_sysctls", lambda: sysctls._jsonable(ctx.host_sysctls or {}))
    except DropdocError:
        return {}  # a bundle recorded in the host namespace: no host_sysctls in it
    return host if isinstance(host, dict) else {}


def _limit(ctx: ReadContext, key: str) -> tuple[tuple[int, int, int] | None, str | None]:
    try:
        return parse_limit(ctx.read(*sysctls.key_path(key)), key), "netns"
    except SourceUnavailable:
        pass  # inside a namespace: the global limit is only in the initial one
    except DropdocError:
        return None, None
    value = _host_limits(ctx).get(key)
    if not (isinstance(value, list) and all(type(v) is int for v in value)):
        return None, None  # unknown, or damaged in a bundle
    try:
        return parse_limit(" ".join(map(str, value)), key), "host"
    except ParseError:
        return None, None


def read(ctx: ReadContext) -> Sockstat:
    tables = parse(ctx.read("proc", "net", "sockstat"))
    try:
        tables6: Table | None = parse(ctx.read("proc", "net", "sockstat6"))
    except SourceUnavailable:
        tables6 = None  # IPv6 disabled
    limits: dict[str, tuple[int, int, int] | None] = {}
    where: set[str] = set()
    for key in LIMIT_KEYS:
        limits[key], origin = _limit(ctx, key)
        if origin:
            where.add(origin)
    try:
        page = ctx.record_json("sockstat/page_size", lambda: os.sysconf("SC_PAGE_SIZE"))
    except DropdocError:
        page = None  # a bundle from before this was recorded
    return Sockstat(tables, tables6, limits["net.ipv4.tcp_mem"], limits["net.ipv4.udp_mem"],
                    "host" if "host" in where else ("netns" if where else None),
                    page if isinstance(page, int) and page > 0 else 4096)


register(Source("sockstat", read,
                description="/proc/net/sockstat{,6}: sockets in use, TCP/UDP memory (pages) vs tcp_mem/udp_mem"))
