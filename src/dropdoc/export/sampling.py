"""One scrape of one network namespace, as plain data with bounded label sets.

A NamespaceSampler owns the namespace's Meter: every collection takes one counters
snapshot (the Meter's cheap sources plus the listening sockets), feeds it to the Meter
and keeps the drop totals whose counters can be read *now* - a finding whose counters are
missing is absent, never 0, and a total is never exported from a stale snapshot.

Labels stay bounded whatever the host looks like: findings come from the catalogue
(27 ids at most), sockets are the top TOP_SOCKETS endpoints only. Sockets sharing a
local endpoint (SO_REUSEPORT groups, or v4/v6 twins printed alike) are one series per
(endpoint, process): their queues, limits and drops are added up, which also keeps the
exposition free of duplicate label sets.

Nothing in here may raise to the caller: a source that fails is a `False` in `sources`
(its metrics absent), an unexpected exception in a step is a line in `errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import DropdocError, read_text
from ..meter import Meter, drops_by_finding
from ..snapshot import Snapshot, take_snapshot
from .owners import OwnerCache

TOP_SOCKETS = 20
LISTENERS_SOURCE = "tcp_listeners"
UDP_SOURCE = "udp_sockets"
OWNERS_SOURCE = "process_sockets"
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"


@dataclass(frozen=True)
class ListenerSeries:
    socket: str        # local endpoint, "0.0.0.0:8080" / "[::]:8080"
    process: str
    length: int        # accept queue now
    limit: int | None  # backlog in force; None when unknown


@dataclass(frozen=True)
class UdpSeries:
    socket: str
    process: str
    drops: int


@dataclass
class NetnsSample:
    netns: str                                   # label: "" for the host namespace
    sources: dict[str, str] = field(default_factory=dict)        # name -> status
    source_errors: dict[str, str] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)          # finding -> total (measurable now)
    listeners: list[ListenerSeries] = field(default_factory=list)
    udp: list[UdpSeries] = field(default_factory=list)
    conntrack_entries: int | None = None
    conntrack_max: int | None = None
    errors: list[str] = field(default_factory=list)              # unexpected failures of this scrape
    reachable: bool = True                                       # False: the namespace could not be read
    seconds: float = 0.0                                         # wall time of this sample
    cpu_seconds: float = 0.0                                     # CPU time of the sampling thread

    def source_up(self) -> dict[str, bool]:
        return {name: status == "ok" for name, status in self.sources.items()}


# --- ranking (pure) -------------------------------------------------------------------------

def _fill(length: int, limit: int | None) -> float:
    return length / max(limit or 0, 1)


def top_listeners(listeners: Iterable, owner_names: Callable[[Iterable[int]], dict[int, str]],
                  limit: int = TOP_SOCKETS) -> list[ListenerSeries]:
    """The `limit` fullest listening endpoints (accept queue / backlog, then queue length),
    one series per (endpoint, process). Owners are looked up for the chosen sockets only."""
    groups: dict[str, list] = {}
    for lst in listeners:
        groups.setdefault(lst.endpoint, []).append(lst)

    def rank(item: tuple[str, list]) -> tuple:
        endpoint, members = item
        length = sum(m.accept_queue for m in members)
        backlogs = [m.backlog for m in members]
        total = None if any(b is None for b in backlogs) else sum(backlogs)
        return (-_fill(length, total), -length, endpoint)

    chosen = sorted(groups.items(), key=rank)[:limit]
    names = owner_names([m.inode for _, members in chosen for m in members])
    series: list[ListenerSeries] = []
    for endpoint, members in chosen:
        by_process: dict[str, list] = {}
        for m in members:
            by_process.setdefault(names.get(m.inode, "unknown"), []).append(m)
        for process in sorted(by_process):
            part = by_process[process]
            backlogs = [m.backlog for m in part]
            series.append(ListenerSeries(endpoint, process, sum(m.accept_queue for m in part),
                                         None if any(b is None for b in backlogs) else sum(backlogs)))
    return series[:limit]


def top_udp(sockets: Iterable, owner_names: Callable[[Iterable[int]], dict[int, str]],
            limit: int = TOP_SOCKETS) -> list[UdpSeries]:
    """The `limit` UDP endpoints with the most drops (sockets that never dropped are left
    out: they carry no information and would churn with every short-lived client socket)."""
    groups: dict[str, list] = {}
    for sock in sockets:
        if sock.drops:
            groups.setdefault(sock.endpoint, []).append(sock)
    chosen = sorted(groups.items(), key=lambda kv: (-sum(s.drops for s in kv[1]), kv[0]))[:limit]
    names = owner_names([s.inode for _, members in chosen for s in members])
    series: list[UdpSeries] = []
    for endpoint, members in chosen:
        by_process: dict[str, int] = {}
        for s in members:
            process = names.get(s.inode, "unknown")
            by_process[process] = by_process.get(process, 0) + s.drops
        series += [UdpSeries(endpoint, p, by_process[p]) for p in sorted(by_process)]
    return series[:limit]


def read_conntrack_max(path: str = CONNTRACK_MAX) -> int | None:
    """nf_conntrack_max is global (one value for every namespace): read in our own."""
    try:
        return int(read_text(path).strip())
    except (DropdocError, ValueError):
        return None


# --- one namespace ----------------------------------------------------------------------------

class NamespaceSampler:
    """The Meter and the per-scrape extras of one namespace (None: the exporter's own)."""

    def __init__(self, netns: str | None, owners: OwnerCache,
                 snapshot: Callable[[], Snapshot] | None = None,
                 conntrack_max: Callable[[], int | None] = read_conntrack_max) -> None:
        self.netns = netns
        self.label = netns or ""
        self.meter = Meter(netns)
        self.owners = owners
        self.expected: Sequence[str] = (*self.meter.sources, LISTENERS_SOURCE)
        self._snapshot = snapshot or (lambda: take_snapshot(netns, final=False, names=self.expected))
        self._conntrack_max = conntrack_max

    def sample(self) -> NetnsSample:
        out = NetnsSample(self.label)
        try:
            snap = self._snapshot()
        except Exception as exc:  # noqa: BLE001 - e.g. the namespace was deleted: keep serving
            message = str(exc) if isinstance(exc, DropdocError) else f"{type(exc).__name__}: {exc}"
            out.sources = dict.fromkeys(self.expected, "failed")
            out.source_errors = dict.fromkeys(self.expected, message)
            out.errors.append(f"namespace {self.label or 'host'}: {message}")
            out.reachable = False
            return out
        out.sources = {name: result.status for name, result in snap.results.items()}
        out.source_errors = {name: result.error for name, result in snap.results.items() if result.error}
        self._step(out, "drops", lambda: self._drops(out, snap))
        self._step(out, "listeners", lambda: self._listeners(out, snap), source=LISTENERS_SOURCE)
        self._step(out, "udp sockets", lambda: self._udp(out, snap), source=UDP_SOURCE)
        self._step(out, "conntrack", lambda: self._conntrack(out, snap))
        if self.owners.status is not None:
            out.sources[OWNERS_SOURCE] = self.owners.status
            if self.owners.error:
                out.source_errors[OWNERS_SOURCE] = self.owners.error
        return out

    def _step(self, out: NetnsSample, what: str, step: Callable[[], None], source: str | None = None) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one broken step must not cost the whole scrape
            out.errors.append(f"namespace {self.label or 'host'}: {what}: {type(exc).__name__}: {exc}")
            if source is not None and source in out.sources:
                out.sources[source] = "failed"
                out.source_errors[source] = f"{what}: {type(exc).__name__}: {exc}"

    def _drops(self, out: NetnsSample, snap: Snapshot) -> None:
        self.meter.sample(snap)
        # Totals only for findings whose counters are readable in this very snapshot.
        measurable = drops_by_finding(snap.counters())
        out.drops = {finding: total for finding, total in self.meter.totals.items()
                     if measurable.get(finding) is not None}

    def _listeners(self, out: NetnsSample, snap: Snapshot) -> None:
        listeners = snap.data(LISTENERS_SOURCE)
        if listeners is not None:
            out.listeners = top_listeners(listeners, self.owners.names)

    def _udp(self, out: NetnsSample, snap: Snapshot) -> None:
        sockets = snap.data(UDP_SOURCE)
        if sockets is not None:
            out.udp = top_udp(sockets, self.owners.names)

    def _conntrack(self, out: NetnsSample, snap: Snapshot) -> None:
        stats = snap.data("conntrack")
        if stats is not None:
            out.conntrack_entries = stats.entries
            out.conntrack_max = self._conntrack_max()
