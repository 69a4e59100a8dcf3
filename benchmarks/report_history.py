"""Benchmark: how long `dropdoc report` takes on a long history, and how big the report is.

Synthetic histories shaped like a recorder on this host (one finding never measurable,
bursts of listen overflows every few minutes, a firewall drop now and then, one hour
not recorded; with --busy also a finding that drops in every sample, the worst case for
the report), written with History.append into a temp dir removed at exit, then:
  load      report_inputs.load (History.columns)
  html      html.render (timeline, charts of at most 600 points, page)
  markdown  markdown.render (timeline, table of at most 24 buckets)
  cli       `dropdoc report FILE -o report.html`, the whole command (start-up included)
No traffic, no namespaces.
Run:  /tmp/v/bin/python benchmarks/report_history.py [--sizes 3600,604800] [--interval 1] [--busy]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from dropdoc.history import History
from dropdoc.meter import Interval
from dropdoc.render import html, markdown
from dropdoc.render.report_inputs import load
from dropdoc.rules.engine import load_rules

T0 = 1_795_000_000.0


def write_history(path: str, samples: int, interval: float, busy: bool = False) -> None:
    ids = [rule.id for rule in load_rules()]
    gap = range(samples // 2, samples // 2 + int(3600 / interval))  # an hour not recorded
    with History(path) as history:
        history.db.execute("PRAGMA synchronous=OFF")  # the benchmark's file, not a recorder's
        history.set_meta(hostname="bench", kernel="6.18", netns="srv")
        for i in range(samples):
            if i in gap:
                continue
            drops = dict.fromkeys(ids, 0)
            drops["cloud.allowance_exceeded"] = None
            if i % 300 < 5:
                drops["tcp.listen_overflow"] = 200 + i % 97
            if i % 977 == 0:
                drops["netfilter.drop"] = 12
            if busy:
                drops["udp.no_port"] = 1 + i % 7
            history.append(Interval(wall=T0 + (i + 1) * interval, seconds=interval, drops=drops))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3600,86400", help="samples per history, comma separated")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per sample")
    parser.add_argument("--busy", action="store_true", help="one finding drops in every sample")
    args = parser.parse_args()
    print(f"{'samples':>8} {'span':>8} {'write':>8} {'load':>7} {'html':>7} {'md':>7} {'cli':>7} "
          f"{'html size':>10} {'md size':>8}")
    with tempfile.TemporaryDirectory(prefix="dropdoc-bench-") as directory:
        for size in (int(s) for s in args.sizes.split(",")):
            path = f"{directory}/h{size}.db"
            _, write_s = timed(write_history, path, size, args.interval, args.busy)
            inputs, load_s = timed(load, path)
            page, html_s = timed(html.render, inputs)
            text, md_s = timed(markdown.render, inputs)
            command = [sys.executable, "-m", "dropdoc.cli", "report", path, "-o", f"{directory}/r.html"]
            _, cli_s = timed(subprocess.run, command, check=True, capture_output=True)
            print(f"{size:>8} {size * args.interval / 3600:>7.1f}h {write_s:>7.1f}s {load_s:>6.2f}s {html_s:>6.2f}s "
                  f"{md_s:>6.2f}s {cli_s:>6.2f}s {len(page) / 1024:>8.0f}KiB {len(text) / 1024:>6.1f}KiB")


if __name__ == "__main__":
    main()
