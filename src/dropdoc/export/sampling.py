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

Nothing in here may raise to the caller: a source that fails is a status other than "ok"
in `sources` (its metrics absent), an unexpected exception in a step is a line in `errors`.

Source health (the contract of dropdoc_source_up, see monitoring/README.md): a source is
*up* (ok) or *down* (failed, needs-privilege: it exists here and dropdoc cannot read it -
an incident or a deployment to fix); a source the host does not have (unavailable: no
conntrack module, no nftables) is neither - it is the host's coverage, exported apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import DropdocError, NeedsPrivilege, read_text
from ..meter import Meter
from ..snapshot import Snapshot, take_snapshot
from .owners import OwnerCache

TOP_SOCKETS = 20
LISTENERS_SOURCE = "tcp_listeners"
UDP_SOURCE = "udp_sockets"
OWNERS_SOURCE = "process_sockets"
UNAVAILABLE = "unavailable"
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
        """Sources this host has: True if read, False if failed or needing privilege."""
        return {name: status == "ok" for name, status in self.sources.items() if status != UNAVAILABLE}

    def unavailable(self) -> list[str]:
        """Sources this host does not have (kernel feature or module absent)."""
        return sorted(name for name, status in self.sources.items() if status == UNAVAILABLE)


# --- ranking (pure) -------------------------------------------------------------------------

def _fill(length: int, limit: int | None) -> float:
    return length / max(limit or 0, 1)


def _total(values: Iterable[int | None]) -> int | None:
    """Sum, or None when one of them is unknown (a limit we cannot read is not 0)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _by_endpoint(sockets: Iterable) -> dict[str, list]:
    groups: dict[str, list] = {}
    for sock in sockets:
        groups.setdefault(sock.endpoint, []).append(sock)
    return groups


def _by_process(chosen: list[tuple[str, list]], owner_names: Callable[[Iterable[int]], dict[int, str]]
                ) -> list[tuple[str, str, list]]:
    """(endpoint, process, its sockets) for the chosen endpoints; owners are looked up for
    these sockets only, in one call."""
    names = owner_names([m.inode for _, members in chosen for m in members])
    found = []
    for endpoint, members in chosen:
        by_process: dict[str, list] = {}
        for m in members:
            by_process.setdefault(names.get(m.inode, "unknown"), []).append(m)
        found += [(endpoint, process, by_process[process]) for process in sorted(by_process)]
    return found


def top_listeners(listeners: Iterable, owner_names: Callable[[Iterable[int]], dict[int, str]],
                  limit: int = TOP_SOCKETS) -> list[ListenerSeries]:
    """The `limit` fullest listening endpoints (accept queue / backlog, then queue length),
    one series per (endpoint, process)."""
    def rank(item: tuple[str, list]) -> tuple:
        endpoint, members = item
        length = sum(m.accept_queue for m in members)
        return (-_fill(length, _total(m.backlog for m in members)), -length, endpoint)

    chosen = sorted(_by_endpoint(listeners).items(), key=rank)[:limit]
    return [ListenerSeries(endpoint, process, sum(m.accept_queue for m in part), _total(m.backlog for m in part))
            for endpoint, process, part in _by_process(chosen, owner_names)][:limit]


def top_udp(sockets: Iterable, owner_names: Callable[[Iterable[int]], dict[int, str]],
            limit: int = TOP_SOCKETS) -> list[UdpSeries]:
    """The `limit` UDP endpoints with the most drops (sockets that never dropped are left
    out: they carry no information and would churn with every short-lived client socket)."""
    groups = _by_endpoint(s for s in sockets if s.drops)
    chosen = sorted(groups.items(), key=lambda kv: (-sum(s.drops for s in kv[1]), kv[0]))[:limit]
    return [UdpSeries(endpoint, process, sum(s.drops for s in part))
            for endpoint, process, part in _by_process(chosen, owner_names)][:limit]


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
            self.meter.lost(message)  # a namespace re-created meanwhile is a new baseline
            out.sources = dict.fromkeys(self.expected, "needs-privilege" if isinstance(exc, NeedsPrivilege)
                                        else "failed")
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
        # Totals only for findings countable whole in this very snapshot.
        measurable = self.meter.measurable()
        out.drops = {finding: total for finding, total in self.meter.totals.items() if finding in measurable}

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
