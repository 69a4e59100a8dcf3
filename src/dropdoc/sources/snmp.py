"""/proc/net/snmp and /proc/net/netstat: header line + value line per protocol.

    Tcp: RtoAlgorithm RtoMin ... InErrs OutRsts InCsumErrors
    Tcp: 1 200 ... 0 12 0

Parsed by header name, never by position: counters come and go between kernels, and a
counter a kernel lacks is simply absent (None to callers), never 0.
"""

from __future__ import annotations

from ..errors import ParseError
from .base import Source, parse_int, register

Table = dict[str, dict[str, int]]


def parse(text: str) -> Table:
    """Parse snmp/netstat format into {"Tcp": {"ActiveOpens": 12, ...}, ...}."""
    tables: Table = {}
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) % 2:
        raise ParseError(f"odd number of lines ({len(lines)}): header without values (truncated?)")
    for header, values in zip(lines[0::2], lines[1::2]):
        hname, _, hrest = header.partition(":")
        vname, _, vrest = values.partition(":")
        if not hname or hname != vname or " " in hname.strip():
            raise ParseError(f"mismatched section {hname[:20]!r} / {vname[:20]!r}")
        names, numbers = hrest.split(), vrest.split()
        if len(names) != len(numbers):
            raise ParseError(f"{hname}: {len(names)} names but {len(numbers)} values")
        table = tables.setdefault(hname.strip(), {})
        for name, number in zip(names, numbers):
            table[name] = parse_int(number, f"{hname}.{name}")
    if not tables:
        raise ParseError("no counters found")
    return tables


def flatten(tables: Table) -> dict[str, int | None]:
    return {f"{section}.{name}": value for section, table in tables.items() for name, value in table.items()}


register(Source("snmp", lambda ctx: parse(ctx.read("proc", "net", "snmp")), flatten,
                description="/proc/net/snmp: Ip, Icmp, Tcp, Udp counters"))
register(Source("netstat", lambda ctx: parse(ctx.read("proc", "net", "netstat")), flatten,
                description="/proc/net/netstat: TcpExt, IpExt counters"))
