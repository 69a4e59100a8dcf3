"""CPU cost of one Prometheus scrape of `dropdoc serve`.

Starts `dropdoc serve` on 127.0.0.1:<free port> (host namespace; --netns adds one), scrapes
/metrics N times back to back and divides the exporter process's CPU time (utime + stime
from /proc/PID/stat, all its threads) by N. Configurations, each measured in `--rounds`
interleaved rounds (medians reported):

  collect        --cache-seconds 0: every scrape is a full collection (what a Prometheus
                 scraping every 15 s costs: it never hits the cache)
  collect+trace  the same with --trace (kfree_skb tracer attached; read on each scrape)
  cached         --cache-seconds 60: every scrape after the first is served from the
                 cache (what extra concurrent scrapers cost)

Also printed: the exporter's own dropdoc_scrape_cpu_seconds (the collecting thread only)
and the share of one CPU at a 15 s scrape interval. Traffic: loopback only; the exporter
is stopped by PID (SIGTERM) at the end of every round, also on errors.

    /tmp/v/bin/python benchmarks/serve_scrape.py [--scrapes 200] [--rounds 3] [--netns NAME]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = {
    "collect": ["--cache-seconds", "0"],
    "collect+trace": ["--cache-seconds", "0", "--trace"],
    "cached": ["--cache-seconds", "60"],
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(next(line.split()[1] for line in handle if line.startswith("VmRSS:")))


def start(args: list[str]) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-m", "dropdoc.cli", "serve", "--listen", "127.0.0.1:0", *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/metrics \(.*trace: (\w+)", line)
        if found:
            if "--trace" in args and found.group(2) != "on":
                stop(process)
                raise SystemExit(f"tracer not attached ({line.strip()}): run as root on a kernel with BTF")
            return process, int(found.group(1))
        if not line and process.poll() is not None:
            break
    stop(process)
    raise SystemExit("dropdoc serve did not start: " + "".join(seen))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def scrape(port: int) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"scrape answered {response.status}")
        return body
    finally:
        connection.close()


def reported_cpu(body: bytes) -> float:
    """dropdoc_scrape_cpu_seconds summed over namespaces (the collecting thread's CPU)."""
    return sum(float(m.group(1)) for m in re.finditer(rb"^dropdoc_scrape_cpu_seconds\{[^}]*\} (\S+)$", body, re.MULTILINE))


def measure(config: str, scrapes: int, netns: str | None) -> dict[str, float]:
    args = list(CONFIGS[config]) + (["--netns", netns] if netns else [])
    process, port = start(args)
    try:
        for _ in range(20):  # warm-up: imports, first owner scan, allocator
            scrape(port)
        own: list[float] = []
        cpu0, wall0 = cpu_seconds(process.pid), time.perf_counter()
        for _ in range(scrapes):
            own.append(reported_cpu(scrape(port)))
        cpu1, wall1 = cpu_seconds(process.pid), time.perf_counter()
        return {"cpu_ms": (cpu1 - cpu0) / scrapes * 1000, "wall_ms": (wall1 - wall0) / scrapes * 1000,
                "collect_ms": statistics.median(own) * 1000, "rss_mib": rss_kib(process.pid) / 1024}
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--netns", help="also serve this namespace")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ",".join(CONFIGS))
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    results: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    for round_number in range(args.rounds):
        for config in configs:  # interleaved: machine noise hits every configuration
            results[config].append(measure(config, args.scrapes, args.netns))
            r = results[config][-1]
            print(f"round {round_number + 1} {config:14} {r['cpu_ms']:6.2f} ms CPU/scrape", file=sys.stderr)
    print(f"{args.scrapes} sequential scrapes x {args.rounds} rounds, namespaces: host"
          + (f" + {args.netns}" if args.netns else "") + f"; load average {os.getloadavg()[0]:.2f}")
    print(f"{'config':14} {'CPU/scrape':>11} {'wall/scrape':>12} {'collect CPU':>12} {'RSS':>8} {'1 CPU @15s':>11}")
    for config in configs:
        med = {k: statistics.median(r[k] for r in results[config]) for k in results[config][0]}
        print(f"{config:14} {med['cpu_ms']:8.2f} ms {med['wall_ms']:9.2f} ms {med['collect_ms']:9.2f} ms "
              f"{med['rss_mib']:5.1f} MiB {med['cpu_ms'] / 15000 * 100:9.3f} %")


if __name__ == "__main__":
    main()
