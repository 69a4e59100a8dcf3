"""`dropdoc serve` against the real kernel: the exporter runs as a subprocess on
127.0.0.1:<free port>, a lab scenario makes real drops, and the metrics are checked
against the kernel's own counters read independently (`ip netns exec ... /proc/net/netstat`).
Servers listen on loopback only and are stopped by PID in a finalizer."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropdoc.lab import scenarios
from dropdoc.trace import bpf

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]

SERVE = [sys.executable, "-m", "dropdoc.cli", "serve"]


class Served:
    """A `dropdoc serve` subprocess; stderr is drained by a thread (logs must not block it)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([*SERVE, "--listen", "127.0.0.1:0", *args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port: int | None = None
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(30) or self.port is None:
            self.stop()
            raise AssertionError("dropdoc serve did not start: " + "".join(self.lines))

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/metrics", line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()

    def get(self, path: str = "/metrics", timeout: float = 30) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def samples(self) -> list:
        status, body = self.get()
        assert status == 200, body[:200]
        return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]

    def value(self, name: str, **labels: str) -> float | None:
        found = [s.value for s in self.samples()
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(found) if found else None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as handle:
            return int(next(line.split()[1] for line in handle if line.startswith("VmRSS:")))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(*args))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def listen_overflows(netns: str) -> int:
    text = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/netstat"], capture_output=True,
                          text=True, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["ListenOverflows"])


def bpf_ids_of(pid: int) -> dict[str, int]:
    ids = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as handle:
                info = handle.read()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key in ("prog_id", "map_id"):
                ids[f"{key[:-3]}:{fd}"] = int(value)
    return ids


def test_listen_overflow_drops_match_the_kernel_and_trace_names_reasons(serve, no_leftovers):
    with scenarios.running("listen-overflow") as lab:
        served = serve("--netns", lab.netns, "--trace", "--cache-seconds", "0")
        metric = {"name": "dropdoc_drops_total", "netns": lab.netns, "finding": "tcp.listen_overflow"}
        assert served.value("dropdoc_trace_up", netns=lab.netns) == 1
        ids = bpf_ids_of(served.process.pid)
        assert any(k.startswith("prog") for k in ids)
        kernel_before, exported_before = listen_overflows(lab.netns), served.value(**metric)
        lab.start_load()
        lab.wait_load()
        kernel_after, exported_after = listen_overflows(lab.netns), served.value(**metric)

        kernel_delta, exported_delta = kernel_after - kernel_before, exported_after - exported_before
        assert kernel_delta > 100, "the burst did not overflow the accept queue"
        # Both read the same counter; the only slack is drops between the two reads.
        assert abs(exported_delta - kernel_delta) <= max(2, kernel_delta * 0.02), (exported_delta, kernel_delta)
        assert exported_after == kernel_after  # totals start at the counter and follow it

        samples = served.samples()
        limits = [s for s in samples if s.name == "dropdoc_listen_queue_limit" and s.labels["netns"] == lab.netns
                  and s.labels["socket"].endswith(f":{scenarios.PORT}")]
        assert [(s.labels["process"], s.value) for s in limits] == [("payments", 16)]  # somaxconn 16 caps 1024
        reasons = {s.labels["reason"]: s.value for s in samples
                   if s.name == "dropdoc_trace_drops_total" and s.labels["netns"] == lab.netns}
        assert reasons and sum(reasons.values()) > 0, reasons
        assert set(reasons) & {"TCP_LISTEN_OVERFLOW", "NO_SOCKET"}, reasons
        assert all(re.fullmatch(r"[A-Z0-9_]+|unknown|other", r) for r in reasons)  # no locations or ports
        assert served.value("dropdoc_trace_lost_events_total", netns=lab.netns) == 0
        up = {s.labels["source"]: s.value for s in samples
              if s.name == "dropdoc_source_up" and s.labels["netns"] == lab.netns}
        assert up["netstat"] == up["snmp"] == up["tcp_listeners"] == 1
        errors_before = served.value("dropdoc_scrape_errors_total")

    # The lab (and its namespace) is gone while the exporter runs: still served, the
    # namespace's sources down, its drops absent, the host untouched.
    status, body = served.get()
    assert status == 200
    after = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    gone = [s.value for s in after if s.name == "dropdoc_source_up" and s.labels["netns"] == lab.netns]
    assert gone and set(gone) == {0}
    assert not [s for s in after if s.name == "dropdoc_drops_total" and s.labels["netns"] == lab.netns]
    assert [s for s in after if s.name == "dropdoc_drops_total" and s.labels["netns"] == ""]
    assert served.value("dropdoc_scrape_errors_total") > errors_before

    assert served.stop(signal.SIGTERM) == 0
    assert "stopped (SIGTERM), tracer detached" in "".join(served.lines)
    deadline = time.monotonic() + 3
    while any(bpf.object_exists(k.split(":")[0], v) for k, v in ids.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [k for k, v in ids.items() if bpf.object_exists(k.split(":")[0], v)], "BPF objects left"


def scrape_concurrently(served: Served, count: int) -> list[int]:
    """`count` scrapes at once (one thread each, released together by a barrier)."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def one() -> None:
        barrier.wait(30)
        try:
            status, body = served.get(timeout=60)
            statuses.append(status if b"dropdoc_build_info" in body else -status)
        except OSError as exc:
            statuses.append(-1)
            print("scrape failed:", exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return statuses


RSS_GROWTH_BOUND_KIB = 4096


def test_1000_concurrent_scrapes_all_answered_memory_flat(serve):
    served = serve()
    warm = scrape_concurrently(served, 1000)  # warm-up: worker threads, caches, allocator pools
    assert warm.count(200) == 1000, sorted(set(warm))
    rss_warm = served.rss_kib()
    for _ in range(3):
        statuses = scrape_concurrently(served, 1000)
        assert statuses.count(200) == 1000, sorted(set(statuses))
    rss_after = served.rss_kib()
    print(f"serve RSS: {rss_warm} KiB after warm-up, {rss_after} KiB after 3,000 more scrapes")
    assert rss_after - rss_warm < RSS_GROWTH_BOUND_KIB, (rss_warm, rss_after)
    assert served.process.poll() is None


def test_index_page_and_unknown_path(serve):
    served = serve()
    status, body = served.get("/")
    assert status == 200 and b'href="/metrics"' in body
    status, _ = served.get("/nope")
    assert status == 404
    assert served.stop(signal.SIGINT) == 0
    assert "stopped (SIGINT)" in "".join(served.lines)
