"""The kinds of change `dropdoc fix` can make: one small class each.

Every kind knows how to read_current(), validate() a new value (raising UnsafeChange with
the reason), apply() it and restore() an old one, and how to turn itself into a journal
record and back, so a rollback (even by another process, after the fixer was killed)
rebuilds exactly the change it undoes.

Sysctls are written in-process inside the namespace (setns); link settings go through
iproute2 and ethtool (`ip -n`, `tc -n`, `ip netns exec NS ethtool`): not a hot path, and
what an administrator would run, so the plan can show it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import DropdocError, ParseError, SourceUnavailable
from . import sysctl as sysctl_mod
from .sysctl import UnsafeChange

# When the kernel uses a new value (so verification knows when a change cannot show yet).
IMMEDIATE, ON_LISTEN, NEW_SOCKETS = "immediate", "listen", "new-sockets"

_EFFECT = {
    "net.core.somaxconn": ON_LISTEN,
    "net.core.rmem_default": NEW_SOCKETS,
    "net.core.wmem_default": NEW_SOCKETS,
    "net.core.rmem_max": NEW_SOCKETS,  # caps SO_RCVBUF requests made afterwards
    "net.core.wmem_max": NEW_SOCKETS,
}


class ChangeFailed(DropdocError):
    """The system refused a change (command failed, write rejected)."""


def _run(command: list[str], what: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        raise SourceUnavailable(f"{what}: {command[0]} is not installed (scripts/install.sh installs it)") from None
    except subprocess.TimeoutExpired:
        raise ChangeFailed(f"{what}: {command[0]} did not answer in 20 s") from None
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or "failed").splitlines()[-1]
        raise ChangeFailed(f"{what}: {message}")
    return result.stdout


def _ns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


@dataclass
class Change:
    """One setting to change. `value` is the new value."""

    netns: str | None
    value: Any
    kind: ClassVar[str] = ""
    validate_reads_system: ClassVar[bool] = False  # validate() asks the system (not possible offline)

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def effect(self) -> str:
        return IMMEDIATE

    def identity(self) -> tuple:
        return (self.kind, self.netns, self.target)

    def read_current(self) -> Any:
        raise NotImplementedError

    def validate(self, current: Any) -> None:
        raise NotImplementedError

    def apply(self) -> None:
        self._write(self.value)

    def restore(self, old: Any) -> None:
        self._write(old)

    def _write(self, value: Any) -> None:
        raise NotImplementedError

    def command(self, value: Any = None) -> str:
        """The shell command an administrator would run for this change."""
        raise NotImplementedError

    def scope(self) -> str:
        return f"network namespace {self.netns}" if self.netns else "host network namespace"

    def fields(self) -> dict[str, Any]:
        return {}

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "netns": self.netns, "target": self.target, **self.fields()}

    @staticmethod
    def from_record(record: dict[str, Any], value: Any = None) -> "Change":
        kind = KINDS.get(record.get("kind", ""))
        if kind is None:
            raise ParseError(f"journal: unknown change kind {record.get('kind')!r}")
        return kind.build(record, value)

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "Change":
        raise NotImplementedError

    @staticmethod
    def same(a: Any, b: Any) -> bool:
        return sysctl_mod.normalise(a) == sysctl_mod.normalise(b)


@dataclass
class SysctlChange(Change):
    key: str = ""
    # Writes (and restores) through this callable instead of /proc/sys: the lab hands in
    # LabNet.set_host_sysctl for global keys, so they are restored when the lab is torn down.
    writer: Callable[[str, Any], Any] | None = field(default=None, compare=False, repr=False)
    kind: ClassVar[str] = "sysctl"
    validate_reads_system: ClassVar[bool] = True

    @property
    def target(self) -> str:
        return self.key

    @property
    def effect(self) -> str:
        return _EFFECT.get(self.key, IMMEDIATE)

    def scope(self) -> str:
        if sysctl_mod.is_global(self.key):
            return "global: changes the whole host"
        return super().scope() if self.netns else "host network namespace (per-namespace key)"

    def read_current(self) -> Any:
        return sysctl_mod.read_sysctl(self.key, self.netns)

    def validate(self, current: Any) -> None:  # noqa: ARG002 - ranges do not depend on it
        sysctl_mod.validate(self.key, self.value, self.netns)
        if self.netns is not None:
            where = sysctl_mod.presence(self.key, self.netns)
            if where == "read-only":
                raise UnsafeChange(f"{self.key} is read-only in network namespace {self.netns}: this kernel "
                                   "lets only the host namespace set it, so the change would be host-wide; "
                                   "to make it, run `dropdoc fix` on the host namespace (without --netns)")
            if where == "absent":
                raise UnsafeChange(f"{self.key} does not exist in network namespace {self.netns} (global, "
                                   "or not on this kernel): not changed from a namespace")

    def _write(self, value: Any) -> None:
        if self.writer is not None:
            try:
                self.writer(self.key, value)
            except OSError as exc:
                raise ChangeFailed(f"writing {self.key}: {exc.strerror or exc}") from None
            return
        sysctl_mod.raw_write(self.key, value, self.netns)

    def command(self, value: Any = None) -> str:
        value = self.value if value is None else value
        formatted = sysctl_mod.format_value(value)
        text = f"sysctl -w {self.key}={formatted}" if " " not in formatted else f"sysctl -w {self.key}='{formatted}'"
        return " ".join(_ns_prefix(self.netns) + [text])

    def fields(self) -> dict[str, Any]:
        return {"key": self.key}

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "SysctlChange":
        return cls(record.get("netns"), value, key=record["key"])


# --- link settings ------------------------------------------------------------------------

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _check_ifname(name: str) -> None:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise UnsafeChange(f"{name!r} is not an interface name")


def _bounded_int(what: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UnsafeChange(f"{what}={value!r} outside the safe range {low}..{high}")


def parse_ip_link_json(text: str, interface: str) -> dict[str, Any]:
    try:
        links = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"ip -j link: not JSON ({exc.msg})") from None
    if not isinstance(links, list):
        raise ParseError("ip -j link: expected a list")
    for link in links:
        if isinstance(link, dict) and link.get("ifname") == interface:
            return link
    raise SourceUnavailable(f"no interface {interface}")


@dataclass
class TxQueueLenChange(Change):
    interface: str = ""
    kind: ClassVar[str] = "txqueuelen"
    HIGH: ClassVar[int] = 100_000  # beyond this a FIFO adds seconds of queueing delay

    @property
    def target(self) -> str:
        return f"{self.interface} txqueuelen"

    def _ip(self) -> list[str]:
        return ["ip", "-n", self.netns] if self.netns else ["ip"]

    def read_current(self) -> int:
        _check_ifname(self.interface)
        text = _run([*self._ip(), "-j", "link", "show", "dev", self.interface], f"reading {self.target}")
        value = parse_ip_link_json(text, self.interface).get("txqlen")
        if not isinstance(value, int):
            raise SourceUnavailable(f"{self.interface}: no txqueuelen reported")
        return value

    def validate(self, current: Any) -> None:  # noqa: ARG002
        _check_ifname(self.interface)
        _bounded_int(self.target, self.value, 1, self.HIGH)

    def _write(self, value: Any) -> None:
        _run([*self._ip(), "link", "set", "dev", self.interface, "txqueuelen", str(int(value))],
             f"setting {self.target}")

    def command(self, value: Any = None) -> str:
        value = self.value if value is None else value
        return " ".join([*self._ip(), "link", "set", "dev", self.interface, "txqueuelen", str(value)])

    def fields(self) -> dict[str, Any]:
        return {"interface": self.interface}

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "TxQueueLenChange":
        return cls(record.get("netns"), value, interface=record["interface"])


# Qdiscs whose `tc qdisc change ... limit N` changes only the limit (attribute-based
# options). netem/sfq/tbf are left out on purpose: `change` resets their other options.
QDISC_LIMITS = {"pfifo": 1 << 20, "pfifo_head_drop": 1 << 20, "bfifo": 1 << 30,
                "fq_codel": 1 << 20, "fq": 1 << 20, "codel": 1 << 20}


def parse_tc_qdisc_json(text: str) -> list[dict[str, Any]]:
    try:
        qdiscs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"tc -j qdisc: not JSON ({exc.msg})") from None
    if not isinstance(qdiscs, list) or not all(isinstance(q, dict) for q in qdiscs):
        raise ParseError("tc -j qdisc: expected a list of objects")
    return qdiscs


def find_qdisc(qdiscs: list[dict[str, Any]], handle: str) -> dict[str, Any]:
    for qdisc in qdiscs:
        if qdisc.get("handle") == handle:
            return qdisc
    raise SourceUnavailable(f"no qdisc with handle {handle}")


@dataclass
class QdiscLimitChange(Change):
    interface: str = ""
    handle: str = ""   # "1:" as tc prints it
    qdisc: str = ""    # kind: pfifo, fq_codel, ...
    where: str = field(default="", compare=False)  # "root" / "parent 1:1", known once read
    kind: ClassVar[str] = "qdisc_limit"

    @property
    def target(self) -> str:
        return f"{self.interface} qdisc {self.qdisc} {self.handle} limit"

    def _tc(self) -> list[str]:
        return ["tc", "-n", self.netns] if self.netns else ["tc"]

    def _show(self) -> dict[str, Any]:
        _check_ifname(self.interface)
        text = _run([*self._tc(), "-j", "qdisc", "show", "dev", self.interface], f"reading {self.target}")
        return find_qdisc(parse_tc_qdisc_json(text), self.handle)

    @staticmethod
    def _place(found: dict[str, Any]) -> list[str]:
        return ["root"] if found.get("root") else ["parent", str(found.get("parent"))]

    def read_current(self) -> int:
        found = self._show()
        if found.get("kind") != self.qdisc:
            raise SourceUnavailable(f"{self.interface} {self.handle} is now a {found.get('kind')} qdisc, "
                                    f"not {self.qdisc}")
        self.where = " ".join(self._place(found))
        limit = (found.get("options") or {}).get("limit")
        if not isinstance(limit, int):
            raise SourceUnavailable(f"{self.target}: tc reports no limit")
        return limit

    def validate(self, current: Any) -> None:  # noqa: ARG002
        _check_ifname(self.interface)
        if self.qdisc not in QDISC_LIMITS:
            raise UnsafeChange(f"{self.qdisc} qdisc: `tc qdisc change` would reset its other options; "
                               "change its limit by hand")
        if not re.match(r"^[0-9a-f]{1,4}:$", self.handle or ""):
            raise UnsafeChange(f"qdisc handle {self.handle!r} is not of the form N:")
        _bounded_int(self.target, self.value, 1, QDISC_LIMITS[self.qdisc])

    def _write(self, value: Any) -> None:
        place = self._place(self._show())
        _run([*self._tc(), "qdisc", "change", "dev", self.interface, "handle", self.handle, *place,
              self.qdisc, "limit", str(int(value))], f"changing {self.target}")

    def command(self, value: Any = None) -> str:
        value = self.value if value is None else value
        return " ".join([*self._tc(), "qdisc", "change", "dev", self.interface, "handle", self.handle,
                         self.where or "root|parent <as shown by tc qdisc show>", self.qdisc, "limit", str(value)])

    def fields(self) -> dict[str, Any]:
        return {"interface": self.interface, "handle": self.handle, "qdisc": self.qdisc}

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "QdiscLimitChange":
        return cls(record.get("netns"), value, interface=record["interface"], handle=record["handle"],
                   qdisc=record["qdisc"])


_RING_FIELDS = {"RX": "rx", "RX Mini": "rx-mini", "RX Jumbo": "rx-jumbo", "TX": "tx"}


def parse_ethtool_rings(text: str) -> dict[str, dict[str, int | None]]:
    """`ethtool -g DEV` -> {"max": {"rx": 4096, ...}, "current": {"rx": 256, ...}}; n/a -> None."""
    sections: dict[str, dict[str, int | None]] = {}
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Pre-set maximums"):
            section = sections.setdefault("max", {})
            continue
        if stripped.startswith("Current hardware settings"):
            section = sections.setdefault("current", {})
            continue
        if section is None or ":" not in stripped:
            continue
        name, _, value = stripped.partition(":")
        field = _RING_FIELDS.get(name.strip())
        if field is None:
            continue
        value = value.strip()
        if value == "n/a":
            section[field] = None
        elif value.isascii() and value.isdigit():
            section[field] = int(value)
        else:
            raise ParseError(f"ethtool -g: {name.strip()} = {value[:20]!r} is not a number")
    if "max" not in sections or "current" not in sections:
        raise ParseError("ethtool -g: no 'Pre-set maximums' / 'Current hardware settings' sections")
    for name, section in sections.items():
        if "rx" not in section or "tx" not in section:
            raise ParseError(f"ethtool -g: RX/TX missing from the {name} section (truncated?)")
    return sections


@dataclass
class RingChange(Change):
    interface: str = ""
    ring: str = "rx"  # rx or tx
    kind: ClassVar[str] = "ring"
    validate_reads_system: ClassVar[bool] = True

    @property
    def target(self) -> str:
        return f"{self.interface} {self.ring} ring"

    def _ethtool(self, *args: str) -> str:
        _check_ifname(self.interface)
        return _run([*_ns_prefix(self.netns), "ethtool", *args], f"ethtool on {self.interface}")

    def rings(self) -> dict[str, dict[str, int | None]]:
        try:
            return parse_ethtool_rings(self._ethtool("-g", self.interface))
        except ChangeFailed as exc:
            raise SourceUnavailable(f"{self.interface}: ring sizes not readable ({exc})") from None

    def read_current(self) -> int:
        value = self.rings()["current"].get(self.ring)
        if value is None:
            raise SourceUnavailable(f"{self.interface}: the driver reports no {self.ring} ring size")
        return value

    def validate(self, current: Any) -> None:  # noqa: ARG002
        if self.ring not in ("rx", "tx"):
            raise UnsafeChange(f"ring {self.ring!r}: only rx and tx are changed")
        maximum = self.rings()["max"].get(self.ring)
        if maximum is None:
            raise UnsafeChange(f"{self.interface}: the driver reports no {self.ring} ring maximum")
        _bounded_int(self.target, self.value, 1, maximum)

    def _write(self, value: Any) -> None:
        self._ethtool("-G", self.interface, self.ring, str(int(value)))

    def command(self, value: Any = None) -> str:
        value = self.value if value is None else value
        return " ".join([*_ns_prefix(self.netns), "ethtool", "-G", self.interface, self.ring, str(value)])

    def fields(self) -> dict[str, Any]:
        return {"interface": self.interface, "ring": self.ring}

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "RingChange":
        return cls(record.get("netns"), value, interface=record["interface"], ring=record.get("ring", "rx"))


KINDS: dict[str, type[Change]] = {k.kind: k for k in (SysctlChange, TxQueueLenChange, QdiscLimitChange, RingChange)}
