"""Benchmark: a full snapshot of a namespace holding ~100k sockets, owners included.

Target (issue): "enumerating 100k sockets with owners < 1 s", and a full snapshot of a
namespace <= 2x the time of reading the same files raw in Python.

It builds a throwaway namespace (dropdoc.lab.topology.LabNet under the name perfbench-*:
removed on exit, also on errors and Ctrl-C), widens ip_local_port_range *inside that namespace only*, and
starts several holder processes there (this same script with --hold), each raising its
RLIMIT_NOFILE to the hard limit and opening its share of the sockets:
  - UDP sockets bound to 127.0.0.1 / 127.0.0.2 on ephemeral ports (bind port 0),
  - optionally TCP listeners on 127.0.0.1 ephemeral ports (--tcp N).
No packet is sent. Holders exit by themselves after --max-seconds, or when their stdin
closes (the parent ends). Then, inside that namespace, interleaved in one run:
  raw       the raw reads a snapshot does (see rawread.py): /proc/net files, sysctls,
            netlink dumps (sock_diag, rtnetlink), listing /proc and readlink() of every fd
  snapshot  dropdoc take_snapshot(netns, final=True): parse everything, map owners

Run as root:  /tmp/v/bin/python benchmarks/many_sockets.py [--sockets 100000] [--tcp 0]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import select
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rawread import BenchNet, interleaved, machine, median, plan_from, raw_reader  # noqa: E402

from dropdoc import netns as netns_mod  # noqa: E402
from dropdoc.snapshot import take_snapshot  # noqa: E402
from dropdoc.sources import SOURCES, ReadContext, read_source  # noqa: E402

# "Enumerating the sockets with their owners": the UDP socket table and the process scan.
OWNERS = ("udp_sockets", "tcp_listeners", "process_sockets")
PER_HOLDER_MAX = 19_000  # below the usual hard RLIMIT_NOFILE of 20000 (a few fds are in use)


# --- holder (runs inside the namespace) ----------------------------------------------------

def hold(udp: int, tcp: int, max_seconds: float) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets = []
    for i in range(udp):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1" if i % 2 == 0 else "127.0.0.2", 0))
        sockets.append(sock)
    for _ in range(tcp):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sockets.append(sock)
    print(json.dumps({"ready": len(sockets), "pid": os.getpid()}), flush=True)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:  # bounded; ends early when the parent closes stdin
        ready, _, _ = select.select([sys.stdin], [], [], min(1.0, max(deadline - time.monotonic(), 0)))
        if ready and not sys.stdin.read(1):
            break
    return 0


# --- parent -------------------------------------------------------------------------------

def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def start_holders(lab: BenchNet, udp: int, tcp: int, max_seconds: float) -> list[subprocess.Popen]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per = max(min(PER_HOLDER_MAX, hard - 100), 100)
    count = max(1, -(-(udp + tcp) // per))
    holders = []
    for u, t in zip(split(udp, count), split(tcp, count)):
        process = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, sys.executable, os.path.abspath(__file__),
             "--hold", "--udp", str(u), "--tcp", str(t), "--max-seconds", str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lab.processes.append(process)  # LabNet.close() ends it by this pid
        holders.append(process)
    opened = 0
    for process in holders:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("{"):
            raise SystemExit(f"holder {process.pid} failed: {process.stderr.read()[-500:] if process.poll() is not None else 'no answer'}")
        opened += json.loads(line)["ready"]
    print(f"{len(holders)} holder processes opened {opened} sockets in {lab.server_ns}")
    return holders


def per_source(netns: str, repeat: int = 5) -> dict[str, tuple[float, float]]:
    """(wall, cpu) median seconds of each source read on its own inside netns."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in SOURCES}
    for _ in range(repeat):
        with netns_mod.entered(netns):
            for name, source in SOURCES.items():
                ctx = ReadContext(netns=netns, sysfs_is_local=False)  # nothing shared between sources
                start, start_cpu = time.perf_counter(), time.thread_time()
                read_source(source, ctx)
                times[name].append((time.perf_counter() - start, time.thread_time() - start_cpu))
    return {name: (median([w for w, _ in values]), median([c for _, c in values])) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sockets", type=int, default=100_000, help="total sockets (UDP + TCP)")
    parser.add_argument("--tcp", type=int, default=0, help="how many of them are TCP listeners")
    parser.add_argument("--udp", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile one snapshot, print the top entries")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="holders exit by themselves after this")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args(argv)
    if args.hold:
        return hold(args.udp, args.tcp, args.max_seconds)
    if os.geteuid() != 0:
        print("many_sockets.py needs root (network namespace, /proc/*/fd of the holders)", file=sys.stderr)
        return 2
    tcp = min(args.tcp, args.sockets)
    udp = args.sockets - tcp
    with BenchNet() as lab:
        ns = lab.server_ns
        with netns_mod.entered(ns):  # per-namespace sysctl: gone with the namespace
            with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as handle:
                handle.write("1024 65535")
        holders = start_holders(lab, udp, tcp, args.max_seconds)
        lab.keep_name(holders[0].pid)
        plan = plan_from(ns, final=True)
        snap = take_snapshot(ns, final=True)
        owners = snap.data("process_sockets")
        udp_socks = snap.data("udp_sockets") or []
        listeners = snap.data("tcp_listeners") or []
        holder_pids = {p.pid for p in holders}
        owned = sum(1 for s in udp_socks if owners and owners.owner(s.inode) and owners.owner(s.inode)[0] in holder_pids)
        owned += sum(1 for s in listeners if owners and owners.owner(s.inode) and owners.owner(s.inode)[0] in holder_pids)
        print(f"snapshot sees {len(udp_socks)} UDP sockets, {len(listeners)} TCP listeners; "
              f"{owned} of them with their holder as owner")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            take_snapshot(ns, final=True)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        raw = raw_reader(plan, ns)
        lab.keep_name(holders[0].pid)
        cpu: dict[str, list[float]] = {}
        samples = interleaved({"raw": raw,
                               "snapshot": lambda: take_snapshot(ns, final=True, names=plan.sources),
                               "full": lambda: take_snapshot(ns, final=True),
                               "owners": lambda: take_snapshot(ns, final=True, names=OWNERS)},
                              args.rounds, args.repeat, cpu)
        sources = per_source(ns)
        for process in holders:
            lab.stop(process)
    base, same, full = median(samples["raw"]), median(samples["snapshot"]), median(samples["full"])
    base_cpu, same_cpu, full_cpu = median(cpu["raw"]), median(cpu["snapshot"]), median(cpu["full"])
    owners_wall, owners_cpu = median(samples["owners"]), median(cpu["owners"])
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "sockets": {"udp": udp, "tcp_listeners": tcp, "seen_udp": len(udp_socks),
                          "seen_tcp_listeners": len(listeners), "with_owner": owned},
              "holders": len(holders), "raw_reads": plan.describe(),
              "samples": len(samples["raw"]),
              "raw_s": round(base, 4), "snapshot_s": round(same, 4), "ratio": round(same / base, 2),
              "full_snapshot_s": round(full, 4), "left_out": plan.skipped,
              "sockets_with_owners_s": round(owners_wall, 4),
              "cpu_s": {"sockets_with_owners": round(owners_cpu, 4), "raw": round(base_cpu, 4), "snapshot": round(same_cpu, 4), "full_snapshot": round(full_cpu, 4)},
              "load_average": os.getloadavg()[0],
              "per_source_s": {k: [round(w, 4), round(c, 4)] for k, (w, c) in
                               sorted(sources.items(), key=lambda kv: -kv[1][0])}}
    print(f"machine: {result['machine']}")
    print(f"raw reads: {plan.describe()}")
    print(f"medians of {len(samples['raw'])} interleaved runs; wall (cpu of the reading thread); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"raw read      {base:8.3f} s ({base_cpu:.3f} s cpu)")
    print(f"snapshot      {same:8.3f} s ({same_cpu:.3f} s cpu)  ratio {same / base:5.2f}x raw "
          f"({same_cpu / base_cpu:.2f}x cpu)   [the {len(plan.sources)} sources the raw side replays]")
    print(f"sockets+owners {owners_wall:7.3f} s ({owners_cpu:.3f} s cpu)  {', '.join(OWNERS)} only   "
          f"target < 1 s: {'met' if owners_wall < 1.0 else 'NOT met'}")
    print(f"full snapshot {full:8.3f} s ({full_cpu:.3f} s cpu)  ratio {full / base:5.2f}x raw "
          f"({full_cpu / base_cpu:.2f}x cpu)   {'< 1 s' if full < 1.0 else '> 1 s'}")
    if plan.skipped:
        print("left out of the raw side: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()))
    print("per source, wall (cpu) ms: " + ", ".join(f"{k} {w * 1e3:.1f} ({c * 1e3:.1f})"
                                                    for k, (w, c) in result["per_source_s"].items()))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
