"""Drop-reason names, read from the running kernel - never a hard-coded table.

Two sources, same answer: BTF `enum skb_drop_reason` (no tracefs needed) and the
`__print_symbolic(REC->reason, {2, "NOT_SPECIFIED"}, ...)` list in the tracepoint's
format file. Numbers move between kernel versions (6.18 inserted reasons in the middle),
so a number is only meaningful together with the table of the kernel that produced it.
Reasons with bits set above 16 belong to a subsystem (`enum skb_drop_reason_subsys`:
mac80211, openvswitch...) whose own table is not part of the core enum: they are named
`SUBSYS:code`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ParseError

SUBSYS_SHIFT = 16
CORE_PREFIX = "SKB_DROP_REASON_"
SUBSYS_PREFIX = "SKB_DROP_REASON_SUBSYS_"

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                    r"(?:\s*signed:(?P<signed>\d+);)?")
_SYMBOLIC = re.compile(r"__print_symbolic\(\s*REC->reason\s*,")
_ENTRY = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    size: int
    signed: bool


@dataclass
class TracepointFormat:
    name: str
    event_id: int | None
    fields: dict[str, Field]
    reasons: dict[int, str] | None  # None: this kernel's event has no reason (< 5.17)
    print_fmt: str

    @property
    def has_rx_sk(self) -> bool:
        return "rx_sk" in self.fields


def parse_format(text: str) -> TracepointFormat:
    """Parse a tracefs `events/<sys>/<event>/format` file."""
    name, event_id, fields, print_fmt = None, None, {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("name:"):
            name = stripped[5:].strip()
        elif stripped.startswith("ID:"):
            try:
                event_id = int(stripped[3:].strip())
            except ValueError:
                raise ParseError(f"format: bad ID line {stripped[:60]!r}") from None
        elif stripped.startswith("field:"):
            match = _FIELD.match(line)
            if not match:
                raise ParseError(f"format: bad field line {stripped[:80]!r}")
            decl = match["decl"].strip()
            field_name = re.sub(r"\[.*\]$", "", decl.split()[-1]).lstrip("*") if decl.split() else ""
            if not field_name:
                raise ParseError(f"format: field without a name {stripped[:80]!r}")
            fields[field_name] = Field(field_name, decl, int(match["offset"]), int(match["size"]),
                                       match["signed"] == "1")
        elif stripped.startswith("print fmt:"):
            print_fmt = stripped[len("print fmt:"):].strip()
    if name is None or print_fmt is None or not fields:
        raise ParseError("format: missing name, fields or print fmt")
    reasons = None
    if "reason" in fields:
        reasons = parse_symbolic(print_fmt)
    return TracepointFormat(name, event_id, fields, reasons, print_fmt)


def parse_symbolic(print_fmt: str) -> dict[int, str]:
    """The {value, "NAME"} pairs of `__print_symbolic(REC->reason, ...)`."""
    match = _SYMBOLIC.search(print_fmt)
    if not match:
        raise ParseError("format: reason field but no __print_symbolic(REC->reason, ...) table")
    # The table runs to the parenthesis closing __print_symbolic.
    depth, end, quoted = 1, None, False
    for i in range(match.end(), len(print_fmt)):
        char = print_fmt[i]
        if char == '"':
            quoted = not quoted
        if quoted:
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end is None:
        raise ParseError("format: unterminated __print_symbolic table")
    table: dict[int, str] = {}
    for value, name in _ENTRY.findall(print_fmt[match.end():end]):
        table.setdefault(int(value, 16 if value.lstrip("-").lower().startswith("0x") else 10), name)
    if not table:
        raise ParseError("format: empty drop-reason table")
    return table


@dataclass
class ReasonNames:
    """Numbers -> names for one running kernel."""
    core: dict[int, str] = field(default_factory=dict)
    subsystems: dict[int, str] = field(default_factory=dict)
    source: str = "none"  # btf | format | none

    def name(self, reason: int | None) -> str:
        if reason is None:
            return "(no reason: kernel < 5.17)"
        if reason in self.core:
            return self.core[reason]
        subsys, code = reason >> SUBSYS_SHIFT, reason & ((1 << SUBSYS_SHIFT) - 1)
        if subsys:
            return f"{self.subsystems.get(subsys, f'SUBSYS_{subsys}')}:{code}"
        return f"UNKNOWN_{reason}"

    def number(self, name: str) -> int | None:
        for value, known in self.core.items():
            if known == name:
                return value
        return None


def from_btf_enums(core: dict[int, str], subsystems: dict[int, str] | None) -> ReasonNames:
    """Names as the tracepoint prints them: SKB_DROP_REASON_NO_SOCKET -> NO_SOCKET."""
    names = {}
    for value, raw in core.items():
        if raw.startswith(CORE_PREFIX):
            names[value] = raw[len(CORE_PREFIX):]
        elif raw.startswith("SKB_"):
            names[value] = raw[4:]
        else:
            names[value] = raw
    subs = {}
    for value, raw in (subsystems or {}).items():
        subs[value] = raw.removeprefix(SUBSYS_PREFIX)
    return ReasonNames(names, subs, "btf")


def from_format(fmt: TracepointFormat) -> ReasonNames:
    return ReasonNames(dict(fmt.reasons or {}), {}, "format")
