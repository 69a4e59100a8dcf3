"""/proc/net/dev: per-interface counters, two header lines naming the columns.

 Inter-|   Receive                            |  Transmit
  face |bytes packets errs drop fifo frame ...|bytes packets errs drop fifo colls ...

Column names come from the second header line (Receive group, then Transmit group),
prefixed rx_/tx_. Note the kernel folds rx_missed_errors into "drop" here; the separate
counter is in link statistics (sources/link_stats.py).
"""

from __future__ import annotations

from ..errors import ParseError
from .base import Source, parse_int, register


def parse(text: str) -> dict[str, dict[str, int]]:
    lines = text.splitlines()
    if len(lines) < 2 or lines[1].count("|") != 2:
        raise ParseError("/proc/net/dev: missing the two header lines")
    _, rx_header, tx_header = lines[1].split("|")
    names = [f"rx_{n}" for n in rx_header.split()] + [f"tx_{n}" for n in tx_header.split()]
    interfaces: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        if not line.strip():
            continue
        ifname, sep, rest = line.partition(":")
        values = rest.split()
        if not sep or len(values) != len(names):
            raise ParseError(f"/proc/net/dev: malformed line {line.strip()[:60]!r}")
        interfaces[ifname.strip()] = {n: parse_int(v, f"{ifname.strip()}.{n}") for n, v in zip(names, values)}
    return interfaces


def counters(interfaces: dict[str, dict[str, int]]) -> dict[str, int | None]:
    return {f"dev.{ifname}.{name}": value for ifname, table in interfaces.items() for name, value in table.items()}


register(Source("netdev", lambda ctx: parse(ctx.read("proc", "net", "dev")), counters,
                description="/proc/net/dev: per-interface packets, errors, drops"))
