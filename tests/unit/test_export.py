"""The exporter's collector on snapshots built from captured fixtures (tests/unit/windows.py
Host, with the netstat/snmp tables and sock_diag listener dumps captured on real machines):
metric contract, totals that only grow, bounded label sets, failing sources."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from windows import Host, listener, udp_socket

from dropdoc import errors as prom_errors
from dropdoc.export import prometheus as prom
from dropdoc.export.owners import OwnerCache
from dropdoc.export.prometheus import METRICS, NOT_DROPS_METRICS, Exporter
from dropdoc.export.sampling import NamespaceSampler, top_listeners, top_udp
from dropdoc.export.tracing import TraceSample
from dropdoc.meter import NOT_DROPS
from dropdoc.rules.engine import load_rules
from dropdoc.sources import snmp, tcp_listeners
from dropdoc.sources.conntrack import ConntrackStats, CpuConntrack
from dropdoc.sources.process_sockets import SocketOwners

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def captured_host(netns: str | None = "srv") -> Host:
    """A Host whose netstat/snmp tables and listeners are the captured files."""
    host = Host(netns=netns)
    host.netstat = snmp.parse((FIXTURES / "snmp" / "netstat").read_text())
    host.snmp = snmp.parse((FIXTURES / "snmp" / "snmp").read_text())
    host.tcp_listeners = tcp_listeners.parse_diag_reply((FIXTURES / "tcp_listeners" / "sock_diag_inet.bin").read_bytes())
    return host


def no_scan() -> SocketOwners:
    return SocketOwners()


class Feed:
    """Snapshots of a Host, t advancing 15 s per call; `fail` makes the next call raise."""

    def __init__(self, host: Host) -> None:
        self.host, self.t, self.fail = host, 0.0, None

    def __call__(self):
        if self.fail is not None:
            raise self.fail
        snap = self.host.snapshot(self.t)
        self.t += 15.0
        return snap


def exporter_for(*feeds: tuple[str | None, Feed], owners: OwnerCache | None = None, **kw) -> Exporter:
    table = dict(feeds)
    owners = owners or OwnerCache(scan=no_scan)
    factory = lambda ns, cache: NamespaceSampler(ns, cache, snapshot=table[ns], conntrack_max=lambda: 262144)
    exporter = Exporter(list(table), owners=owners, sampler_factory=factory, cache_seconds=0, **kw)
    exporter.start()
    return exporter


def scrape(exporter: Exporter) -> dict[str, list]:
    """metric name (with _total) -> samples, parsed back from the text exposition."""
    text = exporter.metrics().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(samples: dict[str, list], name: str, **labels) -> float | None:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"duplicate series {name} {labels}"
    return found[0] if found else None


# --- the contract -------------------------------------------------------------------------------

def test_every_series_matches_the_declared_contract():
    host = captured_host()
    host.owners = SocketOwners({lst.inode: (4242, "payments") for lst in host.tcp_listeners})
    exporter = exporter_for(("srv", Feed(host)))
    text = exporter.metrics().decode()
    seen = set()
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in METRICS, name
        kind, labels, _ = METRICS[name]
        assert family.type == kind
        for sample in family.samples:
            assert set(sample.labels) == set(labels), (name, sample.labels)
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, f"duplicate series {key}"
            seen.add(key)
    assert "dropdoc_drops_total" in text and "dropdoc_source_up" in text and "dropdoc_build_info" in text
    assert text.count("# TYPE dropdoc_drops_total counter") == 1


def test_every_not_drops_finding_has_its_own_metric():
    assert set(NOT_DROPS) <= set(NOT_DROPS_METRICS)
    assert all(name in METRICS for name in NOT_DROPS_METRICS.values())


def test_drops_total_starts_at_the_counters_and_grows_by_their_deltas():
    host = captured_host()
    host.netstat["TcpExt"]["ListenOverflows"] = 1532  # drops since boot, before the exporter started
    exporter = exporter_for(("srv", Feed(host)))
    first = scrape(exporter)
    start = value(first, "dropdoc_drops_total", netns="srv", finding="tcp.listen_overflow")
    assert start == 1532  # totals start at the counters' value
    assert value(first, "dropdoc_drops_total", netns="srv", finding="tcp.listen_overflow",
                 layer="transport") == start
    host.bump("netstat", "TcpExt.ListenOverflows", 286)
    host.bump("netstat", "TcpExt.ListenDrops", 286)
    later = scrape(exporter)
    assert value(later, "dropdoc_drops_total", netns="srv", finding="tcp.listen_overflow") == start + 286


def test_findings_are_catalogue_ids_with_their_layer_and_time_squeeze_apart():
    host = captured_host()
    host.set_cpu(1, time_squeeze=77)
    samples = scrape(exporter_for(("srv", Feed(host))))
    layers = {r.id: r.layer for r in load_rules()}
    drops = samples["dropdoc_drops_total"]
    assert 0 < len(drops) <= len(layers)
    for s in drops:
        assert layers[s.labels["finding"]] == s.labels["layer"]
    assert "cpu.time_squeeze" not in {s.labels["finding"] for s in drops}
    assert value(samples, "dropdoc_softnet_time_squeeze_total", netns="srv") == 77


def test_host_namespace_label_is_empty():
    samples = scrape(exporter_for((None, Feed(captured_host(netns=None)))))
    assert {s.labels["netns"] for s in samples["dropdoc_source_up"]} == {""}


# --- bounded labels -----------------------------------------------------------------------------

def test_100_listeners_make_20_series_the_fullest_ones():
    host = captured_host()
    # queue i of backlog 128: the fullest are i = 99 .. 80
    host.tcp_listeners = [listener(port=10000 + i, backlog=128, queue=i, inode=50000 + i) for i in range(100)]
    host.owners = SocketOwners({50000 + i: (1000 + i, f"app{i}") for i in range(100)})
    owners = OwnerCache(scan=lambda: host.owners)
    samples = scrape(exporter_for(("srv", Feed(host)), owners=owners))
    lengths = samples["dropdoc_listen_queue_length"]
    assert len(lengths) == 20 and len(samples["dropdoc_listen_queue_limit"]) == 20
    assert {s.labels["socket"] for s in lengths} == {f"0.0.0.0:{10000 + i}" for i in range(80, 100)}
    assert value(samples, "dropdoc_listen_queue_length", socket="0.0.0.0:10099", process="app99") == 99
    assert value(samples, "dropdoc_listen_queue_limit", socket="0.0.0.0:10099") == 128


def test_fill_ratio_ranks_a_small_full_queue_above_a_big_half_empty_one():
    lst = [listener(port=80, backlog=4096, queue=1000, inode=1), listener(port=81, backlog=16, queue=16, inode=2)]
    series = top_listeners(lst, lambda inodes: {}, limit=1)
    assert [(s.socket, s.process, s.length, s.limit) for s in series] == [("0.0.0.0:81", "unknown", 16, 16)]


def test_reuseport_group_is_one_series_per_process():
    lst = [listener(port=443, backlog=511, queue=q, inode=i) for i, q in ((1, 10), (2, 20), (3, 5))]
    names = {1: "nginx", 2: "nginx", 3: "haproxy"}
    series = top_listeners(lst, lambda inodes: {i: names[i] for i in inodes})
    assert [(s.process, s.length, s.limit) for s in series] == [("haproxy", 5, 511), ("nginx", 30, 1022)]


def test_udp_top_20_by_drops_without_silent_sockets():
    sockets = [udp_socket(port=20000 + i, inode=60000 + i, drops=i) for i in range(100)]
    series = top_udp(sockets, lambda inodes: {})
    assert len(series) == 20
    assert [s.drops for s in series] == list(range(99, 79, -1))
    assert top_udp([udp_socket(port=53, inode=1, drops=0)], lambda inodes: {}) == []


def test_udp_socket_drops_exported_with_owner():
    host = captured_host()
    host.udp_sockets = [udp_socket(port=5353, inode=777, drops=12), udp_socket(port=53, inode=778, drops=0)]
    host.owners = SocketOwners({777: (55, "avahi")})
    samples = scrape(exporter_for(("srv", Feed(host)), owners=OwnerCache(scan=lambda: host.owners)))
    assert [(s.labels["socket"], s.labels["process"], s.value) for s in samples["dropdoc_udp_socket_drops_total"]] \
        == [("0.0.0.0:5353", "avahi", 12)]


# --- failures -----------------------------------------------------------------------------------

def test_failing_source_is_source_up_0_its_findings_absent_and_the_scrape_served():
    host = captured_host()
    exporter = exporter_for(("srv", Feed(host)))
    host.bump("netstat", "TcpExt.ListenOverflows", 286)
    before = scrape(exporter)
    assert value(before, "dropdoc_source_up", netns="srv", source="netstat") == 1
    assert value(before, "dropdoc_drops_total", finding="tcp.listen_overflow") == 286
    host.broken["netstat"] = ("failed", "netstat: unexpected header")
    after = scrape(exporter)
    assert value(after, "dropdoc_source_up", netns="srv", source="netstat") == 0
    assert value(after, "dropdoc_source_up", netns="srv", source="snmp") == 1
    assert value(after, "dropdoc_drops_total", finding="tcp.listen_overflow") is None  # absent, not 0
    assert value(after, "dropdoc_drops_total", finding="udp.no_port") is not None       # snmp still counts
    assert value(after, "dropdoc_scrape_errors_total") == value(before, "dropdoc_scrape_errors_total") + 1
    host.broken.clear()
    again = scrape(exporter)
    assert value(again, "dropdoc_drops_total", finding="tcp.listen_overflow") == 286  # totals never went back


def test_unavailable_source_is_coverage_not_a_source_down_nor_an_error():
    # The contract: source_up is 1 ok / 0 failed or needs-privilege; a source this host
    # does not have has no source_up series (DropdocSourceDown alerts on source_up == 0).
    host = captured_host()
    host.broken["udp_sockets"] = ("unavailable", "no udp_diag")
    host.broken["snmp6"] = ("needs-privilege", "snmp6: Permission denied (run as root)")
    samples = scrape(exporter_for(("srv", Feed(host))))
    assert value(samples, "dropdoc_source_up", source="udp_sockets") is None
    assert value(samples, "dropdoc_source_unavailable", netns="srv", source="udp_sockets") == 1
    assert value(samples, "dropdoc_source_up", source="snmp6") == 0   # exists here, cannot be read
    assert value(samples, "dropdoc_source_unavailable", source="snmp6") is None
    assert value(samples, "dropdoc_source_up", source="netstat") == 1
    assert value(samples, "dropdoc_scrape_errors_total") == 0


def test_a_finding_is_absent_while_one_of_its_sources_fails_not_a_partial_sum():
    # udp.no_port = Udp.NoPorts (snmp) + Udp6.NoPorts (snmp6): with snmp failing, Udp6 alone
    # is a number too small; exporting it (and counting the interval) would hide the drops.
    host = captured_host()
    exporter = exporter_for(("srv", Feed(host)))
    first = value(scrape(exporter), "dropdoc_drops_total", finding="udp.no_port")
    host.broken["snmp"] = ("failed", "snmp: truncated")
    host.bump("snmp", "Udp.NoPorts", 100)
    host.bump("snmp6", "Udp6.NoPorts", 3)
    assert value(scrape(exporter), "dropdoc_drops_total", finding="udp.no_port") is None
    host.broken.clear()
    host.bump("snmp", "Udp.NoPorts", 10)
    # The interval snmp came back in is unknown too (its start had no snmp): nothing added.
    assert value(scrape(exporter), "dropdoc_drops_total", finding="udp.no_port") == first
    host.bump("snmp", "Udp.NoPorts", 4)
    assert value(scrape(exporter), "dropdoc_drops_total", finding="udp.no_port") == first + 4


def test_namespace_recreated_between_scrapes_is_a_new_baseline_not_a_delta(monkeypatch):
    from dropdoc import meter as meter_mod

    inode = {"srv": 4026532100}
    monkeypatch.setattr(meter_mod.netns_mod, "inode_of", lambda name: inode.get(name))
    host = captured_host()
    exporter = exporter_for(("srv", Feed(host)))
    before = value(scrape(exporter), "dropdoc_drops_total", finding="tcp.listen_overflow")
    inode["srv"] = 4026532200                       # deleted and added again between scrapes ...
    host.bump("netstat", "TcpExt.ListenOverflows", 500)  # ... counters of another namespace
    assert value(scrape(exporter), "dropdoc_drops_total", finding="tcp.listen_overflow") == before
    host.bump("netstat", "TcpExt.ListenOverflows", 6)
    assert value(scrape(exporter), "dropdoc_drops_total", finding="tcp.listen_overflow") == before + 6


def test_vanished_namespace_is_logged_once_not_once_per_source(caplog):
    srv = Feed(captured_host("srv"))
    exporter = exporter_for(("srv", srv))
    srv.fail = prom_errors.UnknownNetns("no network namespace named 'srv'")
    with caplog.at_level("INFO", logger="dropdoc.serve"):
        scrape(exporter)
        scrape(exporter)
        srv.fail = None
        scrape(exporter)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["namespace srv: no network namespace named 'srv'", "srv: collecting works again"]


def test_namespace_that_vanishes_keeps_the_other_served():
    srv, other = Feed(captured_host("srv")), Feed(captured_host("web"))
    exporter = exporter_for(("srv", srv), ("web", other))
    srv.fail = FileNotFoundError(2, "No such file or directory")
    samples = scrape(exporter)
    ups = {s.labels["source"]: s.value for s in samples["dropdoc_source_up"] if s.labels["netns"] == "srv"}
    assert ups and set(ups.values()) == {0}
    assert not [s for s in samples["dropdoc_drops_total"] if s.labels["netns"] == "srv"]
    assert [s for s in samples["dropdoc_drops_total"] if s.labels["netns"] == "web"]
    assert value(samples, "dropdoc_scrape_errors_total") >= 1


def test_exception_in_the_owner_lookup_costs_only_the_listeners():
    def broken_scan():
        raise RuntimeError("boom")

    host = captured_host()
    host.bump("netstat", "TcpExt.ListenOverflows", 5)
    cache = OwnerCache(scan=broken_scan)
    cache.names = lambda inodes: (_ for _ in ()).throw(RuntimeError("enricher bug"))  # type: ignore[method-assign]
    samples = scrape(exporter_for(("srv", Feed(host)), owners=cache))
    assert value(samples, "dropdoc_source_up", source="tcp_listeners") == 0
    assert "dropdoc_listen_queue_length" not in samples
    assert value(samples, "dropdoc_drops_total", finding="tcp.listen_overflow") == 5


def test_conntrack_gauges_only_when_conntrack_is_readable():
    host = captured_host()
    samples = scrape(exporter_for(("srv", Feed(host))))
    assert "dropdoc_conntrack_entries" not in samples  # the Host has no conntrack source

    class WithConntrack(Feed):
        def __call__(self):
            from dropdoc.sources import SourceResult

            snap = super().__call__()
            snap.results["conntrack"] = SourceResult("ok", ConntrackStats(
                ("entries", "drop"), (CpuConntrack(0, 4242, {"drop": 0}),)))
            return snap

    samples = scrape(exporter_for(("srv", WithConntrack(captured_host()))))
    assert value(samples, "dropdoc_conntrack_entries", netns="srv") == 4242
    assert value(samples, "dropdoc_conntrack_max", netns="srv") == 262144


# --- trace --------------------------------------------------------------------------------------

def test_trace_families():
    sample = NamespaceSampler("srv", OwnerCache(scan=no_scan), snapshot=Feed(captured_host())).sample()
    trace = TraceSample(True, {"srv": {"TCP_LISTEN_OVERFLOW": 41, "NO_SOCKET": 40}}, lost=3)
    text = b"".join(f.name.encode() for f in prom.families([sample], trace, 0, "6.18"))
    assert b"dropdoc_trace_drops" in text
    fams = {f.name: f for f in prom.families([sample], trace, 0, "6.18")}
    reasons = {s.labels["reason"]: s.value for s in fams["dropdoc_trace_drops"].samples}
    assert reasons == {"TCP_LISTEN_OVERFLOW": 41, "NO_SOCKET": 40}
    assert fams["dropdoc_trace_lost_events"].samples[0].value == 3
    assert fams["dropdoc_trace_up"].samples[0].value == 1
    off = {f.name: f for f in prom.families([sample], None, 0, "6.18")}
    assert "dropdoc_trace_up" not in off and "dropdoc_trace_drops" not in off  # --trace off: nothing is down
    down = {f.name: f for f in prom.families([sample], TraceSample(False, error="no BTF"), 0, "6.18")}
    assert down["dropdoc_trace_up"].samples[0].value == 0 and "dropdoc_trace_drops" not in down


# --- one collection for many scrapes ------------------------------------------------------------

class SlowFeed(Feed):
    def __init__(self, host: Host, delay: float) -> None:
        super().__init__(host)
        self.delay, self.calls = delay, 0

    def __call__(self):
        self.calls += 1
        time.sleep(self.delay)
        return super().__call__()


def test_concurrent_scrapes_share_collections():
    feed = SlowFeed(captured_host(), 0.2)
    exporter = exporter_for(("srv", feed))
    base = exporter.collections
    barrier = threading.Barrier(50)
    bodies: list[bytes] = []

    def worker():
        barrier.wait()
        bodies.append(exporter.metrics())

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(bodies) == 50
    # cache_seconds=0: a scrape may not get a collection begun before it arrived, so the
    # ones arriving during the first collection share a second one - never 50.
    assert exporter.collections - base <= 2
    assert len(set(bodies)) <= 2


def test_cache_serves_a_recent_collection_and_expires():
    now = [100.0]
    host = captured_host()
    exporter = Exporter(["srv"], owners=OwnerCache(scan=no_scan), cache_seconds=1.0, clock=lambda: now[0],
                        sampler_factory=lambda ns, c: NamespaceSampler(ns, c, snapshot=Feed(host)))
    exporter.start()
    exporter.metrics()
    exporter.metrics()
    assert exporter.collections == 1
    now[0] += 1.5
    exporter.metrics()
    assert exporter.collections == 2


@pytest.mark.parametrize("cache", [0.0, 1.0])
def test_scrape_duration_and_cpu_are_reported(cache):
    exporter = exporter_for(("srv", Feed(captured_host())))
    exporter.cache_seconds = cache
    samples = scrape(exporter)
    assert value(samples, "dropdoc_scrape_duration_seconds", netns="srv") > 0
    assert value(samples, "dropdoc_scrape_cpu_seconds", netns="srv") >= 0


def test_proc_net_is_read_through_the_calling_thread():
    """The exporter samples namespaces from HTTP worker threads: /proc/net (= /proc/self/net,
    the main thread's namespace) would give them the wrong namespace's counters."""
    from dropdoc.sources.base import _THREAD_SELF_NET, ReadContext

    if _THREAD_SELF_NET:
        assert ReadContext()._path(("proc", "net", "snmp")) == "/proc/thread-self/net/snmp"
    assert ReadContext()._path(("proc", "sys", "net", "core", "somaxconn")) == "/proc/sys/net/core/somaxconn"
    assert ReadContext(root="/copied")._path(("proc", "net", "snmp")) == "/copied/proc/net/snmp"


def test_namespace_unreachable_at_start_is_the_callers_one_line(caplog):
    # `dropdoc serve --netns srv` as non-root: serve refuses to start with this one line;
    # a log line saying the same before it would be two lines for one problem.
    feed = Feed(captured_host("srv"))
    feed.fail = prom_errors.NeedsPrivilege("entering a network namespace needs CAP_SYS_ADMIN (run as root)")
    exporter = Exporter(["srv"], owners=OwnerCache(scan=no_scan), cache_seconds=0,
                        sampler_factory=lambda ns, cache: NamespaceSampler(ns, cache, snapshot=feed))
    with caplog.at_level("INFO", logger="dropdoc.serve"):
        (sample,) = exporter.start()
    assert not sample.reachable and "CAP_SYS_ADMIN" in sample.errors[0]
    assert set(sample.sources.values()) == {"needs-privilege"}
    assert caplog.records == []
