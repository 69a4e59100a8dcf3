"""Benchmark: a dropdoc snapshot vs reading the same kernel files raw in Python.

Interleaved in one run so machine noise hits both sides alike; prints medians and the
ratio. Run as root for the full picture (process scan): .venv/bin/python benchmarks/snapshot_vs_raw.py
"""

from __future__ import annotations

import glob
import statistics
import time

from dropdoc.snapshot import take_snapshot
from dropdoc.sources.sysctls import KEYS

FILES = ["/proc/net/snmp", "/proc/net/netstat", "/proc/net/snmp6", "/proc/net/softnet_stat",
         "/proc/net/dev", "/proc/net/udp", "/proc/net/udp6"] + \
        ["/proc/sys/" + k.replace(".", "/") for k in KEYS] + \
        glob.glob("/sys/class/net/*/statistics/*")


def raw_read() -> int:
    total = 0
    for path in FILES:
        try:
            with open(path, "rb") as handle:
                total += len(handle.read())
        except OSError:
            pass
    return total


def timed(func, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def main(rounds: int = 30, repeat: int = 10) -> None:
    raw, counters, full = [], [], []
    for _ in range(rounds):
        raw += timed(raw_read, repeat)
        counters += timed(lambda: take_snapshot(final=False), repeat)
        full += timed(lambda: take_snapshot(final=True), repeat)
    base = statistics.median(raw)
    print(f"files read raw: {len(FILES)}")
    print(f"raw read of the files        {base * 1e3:8.3f} ms")
    for label, samples in (("snapshot (counters, sock_diag)", counters), ("snapshot + process scan", full)):
        median = statistics.median(samples)
        print(f"{label:30} {median * 1e3:8.3f} ms   ratio {median / base:5.2f}x raw")


if __name__ == "__main__":
    main()
