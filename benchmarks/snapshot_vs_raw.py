"""Benchmark: a dropdoc snapshot vs reading the same kernel data raw in Python.

Target (issue): "full snapshot of a namespace <= 2x the time of reading the same files
raw in Python". The raw side is derived from what the snapshot reads (rawread.py): the
same /proc/net and /proc/sys files, the same /sys files or netlink dumps (inside a named
namespace /sys does not follow setns, so link statistics come from rtnetlink: those dumps
are reads too), the same directory listings and, for a full snapshot, the same /proc/*/fd
scan (readlink of every fd) that maps sockets to processes. The raw side enters the
namespace the same way (setns) and only skips parsing and building results.

Two targets, each in two depths, interleaved in one run so machine noise hits both sides:
  host       the initial network namespace (this machine as it is)
  namespace  a throwaway namespace (perfbench-*, removed at exit) with a veth pair, a TCP
             listener and two UDP sockets held by one helper process
  counters   take_snapshot(final=False): what both snapshots of a window read
  full       take_snapshot(final=True): + the process scan and the final-only sources
A source whose raw answers have no plain-read equivalent (ethtool ioctls) is left out of
the like-for-like ratio and the full snapshot with it is shown as well.

Run as root:  /tmp/v/bin/python benchmarks/snapshot_vs_raw.py [--rounds 30 --repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rawread import BenchNet, interleaved, machine, median, per_source_costs, plan_from, raw_reader  # noqa: E402

from dropdoc.snapshot import take_snapshot  # noqa: E402

HELPER = """
import socket, sys, select, time
tcp = socket.socket(); tcp.bind(("198.18.0.1", 8080)); tcp.listen(128)
udp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
udp[0].bind(("198.18.0.1", 9000)); udp[1].bind(("127.0.0.1", 0))
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    r, _, _ = select.select([sys.stdin], [], [], 1.0)
    if r and not sys.stdin.read(1):
        break
"""


def compare(label: str, netns: str | None, rounds: int, repeat: int, costs: dict) -> list[dict]:
    rows = []
    for depth, final in (("counters", False), ("full", True)):
        plan = plan_from(netns, final=final)
        raw = raw_reader(plan, netns)
        cpu: dict[str, list[float]] = {}
        sides = {"raw": raw,
                 "snapshot": lambda: take_snapshot(netns, final=final, names=plan.sources)}
        if plan.skipped:
            sides["all sources"] = lambda: take_snapshot(netns, final=final)
        samples = interleaved(sides, rounds, repeat, cpu)
        if final:
            costs[label] = per_source_costs(plan, netns)
        base, base_cpu = median(samples["raw"]), median(cpu["raw"])
        for side in sides:
            if side == "raw":
                continue
            wall, used = median(samples[side]), median(cpu[side])
            rows.append({"target": label, "depth": depth, "side": side, "reads": plan.describe(),
                         "sources": len(plan.sources) if side == "snapshot" else None,
                         "left_out": plan.skipped if side == "snapshot" else {},
                         "raw_ms": round(base * 1e3, 3), "snapshot_ms": round(wall * 1e3, 3),
                         "ratio": round(wall / base, 2), "raw_cpu_ms": round(base_cpu * 1e3, 3),
                         "snapshot_cpu_ms": round(used * 1e3, 3), "cpu_ratio": round(used / base_cpu, 2),
                         "samples": len(samples[side])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the process scan and the namespace need it", file=sys.stderr)
        return 2
    costs: dict[str, dict] = {}
    rows = compare("host", None, args.rounds, args.repeat, costs)
    with BenchNet() as lab:
        helper = subprocess.Popen(["ip", "netns", "exec", lab.server_ns, sys.executable, "-c", HELPER, "600"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lab.processes.append(helper)  # ended by pid in LabNet.close()
        ready, _, _ = select.select([helper.stdout], [], [], 15)
        if not ready or helper.stdout.readline().strip() != "ready":
            raise SystemExit("helper did not start")
        lab.keep_name(helper.pid)
        rows += compare("namespace", lab.server_ns, args.rounds, args.repeat, costs)
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'target':10} {'depth':9} {'side':12} {'raw ms':>8} {'snap ms':>8} {'ratio':>6} "
          f"{'raw cpu':>8} {'snap cpu':>8} {'cpu ratio':>9}  reads")
    for row in rows:
        print(f"{row['target']:10} {row['depth']:9} {row['side']:12} {row['raw_ms']:8.3f} {row['snapshot_ms']:8.3f} "
              f"{row['ratio']:5.2f}x {row['raw_cpu_ms']:8.3f} {row['snapshot_cpu_ms']:8.3f} {row['cpu_ratio']:8.2f}x  "
              f"{row['reads']}")
    left = {k: v for row in rows for k, v in row["left_out"].items()}
    if left:
        print("left out of the raw side (and of the 'snapshot' row): "
              + "; ".join(f"{k}: {v}" for k, v in sorted(left.items())))
    for target, table in costs.items():
        print(f"per source in {target} (median ms, raw -> dropdoc; cpu in brackets), costliest first:")
        for name, c in sorted(table.items(), key=lambda kv: -kv[1]["dropdoc_ms"]):
            print(f"  {name:20} {c['raw_ms']:7.3f} -> {c['dropdoc_ms']:7.3f}   "
                  f"({c['raw_cpu_ms']:.3f} -> {c['dropdoc_cpu_ms']:.3f})")
    if args.json:
        print(json.dumps({"rows": rows, "per_source": costs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
