"""A snapshot: every source read at one instant, in one network namespace."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import netns as netns_mod
from .sources import SOURCES, ReadContext, SourceResult, read_source


@dataclass
class Snapshot:
    monotonic: float
    wall: float
    netns: str | None
    kernel: str
    results: dict[str, SourceResult] = field(default_factory=dict)

    def data(self, name: str) -> Any:
        result = self.results.get(name)
        return result.data if result and result.ok else None

    def source_counters(self, name: str) -> dict[str, int | None]:
        """Flat counters of one source; empty if it failed or has none."""
        result = self.results.get(name)
        source = SOURCES[name]
        if result is None or not result.ok or source.counters is None:
            return {}
        return source.counters(result.data)

    def counters(self) -> dict[str, int | None]:
        flat: dict[str, int | None] = {}
        for name in self.results:
            flat.update(self.source_counters(name))
        return flat

    def coverage(self) -> dict[str, str]:
        return {name: result.status for name, result in self.results.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "dropdoc.snapshot/1",
            "host": {"kernel": self.kernel, "hostname": platform.node(), "netns": self.netns},
            "time": self.wall,
            "coverage": self.coverage(),
            "errors": {n: r.error for n, r in self.results.items() if r.error},
            "sources": {n: _jsonable(r.data) for n, r in self.results.items() if r.ok},
        }


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def kernel_release(root: str = "/") -> str:
    try:
        with open(os.path.join(root, "proc", "sys", "kernel", "osrelease"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def take_snapshot(netns: str | None = None, root: str = "/", final: bool = True,
                  names: Iterable[str] | None = None) -> Snapshot:
    """Read every registered source (or `names`) inside `netns`.

    final=False skips the expensive non-counter sources (process scan) used only once
    per window. Source failures become statuses; only an unknown netns or missing
    privilege to enter it raises.
    """
    wanted = [SOURCES[n] for n in (names or SOURCES)]
    if not final:
        wanted = [s for s in wanted if not s.final_only]
    live = root == "/"
    with netns_mod.entered(netns if live else None):
        ctx = ReadContext(root=root, netns=netns, live=live,
                          sysfs_is_local=not live or netns_mod.is_initial_netns())
        snap = Snapshot(time.monotonic(), time.time(), netns, kernel_release(root))
        for source in wanted:
            snap.results[source.name] = read_source(source, ctx)
    return snap
