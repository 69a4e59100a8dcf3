"""What every source shares: where to read from, the registry, and error isolation.

A source is a pure `parse(text)` plus a thin `read(ctx)`. Sources register here under a
stable name; `read_source` runs one and turns any failure into a status, so one broken
file never aborts a snapshot: it becomes a gap in the report's coverage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import netlink
from ..errors import NeedsPrivilege, ParseError, SourceUnavailable, read_text, translated

_THREAD_SELF_NET = os.path.isdir("/proc/thread-self/net")

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

    All raw input goes through read / listdir / netlink_dump / record_json. With
    `recorder` set, every raw answer is also kept (bundles carry them); with `replay`
    set, answers come from such a recording instead of the system, so a bundle is
    diagnosed by exactly the same parsers on another machine.
    """

    root: str = "/"
    netns: str | None = None
    live: bool = True
    sysfs_is_local: bool = True
    recorder: dict[str, bytes] | None = None
    replay: dict[str, bytes] | None = None
    # Global (not per-netns) sysctls read in the host namespace before entering `netns`:
    # inside a child namespace /proc/sys does not show them at all.
    host_sysctls: dict[str, Any] | None = None
    # Netlink answers already received through this context (one snapshot): two sources
    # sending the identical dump request (udp_sockets, udp_socket_memory) cost one dump.
    answered: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def proc(self, *parts: str) -> str:
        return os.path.join(self.root, "proc", *parts)

    def sys(self, *parts: str) -> str:
        return os.path.join(self.root, "sys", *parts)

    def _replayed(self, key: str) -> bytes:
        assert self.replay is not None
        if key not in self.replay:
            raise SourceUnavailable(f"{key}: not in the bundle")
        return self.replay[key]

    def _keep(self, key: str, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder[key] = data

    def _path(self, parts: tuple[str, ...]) -> str:
        # /proc/net is a symlink to /proc/self/net: the namespace of the thread-group
        # leader, not of the calling thread. A thread other than the main one that entered
        # a namespace with setns() (the exporter's HTTP workers) would read the main
        # thread's counters. /proc/thread-self/net (Linux >= 3.17) follows the caller;
        # for the main thread both are the same file.
        if parts[:2] == ("proc", "net") and self.root == "/" and _THREAD_SELF_NET:
            return os.path.join("/proc/thread-self/net", *parts[2:])
        return os.path.join(self.root, *parts)

    def read(self, *parts: str) -> str:
        """Read root/<parts> as text (parts start with 'proc' or 'sys')."""
        key = "/".join(parts)
        if self.replay is not None:
            return self._replayed(key).decode("utf-8", errors="replace")
        text = read_text(self._path(parts))
        if self.recorder is not None:  # encode only when recording (every file of a snapshot)
            self._keep(key, text.encode("utf-8"))
        return text

    def listdir(self, *parts: str) -> list[str]:
        key = "listdir/" + "/".join(parts)
        if self.replay is not None:
            return [n for n in self._replayed(key).decode().split("\n") if n]
        path = os.path.join(self.root, *parts)
        with translated(path):
            names = sorted(os.listdir(path))
        self._keep(key, "\n".join(names).encode())
        return names

    def netlink_dump(self, protocol: int, msg_type: int, payload: bytes, what: str) -> bytes:
        key = f"netlink/{protocol}-{msg_type}-{payload.hex()}"
        if self.replay is not None:
            return self._replayed(key)
        if not self.live:
            raise SourceUnavailable(f"{what}: netlink needs the live system")
        if key in self.answered:
            return self.answered[key]
        reply = netlink.dump(protocol, msg_type, payload, what)
        self._keep(key, reply)
        self.answered[key] = reply
        return reply

    def record_json(self, key: str, produce: Callable[[], Any]) -> Any:
        """For results that are not one raw answer (a scan of /proc/*/fd): keep the JSON."""
        import json

        if self.replay is not None:
            try:
                return json.loads(self._replayed(f"json/{key}"))
            except ValueError as exc:  # damaged bundle entry
                raise ParseError(f"json/{key} in the bundle: {exc}") from None
        value = produce()
        if self.recorder is not None:  # serialise only for a bundle
            self._keep(f"json/{key}", json.dumps(value).encode())
        return value


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
