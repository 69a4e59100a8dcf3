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
    hostname: str = field(default_factory=platform.node)
    # Raw answers behind the results (file texts, netlink replies) when recorded for a bundle.
    raw: dict[str, bytes] | None = field(default=None, repr=False)
    sysfs_is_local: bool = True

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
            "host": {"kernel": self.kernel, "hostname": self.hostname, "netns": self.netns},
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
                  names: Iterable[str] | None = None, record: bool = False) -> Snapshot:
    """Read every registered source (or `names`) inside `netns`.

    final=False skips the expensive non-counter sources (process scan) used only once
    per window. record=True keeps every raw answer in `snapshot.raw` (for bundles).
    Source failures become statuses; only an unknown netns or missing privilege to
    enter it raises.
    """
    wanted = [SOURCES[n] for n in (names or SOURCES)]
    if not final:
        wanted = [s for s in wanted if not s.final_only]
    live = root == "/"
    recorder: dict[str, bytes] | None = {} if record else None
    host_sysctls = None
    if live and netns is not None:
        from .sources import sysctls

        host_sysctls = sysctls.read_keys(ReadContext(), tuple(sorted(sysctls.GLOBAL_KEYS)))
    with netns_mod.entered(netns if live else None):
        local = not live or netns_mod.is_initial_netns()
        ctx = ReadContext(root=root, netns=netns, live=live, sysfs_is_local=local, recorder=recorder,
                          host_sysctls=host_sysctls)
        snap = Snapshot(time.monotonic(), time.time(), netns, kernel_release(root),
                        raw=recorder, sysfs_is_local=local)
        for source in wanted:
            snap.results[source.name] = read_source(source, ctx)
    return snap


def replay_snapshot(raw: dict[str, bytes], meta: dict[str, Any]) -> Snapshot:
    """Rebuild a snapshot from recorded raw answers, through the same parsers."""
    ctx = ReadContext(root="/nonexistent", netns=meta.get("netns"), live=False,
                      sysfs_is_local=bool(meta.get("sysfs_is_local", True)), replay=raw)
    snap = Snapshot(float(meta["monotonic"]), float(meta["wall"]), meta.get("netns"),
                    str(meta.get("kernel", "unknown")), hostname=str(meta.get("hostname", "unknown")),
                    raw=raw, sysfs_is_local=ctx.sysfs_is_local)
    for name in meta.get("sources", []):
        if name in SOURCES:
            snap.results[name] = read_source(SOURCES[name], ctx)
    return snap


def snapshot_meta(snap: Snapshot) -> dict[str, Any]:
    return {"monotonic": snap.monotonic, "wall": snap.wall, "netns": snap.netns, "kernel": snap.kernel,
            "hostname": snap.hostname, "sysfs_is_local": snap.sysfs_is_local,
            "sources": list(snap.results), "coverage": snap.coverage()}
