"""The exporter's shared tracer and owner cache, with stand-ins for the kernel parts
(the real tracer runs in tests/functional/test_serve.py)."""

from __future__ import annotations

from typing import ClassVar

from dropdoc.errors import NeedsPrivilege, SourceUnavailable
from dropdoc.export.owners import OwnerCache
from dropdoc.export.tracing import MAX_REASONS, OTHER, SharedTracer
from dropdoc.sources.process_sockets import SocketOwners
from dropdoc.trace.tracer import Drop, TraceResult

HOST, SRV, ELSEWHERE = 4026531840, 4026532500, 4026532999
INODES = {None: HOST, "srv": SRV}


class FakeTracer:
    """Counts as the kernel map would: cumulative per (reason, netns inode)."""

    instances: ClassVar[list[FakeTracer]] = []

    def __init__(self, netns, fail: Exception | None = None) -> None:
        self.netns, self.fail = netns, fail
        self.backend = None
        self.errors: list = []
        self.counts: dict[tuple[str | None, int], int] = {}
        self.lost = 0
        self.detached = False
        FakeTracer.instances.append(self)

    def attach(self):
        if self.fail is not None:
            self.errors.append(("bpf", self.fail))
        else:
            self.backend = object()
        return self

    def start(self) -> None:
        pass

    def snapshot(self) -> TraceResult:
        drops = [Drop(reason, None, n, netns_inode=inode) for (reason, inode), n in self.counts.items()]
        return TraceResult("bpf", drops, self.lost)

    def detach(self) -> None:
        self.detached = True

    def drop(self, reason: str | None, inode: int, n: int = 1) -> None:
        self.counts[(reason, inode)] = self.counts.get((reason, inode), 0) + n


def shared(namespaces=(None, "srv"), capacity: int = 1000, fail: Exception | None = None) -> SharedTracer:
    FakeTracer.instances = []
    tracer = SharedTracer(list(namespaces), make_tracer=lambda ns: FakeTracer(ns, fail),
                          inode_of=INODES.get, capacity=capacity)
    return tracer


def test_counts_split_by_namespace_and_others_ignored():
    tracer = shared()
    assert tracer.attach() and tracer.up
    fake = FakeTracer.instances[-1]
    assert fake.netns is None  # two namespaces: no in-kernel filter
    fake.drop("TCP_LISTEN_OVERFLOW", SRV, 41)
    fake.drop("NO_SOCKET", SRV, 40)
    fake.drop("NETFILTER_DROP", HOST, 7)
    fake.drop("NETFILTER_DROP", ELSEWHERE, 1000)  # a namespace we do not serve
    fake.drop("NETFILTER_DROP", 0, 5)             # netns unknown to the kernel
    fake.lost = 2
    sample = tracer.read()
    assert sample.up and sample.lost == 2
    assert sample.drops == {"": {"NETFILTER_DROP": 7}, "srv": {"TCP_LISTEN_OVERFLOW": 41, "NO_SOCKET": 40}}


def test_one_named_namespace_is_filtered_in_the_kernel():
    shared(namespaces=("srv",)).attach()
    assert FakeTracer.instances[-1].netns == "srv"
    shared(namespaces=(None,)).attach()
    assert FakeTracer.instances[-1].netns is None


def test_no_reason_and_too_many_reasons_stay_bounded():
    tracer = shared()
    tracer.attach()
    fake = FakeTracer.instances[-1]
    fake.drop(None, HOST, 3)  # kernel < 5.17: no reason
    for i in range(MAX_REASONS + 10):
        fake.drop(f"REASON_{i}", HOST)
    drops = tracer.read().drops[""]
    assert len(drops) == MAX_REASONS + 1  # the admitted ones and "other"
    assert drops["unknown"] == 3
    assert drops[OTHER] == 11


def test_restart_when_the_map_fills_keeps_counters_growing():
    tracer = shared(capacity=8)  # restart at 4 keys
    tracer.attach()
    first = FakeTracer.instances[-1]
    for reason in ("A", "B", "C", "D"):
        first.drop(reason, SRV, 10)
    first.lost = 1
    before = tracer.read()
    assert tracer.restarts == 1 and first.detached and len(FakeTracer.instances) == 2
    second = FakeTracer.instances[-1]
    second.drop("A", SRV, 5)
    after = tracer.read()
    assert after.drops["srv"] == {"A": 15, "B": 10, "C": 10, "D": 10}
    assert after.lost == before.lost == 1
    assert all(after.drops["srv"][r] >= before.drops["srv"][r] for r in before.drops["srv"])


def test_attach_failure_is_trace_down_with_the_reason():
    tracer = shared(fail=NeedsPrivilege("bpf: Operation not permitted (run as root)"))
    assert not tracer.attach()
    assert not tracer.up and "run as root" in tracer.error
    assert FakeTracer.instances[-1].detached
    sample = tracer.read()
    assert not sample.up and sample.drops == {} and "run as root" in sample.error


def test_read_failure_is_trace_down_not_an_exception():
    tracer = shared()
    tracer.attach()
    FakeTracer.instances[-1].snapshot = lambda: (_ for _ in ()).throw(OSError(9, "Bad file descriptor"))
    sample = tracer.read()
    assert not sample.up and "Bad file descriptor" in sample.error


def test_close_detaches():
    tracer = shared()
    tracer.attach()
    tracer.close()
    assert FakeTracer.instances[-1].detached and not tracer.up


# --- owners -------------------------------------------------------------------------------------

class Scanner:
    def __init__(self, owners: dict[int, tuple[int, str]]) -> None:
        self.owners, self.calls = owners, 0
        self.fail: Exception | None = None

    def __call__(self) -> SocketOwners:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return SocketOwners(dict(self.owners))


def test_owner_cache_rescans_only_for_new_sockets_and_not_too_often():
    now = [0.0]
    scan = Scanner({1: (10, "nginx")})
    cache = OwnerCache(scan=scan, min_rescan=30, clock=lambda: now[0])
    assert cache.names([1]) == {1: "nginx"} and scan.calls == 1
    assert cache.names([1]) == {1: "nginx"} and scan.calls == 1      # known: no scan
    scan.owners[2] = (11, "redis")
    assert cache.names([1, 2]) == {1: "nginx", 2: "unknown"}          # new, but scanned 0 s ago
    now[0] = 31
    assert cache.names([1, 2]) == {1: "nginx", 2: "redis"} and scan.calls == 2
    now[0] = 100
    assert cache.names([3]) == {3: "unknown"} and scan.calls == 3      # nobody holds 3
    now[0] = 200
    assert cache.names([3]) == {3: "unknown"} and scan.calls == 3      # remembered: no rescan for it


def test_owner_cache_failed_scan_is_a_status_and_retried_later():
    now = [0.0]
    scan = Scanner({})
    scan.fail = NeedsPrivilege("/proc/1/fd: Permission denied (run as root)")
    cache = OwnerCache(scan=scan, min_rescan=30, clock=lambda: now[0])
    assert cache.names([5]) == {5: "unknown"}
    assert cache.status == "needs-privilege" and "root" in cache.error
    scan.fail, scan.owners[5] = None, (1, "sshd")
    now[0] = 31
    assert cache.names([5]) == {5: "sshd"} and cache.status == "ok"
    scan.fail = SourceUnavailable("no /proc")
    cache.names([6])  # within 30 s: no scan
    now[0] = 62
    cache.names([6])
    assert cache.status == "unavailable" and cache.names([5]) == {5: "sshd"}  # old names kept
