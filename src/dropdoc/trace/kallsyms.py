"""Drop locations: kernel text addresses -> `symbol+0xoffset` via /proc/kallsyms.

The tracepoint's `location` is the return address inside the function that freed the
packet (e.g. `udp_queue_rcv_one_skb+0x2c1`). Root sees real addresses; without privilege
(or with kernel.kptr_restrict=2) every address reads as zero and locations stay hex.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from ..errors import ParseError, read_text

TEXT_TYPES = frozenset("tTwW")


@dataclass
class Symbols:
    addresses: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return bool(self.addresses)

    def resolve(self, address: int) -> str:
        """`name+0xoff` of the nearest text symbol at or below address ([module] too)."""
        if not address:
            return "?"
        index = bisect.bisect_right(self.addresses, address) - 1
        if index < 0:
            return f"{address:#x}"
        offset = address - self.addresses[index]
        if offset > 1 << 20:  # far beyond any function: not really inside it
            return f"{address:#x}"
        name, _, module = self.names[index].partition(" ")
        return f"{name}+{offset:#x}" + (f" {module}" if module else "")


_LINE = re.compile(r"^[0-9a-fA-F]{1,16} \S \S+(?:\t\[\S+\])?[ \t]*$", re.MULTILINE)
_TEXT = re.compile(r"^([0-9a-fA-F]{1,16}) [tTwW] (\S+)(?:\t(\[\S+\]))?[ \t]*$", re.MULTILINE)


def parse(text: str) -> Symbols:
    """Text symbols of a kallsyms dump, sorted by address; all-zero addresses (no
    privilege) give an empty table. ParseError on lines that are not kallsyms lines."""
    lines = sum(1 for line in text.splitlines() if line.strip())
    if lines == 0:
        raise ParseError("kallsyms: empty")
    valid = len(_LINE.findall(text))
    if valid != lines:
        bad = next((line for line in text.splitlines() if line.strip() and not _LINE.match(line)), "")
        raise ParseError(f"kallsyms: unexpected line {bad[:80]!r}")
    pairs: list[tuple[int, str]] = []
    for address, name, module in _TEXT.findall(text):
        value = int(address, 16)
        if value:
            pairs.append((value, f"{name} {module}" if module else name))
    pairs.sort()
    return Symbols([a for a, _ in pairs], [n for _, n in pairs])


_cache: Symbols | None = None


def load(path: str = "/proc/kallsyms", refresh: bool = False) -> Symbols:
    """The running kernel's symbols (cached: a full parse takes ~0.1 s)."""
    global _cache
    if _cache is None or refresh or path != "/proc/kallsyms":
        symbols = parse(read_text(path))
        if path != "/proc/kallsyms":
            return symbols
        _cache = symbols
    return _cache
