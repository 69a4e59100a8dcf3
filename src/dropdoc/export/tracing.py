"""One kfree_skb tracer for the exporter's lifetime (`dropdoc serve --trace`).

One BPF program keyed by (drop reason, netns inode) serves every namespace the exporter
watches: one program runs per dropped packet however many namespaces are served, and a
scrape reads the counts and splits them by inode. With a single named namespace the
kernel filters on it, so other namespaces never enter the map.

Choices, and why:
- bpf backend only. The tracefs fallback parses text events in Python for as long as the
  exporter lives (~0.58 of untraced throughput under load, and it loses events) and cannot
  tell namespaces apart; without bpf the exporter says dropdoc_trace_up 0 instead.
- No location or port in the key: reasons are a kernel enum, so the label set is bounded;
  a guard (MAX_REASONS) folds anything beyond into "other" should a kernel ever differ.
- The map holds ebpf.MAX_KEYS keys. Unfiltered, namespaces that come and go (containers)
  each leave keys behind; when the map is half full the tracer is re-attached with empty
  maps and the counts so far are carried over in Python, so the exported counters never
  go down and events are not lost to a full map.
- Lost events (map full) belong to no namespace: every served namespace reports the
  tracer's total as dropdoc_trace_lost_events_total.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import netns as netns_mod
from ..errors import DropdocError

log = logging.getLogger("dropdoc.serve")

MAX_REASONS = 256
OTHER = "other"
NO_REASON = "unknown"  # kernels < 5.17 have no drop reason


@dataclass
class TraceSample:
    up: bool
    drops: dict[str, dict[str, int]] = field(default_factory=dict)  # netns label -> reason -> count
    lost: int | None = None
    error: str | None = None


def _default_tracer(netns: str | None):
    from ..trace.tracer import Tracer

    return Tracer(netns=netns, by=("reason", "netns"), backend="bpf")


def _map_capacity() -> int:
    from ..trace.ebpf import MAX_KEYS

    return MAX_KEYS


class SharedTracer:
    def __init__(self, namespaces: list[str | None], make_tracer: Callable[[str | None], object] = _default_tracer,
                 inode_of: Callable[[str | None], int | None] | None = None,
                 capacity: int | None = None) -> None:
        self.namespaces = list(namespaces)
        named = [n for n in self.namespaces if n is not None]
        # In-kernel filter only when exactly one named namespace (and not the host) is served.
        self.kernel_filter = named[0] if len(self.namespaces) == 1 and named else None
        self._make = make_tracer
        self._inode_of = inode_of or _inode_of
        self.restart_at = (capacity or _map_capacity()) // 2
        self.tracer = None
        self.error: str | None = None
        self.restarts = 0
        self._carried: dict[tuple[str, str], int] = {}
        self._carried_lost = 0
        self._reasons: set[str] = set()

    @property
    def up(self) -> bool:
        return self.tracer is not None

    def attach(self) -> bool:
        """Attach and start counting; False (and `error`) when it cannot."""
        tracer = None
        try:
            tracer = self._make(self.kernel_filter)
            tracer.attach()
            if tracer.backend is None:
                reasons = "; ".join(f"{name}: {exc}" for name, exc in tracer.errors) or "no backend"
                raise DropdocError(reasons)
            tracer.start()
        except Exception as exc:  # noqa: BLE001 - no tracing is a gap in coverage, not a crash
            if tracer is not None:
                _quietly(tracer.detach)
            self.tracer = None
            self.error = str(exc) if isinstance(exc, DropdocError) else f"{type(exc).__name__}: {exc}"
            return False
        self.tracer, self.error = tracer, None
        return True

    def close(self) -> None:
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            tracer.detach()

    def _labels(self) -> dict[int, str]:
        labels = {}
        for name in self.namespaces:
            inode = self._inode_of(name)
            if inode:
                labels[inode] = name or ""
        return labels

    def _reason(self, reason: str | None) -> str:
        name = reason or NO_REASON
        if name not in self._reasons:
            if len(self._reasons) >= MAX_REASONS:
                return OTHER
            self._reasons.add(name)
        return name

    def read(self) -> TraceSample:
        if self.tracer is None:
            return TraceSample(False, error=self.error)
        try:
            result = self.tracer.snapshot()
        except Exception as exc:  # noqa: BLE001
            self.error = f"reading the tracer: {type(exc).__name__}: {exc}"
            return TraceSample(False, error=self.error)
        labels = self._labels()
        counts = dict(self._carried)
        for drop in result.drops:
            label = labels.get(drop.netns_inode or 0)
            if label is None:
                continue  # a namespace we do not serve (or none known)
            key = (label, self._reason(drop.reason))
            counts[key] = counts.get(key, 0) + drop.count
        lost = None if result.lost is None else self._carried_lost + result.lost
        if len(result.drops) >= self.restart_at:
            self._restart(counts, lost)
        sample = TraceSample(True, lost=lost)
        for name in self.namespaces:
            sample.drops[name or ""] = {}
        for (label, reason), count in counts.items():
            sample.drops.setdefault(label, {})[reason] = count
        return sample

    def _restart(self, counts: dict[tuple[str, str], int], lost: int | None) -> None:
        """Empty maps: re-attach, carrying what was counted so far."""
        self._carried, self._carried_lost = dict(counts), lost or 0
        self.restarts += 1
        old, self.tracer = self.tracer, None
        if old is not None:
            _quietly(old.detach)
        self.attach()


def _inode_of(name: str | None) -> int | None:
    try:
        return netns_mod.inode_of(name)  # None: this process's own namespace
    except DropdocError:  # a served namespace was deleted: its drops cannot be attributed
        return None


def _quietly(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - cleanup after a failure: the first error is the one to report
        log.debug("cleanup: %s: %s", type(exc).__name__, exc)
