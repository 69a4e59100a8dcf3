"""The drop tracer: lifecycle, backend choice, results.

    tracer = Tracer(netns="srv", by=("reason", "location"))
    ok, why = tracer.can_run()
    with tracer:                 # attach() ... detach(), also on exceptions and Ctrl-C
        tracer.start()           # the window opens (counts before this are subtracted)
        ...
        result = tracer.stop()   # the window closes; TraceResult

Backends, tried in order when backend="auto": `bpf` (in-kernel aggregation, exact) then
`tracefs` (text events parsed in Python, slower, may lose events under load and cannot
see the netns or ports: reported in `warnings`), else `unavailable` with the reasons:
the caller shows it as a coverage gap rather than failing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import netns as netns_mod
from ..errors import DropdocError, NeedsPrivilege, SourceUnavailable
from . import kallsyms, program
from .ebpf import BpfBackend
from .tracefs import TracefsBackend

DEFAULT_BY = ("reason", "location")
FIELDS = program.FIELDS
BACKENDS = ("auto", "bpf", "tracefs")

ETHERTYPES = {"ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806, "vlan": 0x8100}
L4_PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "icmpv6": 58, "sctp": 132}
_ETHERTYPE_NAMES = {v: k for k, v in ETHERTYPES.items()}
_L4_NAMES = {v: k for k, v in L4_PROTOCOLS.items()}


def ethertype_name(value: int | None) -> str | None:
    if value is None:
        return None
    return _ETHERTYPE_NAMES.get(value, f"0x{value:04x}")


def l4_name(value: int | None) -> str | None:
    if not value:
        return None
    return _L4_NAMES.get(value, str(value))


def parse_by(text: str | Iterable[str]) -> tuple[str, ...]:
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [p for p in items if p not in FIELDS]
    if unknown or not items:
        raise ValueError(f"--by takes a comma list of {', '.join(FIELDS)} (got {','.join(items) or 'nothing'})")
    return tuple(dict.fromkeys(items))


def parse_proto(name: str | None) -> tuple[int | None, int | None]:
    """--proto NAME -> (ethertype, l4 protocol)."""
    if name is None:
        return None, None
    key = name.lower()
    if key in ETHERTYPES:
        return ETHERTYPES[key], None
    if key in L4_PROTOCOLS:
        return None, L4_PROTOCOLS[key]
    raise ValueError(f"unknown protocol {name!r}: one of {', '.join([*ETHERTYPES, *L4_PROTOCOLS])}")


def netns_names() -> dict[int, str]:
    """netns inode -> name: "host" for the initial namespace, "current" for ours (when it
    is not the initial one or that cannot be read), and `ip netns` names."""
    names: dict[int, str] = {}
    for path, name in (("/proc/1/ns/net", "host"), ("/proc/self/ns/net", "current")):
        try:
            names.setdefault(os.stat(path).st_ino, name)
        except OSError:
            pass
    for name in netns_mod.list_netns():
        try:
            names.setdefault(os.stat(os.path.join(netns_mod.NETNS_RUN_DIR, name)).st_ino, name)
        except OSError:
            continue
    return names


@dataclass
class Drop:
    reason: str | None
    location: str | None
    count: int
    proto: str | None = None
    l4: str | None = None
    port: int | None = None
    netns: str | None = None
    netns_inode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "location": self.location, "count": self.count}
        for name in ("proto", "l4", "port", "netns", "netns_inode"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class TraceResult:
    backend: str  # bpf | tracefs | unavailable
    drops: list[Drop] = field(default_factory=list)
    lost: int | None = None  # events the tracer itself missed (None: cannot tell)
    seconds: float = 0.0
    error: str | None = None
    status: str = "ok"  # ok | unavailable | needs-privilege | failed (coverage vocabulary)
    by: tuple[str, ...] = DEFAULT_BY
    filters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    variant: str = ""
    reason_names: str = "none"  # btf | format | none
    startup_ms: float | None = None
    interrupted: bool = False
    unapplied_filters: list[str] = field(default_factory=list)  # asked for, backend cannot

    @property
    def total(self) -> int:
        return sum(d.count for d in self.drops)

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for drop in self.drops:
            key = drop.reason or "(unknown)"
            out[key] = out.get(key, 0) + drop.count
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def count(self, reason: str | None = None, **match: Any) -> int:
        """Total of the drops with this reason (None: any) and the given field values."""
        total = 0
        for drop in self.drops:
            if reason is not None and drop.reason != reason:
                continue
            if all(getattr(drop, k) == v for k, v in match.items()):
                total += drop.count
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "dropdoc.trace/1",
            "backend": self.backend, "status": self.status, "error": self.error,
            "seconds": round(self.seconds, 3), "by": list(self.by), "filters": self.filters,
            "total": self.total, "lost": self.lost,
            "drops": [d.to_dict() for d in self.drops],
            "warnings": self.warnings, "tracepoint_args": self.variant,
            "reason_names": self.reason_names,
            "startup_ms": round(self.startup_ms, 1) if self.startup_ms is not None else None,
            "interrupted": self.interrupted, "unapplied_filters": self.unapplied_filters,
        }


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, NeedsPrivilege):
        return "needs-privilege"
    if isinstance(exc, SourceUnavailable):
        return "unavailable"
    return "failed"


class Tracer:
    """One tracing session: can_run -> attach -> start -> stop -> detach."""

    def __init__(self, netns: str | None = None, by: Iterable[str] = DEFAULT_BY,
                 proto: str | None = None, port: int | None = None, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        self.by = parse_by(by)
        self.netns = netns
        self.netns_inode = netns_mod.inode_of(netns) if netns else None  # UnknownNetns early
        if netns and self.netns_inode is None:
            raise SourceUnavailable(f"cannot read the inode of network namespace {netns}")
        self.proto = proto
        self.ethertype, self.l4 = parse_proto(proto)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        self.port = port
        self.requested = backend
        self.backend: BpfBackend | TracefsBackend | None = None
        self.errors: list[tuple[str, BaseException]] = []
        self.attached = False
        self._baseline: dict[tuple, int] = {}
        self._baseline_lost = 0
        self._started_at: float | None = None
        self._stopped: tuple[dict[tuple, int], int | None, float] | None = None
        self._names: dict[int, str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def filters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.netns:
            out["netns"] = self.netns
            out["netns_inode"] = self.netns_inode
        if self.proto:
            out["proto"] = self.proto
        if self.port is not None:
            out["port"] = self.port
        return out

    def spec(self) -> program.Spec:
        return program.Spec(by=frozenset(self.by), netns=self.netns_inode, ethertype=self.ethertype,
                            l4=self.l4, port=self.port)

    def can_run(self) -> tuple[bool, str]:
        """Cheap checks only (the real test is attach): root, and a kfree_skb tracepoint."""
        if os.geteuid() != 0:
            return False, "tracing kernel drops needs root (CAP_BPF+CAP_PERFMON or tracefs access)"
        if not (os.path.exists("/sys/kernel/btf/vmlinux") or os.path.isdir("/sys/kernel/tracing")):
            return False, "neither kernel BTF nor tracefs is available"
        return True, ""

    def _candidates(self) -> list[str]:
        return ["bpf", "tracefs"] if self.requested == "auto" else [self.requested]

    def attach(self) -> Tracer:
        if self.attached:
            return self
        for name in self._candidates():
            backend: BpfBackend | TracefsBackend
            if name == "bpf":
                backend = BpfBackend(self.spec())
            else:
                backend = TracefsBackend(ethertype=self.ethertype)
            try:
                backend.attach()
            except DropdocError as exc:
                self.errors.append((name, exc))
                continue
            except OSError as exc:
                self.errors.append((name, SourceUnavailable(f"{name}: {exc}")))
                continue
            self.backend = backend
            if name == "tracefs":
                self._tracefs_caveats(backend)
            if self.errors:
                first_name, first = self.errors[0]
                backend.warnings.insert(0, f"{first_name} backend unavailable: {first}")
            break
        self.attached = True
        return self

    def _tracefs_caveats(self, backend: TracefsBackend) -> None:
        missing = [f for f in ("netns", "port") if f in self.by]
        if "proto" in self.by:
            backend.warnings.append("tracefs backend: proto is the ethertype only (no l4 protocol)")
        if missing:
            backend.warnings.append(f"tracefs backend: the event has no {' or '.join(missing)}; "
                                    f"those fields stay empty")
        if self.netns:
            backend.warnings.append(f"tracefs backend cannot filter by network namespace: counts are "
                                    f"host-wide, not only {self.netns}")
        if self.l4 is not None or self.port is not None:
            backend.warnings.append("tracefs backend cannot filter by l4 protocol or port: ignored")

    def start(self) -> None:
        """Open the window: what was counted since attach is subtracted from the results."""
        if not self.attached:
            self.attach()
        if self.backend is not None:
            self._baseline, lost = self.backend.read()
            self._baseline_lost = lost or 0
        self._started_at = time.monotonic()
        self._stopped = None

    def _delta(self, counts: dict[tuple, int], lost: int | None) -> tuple[dict[tuple, int], int | None]:
        out = {}
        for key, value in counts.items():
            diff = value - self._baseline.get(key, 0)
            if diff > 0:
                out[key] = diff
        return out, (None if lost is None else max(lost - self._baseline_lost, 0))

    def snapshot(self) -> TraceResult:
        """The window so far (live display), without stopping."""
        if self._stopped is not None:
            counts, lost, seconds = self._stopped
            return self._result(counts, lost, seconds)
        if self.backend is None:
            return self._result({}, None, self._elapsed())
        counts, lost = self.backend.read()
        counts, lost = self._delta(counts, lost)
        return self._result(counts, lost, self._elapsed())

    def stop(self) -> TraceResult:
        """Close the window: stop counting, read the final numbers."""
        if self._started_at is None:
            self.start()
        if self._stopped is None:
            seconds = self._elapsed()
            if self.backend is not None:
                self.backend.stop()
                counts, lost = self.backend.read()
                counts, lost = self._delta(counts, lost)
            else:
                counts, lost = {}, None
            self._stopped = (counts, lost, seconds)
        counts, lost, seconds = self._stopped
        return self._result(counts, lost, seconds)

    def detach(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.attached = False

    def __enter__(self) -> Tracer:
        try:
            return self.attach()
        except BaseException:
            self.detach()
            raise

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- results -----------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started_at if self._started_at is not None else 0.0

    def _result(self, counts: dict[tuple, int], lost: int | None, seconds: float) -> TraceResult:
        backend = self.backend
        if backend is None:
            error = "; ".join(f"{name}: {exc}" for name, exc in self.errors) or "no backend"
            status = _status_of(self.errors[0][1]) if self.errors else "unavailable"
            return TraceResult("unavailable", [], None, seconds, error, status, self.by,
                               self.filters())
        drops = self._drops(backend, counts)
        unapplied = []
        if isinstance(backend, TracefsBackend):
            unapplied = [name for name, value in (("netns", self.netns), ("proto", self.l4), ("port", self.port))
                         if value is not None]
        return TraceResult(backend.name, drops, lost, seconds, None, "ok", self.by, self.filters(),
                           list(backend.warnings), backend.variant, backend.reasons.source,
                           backend.startup_ms, unapplied_filters=unapplied)

    def _drops(self, backend: BpfBackend | TracefsBackend, counts: dict[tuple, int]) -> list[Drop]:
        """Raw backend keys -> named drops, merged on the fields asked for."""
        symbols = None
        if isinstance(backend, BpfBackend) and "location" in self.by and counts:
            try:
                symbols = kallsyms.load()
            except DropdocError:
                symbols = None
        if "netns" in self.by and self._names is None:
            self._names = netns_names()
        merged: dict[tuple, int] = {}
        for (reason, location, ethertype, l4, port, inode), count in counts.items():
            fields: dict[str, Any] = {}
            if "reason" in self.by:
                fields["reason"] = reason if isinstance(reason, str) else backend.reasons.name(reason)
            if "location" in self.by:
                if isinstance(location, str):
                    fields["location"] = location
                else:
                    fields["location"] = symbols.resolve(location) if symbols and symbols.usable \
                        else f"{location:#x}"
            if "proto" in self.by:
                fields["proto"] = ethertype_name(ethertype)
                fields["l4"] = l4_name(l4)
            if "port" in self.by:
                fields["port"] = port if port else None
            if "netns" in self.by and inode is not None:
                fields["netns_inode"] = inode or None
                fields["netns"] = (self._names or {}).get(inode, f"netns:{inode}") if inode else None
            key = tuple(sorted(fields.items()))
            merged[key] = merged.get(key, 0) + count
        drops = []
        for key, count in merged.items():
            values = dict(key)
            drops.append(Drop(values.pop("reason", None), values.pop("location", None), count, **values))
        drops.sort(key=lambda d: (-d.count, d.reason or "", d.location or ""))
        return drops


def trace(netns: str | None = None, duration: float = 5.0, by: Iterable[str] = DEFAULT_BY,
          proto: str | None = None, port: int | None = None, backend: str = "auto",
          on_tick: Callable[[Tracer], None] | None = None,
          stop_event: threading.Event | None = None, tick: float = 1.0,
          on_attach: Callable[[Tracer], None] | None = None) -> TraceResult:
    """Trace for `duration` seconds (0: until stop_event is set or Ctrl-C); never leaves
    anything attached. on_attach(tracer) runs once counting has started, on_tick(tracer)
    about every `tick` seconds (live display)."""
    tracer = Tracer(netns, by, proto, port, backend)
    with tracer:
        tracer.start()
        interrupted = False
        try:
            if on_attach:
                on_attach(tracer)
            deadline = time.monotonic() + duration if duration > 0 else None
            while tracer.backend is not None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = tick if deadline is None else min(tick, deadline - now)
                if stop_event is not None:
                    if stop_event.wait(wait):
                        interrupted = True
                        break
                else:
                    time.sleep(wait)
                if on_tick:
                    on_tick(tracer)
        except KeyboardInterrupt:
            interrupted = True
        result = tracer.stop()
        result.interrupted = interrupted
        return result


# --- for a measurement window (dropdoc diagnose) -------------------------------------------

def start_window(netns: str | None = None, by: Iterable[str] = ("reason", "location")) -> Tracer:
    """Attach and open a window now; call `.stop()` then `.detach()` (or `finish_window`).
    Never raises for a missing backend or privilege: the result says `unavailable`."""
    tracer = Tracer(netns, by)
    try:
        tracer.attach()
        tracer.start()
    except BaseException:
        tracer.detach()
        raise
    return tracer


def finish_window(tracer: Tracer) -> TraceResult:
    """Close the window and release everything; per-reason counts via result.by_reason()."""
    try:
        return tracer.stop()
    finally:
        tracer.detach()
