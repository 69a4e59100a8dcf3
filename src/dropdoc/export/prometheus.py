"""The Prometheus side of `dropdoc serve`: the metric contract, the Collector, the cache.

    exporter = Exporter(namespaces=[None, "srv"], trace=True)
    exporter.start()            # first sample of every namespace (totals start here), tracer
    body = exporter.metrics()   # text exposition format 0.0.4; cheap under concurrent scrapes
    exporter.close()            # tracer detached

One collection = one Meter sample per namespace (+ one read of the tracer), ~ the cost of a
counters snapshot. Scrapes share collections (single flight): a scrape that arrives while
one runs waits for it, and a result younger than `cache_seconds` is served as it is, so
1,000 concurrent scrapes cost one collection and the same few encoded bytes. The registry
is private: nothing of prometheus_client's default process/gc metrics, nothing global.

Metric names and labels are a contract (docs/alert rules and the dashboard use them):
`METRICS` lists them; add, never rename or remove.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from ..meter import NOT_DROPS
from ..rules.engine import load_rules
from ..snapshot import kernel_release
from .owners import OwnerCache
from .sampling import NamespaceSampler, NetnsSample
from .tracing import SharedTracer, TraceSample

log = logging.getLogger("dropdoc.serve")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, labels, help). The contract, in one place (tests check the output against it).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "dropdoc_drops_total": (
        "counter", ("netns", "finding", "layer"),
        ("Packets dropped per catalogue finding (what `dropdoc diagnose` counts), since the counters' "
         "value at the exporter's first sample; absent when the finding's counters cannot be read.")),
    "dropdoc_softnet_time_squeeze_total": (
        "counter", ("netns",),
        ("Times the softirq ran out of budget or time with work left "
         "(softnet_stat time_squeeze; squeezes, not drops).")),
    "dropdoc_listen_queue_length": (
        "gauge", ("netns", "socket", "process"),
        "Accept-queue length of a listening socket (top 20 by fill ratio)."),
    "dropdoc_listen_queue_limit": (
        "gauge", ("netns", "socket", "process"),
        "Accept-queue limit in force: min(listen() backlog, somaxconn then)."),
    "dropdoc_udp_socket_drops_total": (
        "counter", ("netns", "socket", "process"),
        "Packets dropped by a UDP socket (sk_drops; top 20 with drops)."),
    "dropdoc_conntrack_entries": ("gauge", ("netns",), "Connection-tracking entries in the namespace."),
    "dropdoc_conntrack_max": ("gauge", ("netns",), "nf_conntrack_max (host-wide limit)."),
    "dropdoc_trace_drops_total": (
        "counter", ("netns", "reason"),
        "kfree_skb drops by kernel drop reason, since the tracer attached (--trace)."),
    "dropdoc_trace_lost_events_total": (
        "counter", ("netns",),
        "Drops the tracer could not count (its map was full); one tracer serves every namespace."),
    "dropdoc_trace_up": (
        "gauge", ("netns",),
        "With --trace: 1 if the kfree_skb tracer is attached and read, 0 if it failed (absent without --trace)."),
    "dropdoc_source_up": (
        "gauge", ("netns", "source"),
        ("1 if the source was read in the last collection, 0 if it failed or needs privilege (the "
         "reason is logged); absent for a source this host does not have (dropdoc_source_unavailable).")),
    "dropdoc_source_unavailable": (
        "gauge", ("netns", "source"),
        ("1 for a source this host does not have (kernel feature or module absent, e.g. no conntrack): "
         "the findings that need it are not measured here. Coverage, not a failure.")),
    "dropdoc_scrape_duration_seconds": ("gauge", ("netns",), "Wall time of the namespace's last collection."),
    "dropdoc_scrape_cpu_seconds": ("gauge", ("netns",), "CPU time of the namespace's last collection."),
    "dropdoc_scrape_errors_total": (
        "counter", (),
        ("Collection steps that failed: a source that failed to read or parse, a namespace that "
         "could not be entered, an unexpected error.")),
    "dropdoc_build_info": ("gauge", ("version", "kernel"), "dropdoc version and running kernel (value 1)."),
}

# Catalogue findings that count something other than drops get a metric of their own.
NOT_DROPS_METRICS = {"cpu.time_squeeze": "dropdoc_softnet_time_squeeze_total"}


def _family(name: str) -> Metric:
    kind, labels, help_text = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def families(samples: Iterable[NetnsSample], trace: TraceSample | None, errors_total: int,
             kernel: str, layers: dict[str, str] | None = None) -> list[Metric]:
    """Plain samples -> metric families (pure: unit-tested on hand-made samples)."""
    if layers is None:
        layers = {rule.id: rule.layer for rule in load_rules()}
    out = {name: _family(name) for name in METRICS}
    for sample in samples:
        ns = sample.netns
        for finding, total in sorted(sample.drops.items()):
            if finding in NOT_DROPS:
                metric = NOT_DROPS_METRICS.get(finding)
                if metric is not None:
                    out[metric].add_metric([ns], total)
                continue
            out["dropdoc_drops_total"].add_metric([ns, finding, layers.get(finding, "unknown")], total)
        for lst in sample.listeners:
            out["dropdoc_listen_queue_length"].add_metric([ns, lst.socket, lst.process], lst.length)
            if lst.limit is not None:
                out["dropdoc_listen_queue_limit"].add_metric([ns, lst.socket, lst.process], lst.limit)
        for udp in sample.udp:
            out["dropdoc_udp_socket_drops_total"].add_metric([ns, udp.socket, udp.process], udp.drops)
        if sample.conntrack_entries is not None:
            out["dropdoc_conntrack_entries"].add_metric([ns], sample.conntrack_entries)
        if sample.conntrack_max is not None:
            out["dropdoc_conntrack_max"].add_metric([ns], sample.conntrack_max)
        for source, up in sorted(sample.source_up().items()):
            out["dropdoc_source_up"].add_metric([ns, source], 1 if up else 0)
        for source in sample.unavailable():
            out["dropdoc_source_unavailable"].add_metric([ns, source], 1)
        if trace is not None:  # --trace: up or failed; without it no series (nothing is down)
            out["dropdoc_trace_up"].add_metric([ns], 1 if trace.up else 0)
        if trace is not None and trace.up:
            for reason, count in sorted(trace.drops.get(ns, {}).items()):
                out["dropdoc_trace_drops_total"].add_metric([ns, reason], count)
            if trace.lost is not None:
                out["dropdoc_trace_lost_events_total"].add_metric([ns], trace.lost)
        out["dropdoc_scrape_duration_seconds"].add_metric([ns], sample.seconds)
        out["dropdoc_scrape_cpu_seconds"].add_metric([ns], sample.cpu_seconds)
    out["dropdoc_scrape_errors_total"].add_metric([], errors_total)
    out["dropdoc_build_info"].add_metric([__version__, kernel], 1)
    # A family without samples prints only HELP/TYPE lines: leave it out.
    return [family for family in out.values() if family.samples]


def count_errors(sample: NetnsSample) -> int:
    """Failures of one collection: unexpected errors plus sources that *failed* (not the
    steady 'unavailable'/'needs-privilege' of a host without, say, conntrack)."""
    return len(sample.errors) + sum(1 for status in sample.sources.values() if status == "failed")


class _Collector(Collector):
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterable[Metric]:
        return self.exporter.collect()


@dataclass
class _Cached:
    body: bytes
    started: float  # monotonic time the collection began
    done: float


class Exporter:
    """Samplers for each namespace, the shared tracer, the private registry and the cache."""

    def __init__(self, namespaces: Iterable[str | None] = (None,), trace: bool = False,
                 cache_seconds: float = 1.0, owners: OwnerCache | None = None,
                 sampler_factory: Callable[[str | None, OwnerCache], NamespaceSampler] | None = None,
                 tracer: SharedTracer | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.namespaces = list(dict.fromkeys(namespaces))
        self.cache_seconds = cache_seconds
        self.owners = owners or OwnerCache()
        factory = sampler_factory or NamespaceSampler
        self.samplers = [factory(ns, self.owners) for ns in self.namespaces]
        self.tracer = tracer if tracer is not None else (SharedTracer(self.namespaces) if trace else None)
        self.kernel = kernel_release()
        self.errors_total = 0
        self.collections = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._clock = clock
        # Reentrant: metrics() holds it around generate_latest(), which calls collect(), and
        # collect() takes it too for callers that use the registry directly.
        self._collect_lock = threading.RLock()
        self._cached: _Cached | None = None
        self._logged: dict[tuple[str, str], str] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> list[NetnsSample]:
        """Attach the tracer and take the first sample of every namespace (the Meter's totals
        start from it). Returns those samples so the caller can refuse to start on errors."""
        if self.tracer is not None and not self.tracer.attach():
            error = self.tracer.error or "off"
            self._log_change(("", "trace"), False, error, f"tracing unavailable: {error} (dropdoc_trace_up 0)")
        return [self._sample(s, starting=True) for s in self.samplers]

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.close()

    # -- scraping ------------------------------------------------------------------------------
    def metrics(self) -> bytes:
        """The exposition of a collection no older than cache_seconds and not begun before
        this call when it is older: one collection at a time, shared by every waiting scrape."""
        arrived = self._clock()
        cached = self._cached
        if cached is not None and arrived - cached.done < self.cache_seconds:
            return cached.body
        with self._collect_lock:
            cached = self._cached
            if cached is not None and (cached.started >= arrived
                                       or self._clock() - cached.done < self.cache_seconds):
                return cached.body
            started = self._clock()
            body = generate_latest(self.registry)
            self._cached = _Cached(body, started, self._clock())
            return body

    def collect(self) -> list[Metric]:
        """One collection (called by the registry): one sample per namespace, one at a time."""
        with self._collect_lock:
            return self._collect()

    def _collect(self) -> list[Metric]:
        self.collections += 1
        samples = [self._sample(s) for s in self.samplers]
        trace = self.tracer.read() if self.tracer is not None else None
        if trace is not None and not trace.up:
            self._log_change(("", "trace"), False, trace.error or "off", f"tracing unavailable: {trace.error}")
        for sample in samples:
            self.errors_total += count_errors(sample)
        return families(samples, trace, self.errors_total, self.kernel)

    def _sample(self, sampler: NamespaceSampler, starting: bool = False) -> NetnsSample:
        wall, cpu = time.perf_counter(), time.thread_time()
        sample = sampler.sample()
        sample.seconds = time.perf_counter() - wall
        sample.cpu_seconds = time.thread_time() - cpu
        if not (starting and not sample.reachable):  # at start the caller says it, once
            self._log_sample(sample)
        return sample

    # -- logs: the reasons behind source_up 0, once per change, not once per scrape --------------
    def _log_sample(self, sample: NetnsSample) -> None:
        where = sample.netns or "host"
        # A namespace that cannot be entered fails every source for one reason: one line.
        for source, status in sample.sources.items() if sample.reachable else ():
            error = sample.source_errors.get(source, "")
            self._log_change((sample.netns, source), status == "ok", f"{status} {error}",
                             f"{where}: source {source} {status}: {error}" if status != "ok"
                             else f"{where}: source {source} ok again")
        errors = "; ".join(sample.errors)
        self._log_change((sample.netns, "errors"), not errors, errors,
                         errors or f"{where}: collecting works again")

    def _log_change(self, key: tuple[str, str], healthy: bool, state: str, message: str) -> None:
        state = "ok" if healthy else state
        previous = self._logged.get(key)
        if previous == state:
            return
        self._logged[key] = state
        if previous is None and healthy:
            return  # healthy from the start: nothing to say
        (log.info if healthy else log.warning)("%s", message)
