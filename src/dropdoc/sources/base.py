"""What every source shares: where to read from, the registry, and error isolation.

A source is a pure `parse(text)` plus a thin `read(ctx)`. Sources register here under a
stable name; `read_source` runs one and turns any failure into a status, so one broken
file never aborts a snapshot: it becomes a gap in the report's coverage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import NeedsPrivilege, ParseError, SourceUnavailable, read_text

OK = "ok"
UNAVAILABLE = "unavailable"
NEEDS_PRIVILEGE = "needs-privilege"
FAILED = "failed"


@dataclass(frozen=True)
class ReadContext:
    """Where a snapshot reads from.

    root: "/" for the running system, or a directory holding a copied proc/ and sys/
    tree (captures from other hosts, tests). live: netlink and /proc/<pid> may be used.
    sysfs_is_local: /sys shows this network namespace's devices (false inside a
    named netns, because sysfs keeps the namespace of whoever mounted it).
    """

    root: str = "/"
    netns: str | None = None
    live: bool = True
    sysfs_is_local: bool = True

    def proc(self, *parts: str) -> str:
        return os.path.join(self.root, "proc", *parts)

    def sys(self, *parts: str) -> str:
        return os.path.join(self.root, "sys", *parts)

    def read(self, *parts: str) -> str:
        """Read root/<parts> as text (parts start with 'proc' or 'sys')."""
        return read_text(os.path.join(self.root, *parts))


@dataclass
class SourceResult:
    status: str
    data: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class Source:
    name: str
    read: Callable[[ReadContext], Any]
    # Flat counters ("TcpExt.ListenOverflows" -> value) for delta computation.
    counters: Callable[[Any], dict[str, int | None]] | None = None
    # Counters that wrap at 2**32 (printed by the kernel as u32).
    counter_bits: int = 64
    # Read only in the final snapshot of a window (expensive, not a counter).
    final_only: bool = False
    description: str = ""


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    if source.name in SOURCES:
        raise ValueError(f"source {source.name} registered twice")
    SOURCES[source.name] = source
    return source


def read_source(source: Source, ctx: ReadContext) -> SourceResult:
    try:
        return SourceResult(OK, source.read(ctx))
    except NeedsPrivilege as exc:
        return SourceResult(NEEDS_PRIVILEGE, error=str(exc))
    except SourceUnavailable as exc:
        return SourceResult(UNAVAILABLE, error=str(exc))
    except ParseError as exc:
        return SourceResult(FAILED, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in one source must not abort the rest
        return SourceResult(FAILED, error=f"{type(exc).__name__}: {exc}")


def parse_int(token: str, what: str, base: int = 10) -> int:
    try:
        return int(token, base)
    except ValueError:
        raise ParseError(f"{what}: {token[:40]!r} is not a number") from None
