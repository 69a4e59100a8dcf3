"""/proc/net/snmp6: one "Ip6InReceives   123" pair per line.

Names are split into the same "Section.Counter" form as /proc/net/snmp so rules can name
"Udp6.RcvbufErrors" next to "Udp.RcvbufErrors".
"""

from __future__ import annotations

from ..errors import ParseError
from .base import ReadContext, Source, parse_int, register

# Longest first: "UdpLite6" must win over "Udp6".
_PREFIXES = ("UdpLite6", "Icmp6", "Udp6", "Ip6")


def parse(text: str) -> dict[str, int]:
    counters: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ParseError(f"line {number}: expected 'name value', got {line[:60]!r}")
        name, value = fields
        prefix = next((p for p in _PREFIXES if name.startswith(p) and len(name) > len(p)), None)
        key = f"{prefix}.{name[len(prefix):]}" if prefix else name
        counters[key] = parse_int(value, name)
    if not counters:
        raise ParseError("no counters found")
    return counters


def _read(ctx: ReadContext) -> dict[str, int]:
    return parse(ctx.read("proc", "net", "snmp6"))


register(Source("snmp6", _read, lambda data: dict(data),
                description="/proc/net/snmp6: Ip6, Icmp6, Udp6 counters"))
