"""Benchmark: what `dropdoc watch --record` costs per second.

  meter     Meter.sample() of the host namespace (counter sources + drops per finding),
            and drops_by_finding() with the cached glob matching vs the engine's plain
            matching (interleaved rounds, same counters).
  history   History.append() per sample and file size per sample for a synthetic week
            slice shaped like this host's intervals (which findings are unmeasurable here,
            a drop every 10th sample), plus samples() and columns() read time; compared with
            the same rows in the original layout (rowid tables, rollback journal) and in
            dropdoc.history/1 (a gaps row per sample and unmeasurable finding).

No traffic, no namespaces; the history goes to a temp dir removed at exit.
Run:  /tmp/v/bin/python benchmarks/watch_history.py [--samples 2000]  (the original layout fsyncs every sample: slow on a busy disk)
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

from dropdoc import history as history_mod
from dropdoc import meter as meter_mod
from dropdoc.history import History
from dropdoc.meter import Interval, Meter, drops_by_finding
from dropdoc.rules.engine import count_drops, load_rules, matching

ORIGINAL_DDL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples(ts REAL PRIMARY KEY, seconds REAL NOT NULL);
CREATE TABLE drops(ts REAL NOT NULL, finding TEXT NOT NULL, layer TEXT NOT NULL,
                   drops INTEGER NOT NULL, PRIMARY KEY (ts, finding));
CREATE TABLE gaps(ts REAL NOT NULL, finding TEXT NOT NULL, PRIMARY KEY (ts, finding));
"""
# dropdoc.history/1: History appends to such a file in its own layout.
V1_DDL = history_mod._DDL + history_mod._GAPS_DDL[1] + f"INSERT INTO meta VALUES ('schema', '{history_mod.SCHEMA_V1}');"


def plain_drops_by_finding(counters):
    """drops_by_finding as first written: engine.matching (fnmatch) on every call."""
    found = {}
    for rule in load_rules():
        special = meter_mod.SPECIAL_COUNTS.get(rule.id)
        if special is not None:
            found[rule.id] = special(counters)
            continue
        known = {k: v for k, v in matching(rule.drop_counters, counters).items() if v is not None}
        found[rule.id] = count_drops(rule, known) if known else None
    return found


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def bench_meter(rounds: int) -> dict:
    meter = Meter()
    meter.sample()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        last = meter.sample()
        samples.append(time.perf_counter() - start)
    counters = meter.last.counters()
    cached, plain = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        a = drops_by_finding(counters)
        cached.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = plain_drops_by_finding(counters)
        plain.append(time.perf_counter() - start)
        assert a == b
    print(f"meter: {len(counters)} counters; Meter.sample() median {ms(statistics.median(samples))}; "
          f"drops_by_finding cached {ms(statistics.median(cached))} vs plain {ms(statistics.median(plain))}")
    return last.drops


def fill(path: str, drops: dict, n: int, layout: str) -> float:
    if layout == "/1":
        db = sqlite3.connect(path)
        db.executescript(V1_DDL)
        db.close()
    if layout == "original":  # the first layout: rowid tables + an index per key, rollback journal
        db = sqlite3.connect(path)
        db.executescript(ORIGINAL_DDL)
        start = time.perf_counter()
        for i in range(n):
            with db:
                db.execute("INSERT INTO samples VALUES (?, ?)", (1.7e9 + i, 1.0))
                for finding, value in drops.items():
                    if value is None:
                        db.execute("INSERT INTO gaps VALUES (?, ?)", (1.7e9 + i, finding))
                    elif finding == "tcp.listen_overflow" and i % 10 == 0:
                        db.execute("INSERT INTO drops VALUES (?, ?, ?, ?)", (1.7e9 + i, finding, "transport", i or 1))
        elapsed = time.perf_counter() - start
        db.close()
        return elapsed
    with History(path, retention_s=1e12) as history:
        start = time.perf_counter()
        for i in range(n):
            values = dict(drops)
            if i % 10 == 0:
                values["tcp.listen_overflow"] = i or 1
            history.append(Interval(wall=1.7e9 + i, seconds=1.0, drops=values))
        return time.perf_counter() - start


def bench_history(drops: dict, n: int) -> None:
    gaps = sorted(f for f, v in drops.items() if v is None)
    quiet = {f: (None if v is None else 0) for f, v in drops.items()}
    print(f"history: {n} samples, {len(gaps)} unmeasurable findings per sample here ({', '.join(gaps) or 'none'})")
    with tempfile.TemporaryDirectory(prefix="dropdoc-bench-") as tmp:
        for label, layout in (("original layout", "original"), ("dropdoc.history/1", "/1"),
                              ("dropdoc.history/2 now", "/2")):
            path = os.path.join(tmp, f"{layout.strip('/')}.db")
            elapsed = fill(path, quiet, n, layout)
            size = os.path.getsize(path)
            read = ""
            if layout != "original":
                with History(path, create=False) as history:
                    start = time.perf_counter()
                    got = history.samples()
                    middle = time.perf_counter()
                    history.columns()
                    read = (f"; samples() of all {len(got)}: {ms(middle - start)}, "
                            f"columns(): {ms(time.perf_counter() - middle)}")
            print(f"  {label:22} append {elapsed / n * 1e6:7.0f} us/sample, {size / n:5.0f} bytes/sample "
                  f"= {size / n * 7 * 86400 / 1e6:5.0f} MB per week at 1 s{read}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    drops = bench_meter(args.rounds)
    bench_history(drops, args.samples)


if __name__ == "__main__":
    main()
