"""Benchmark: what tracing kfree_skb costs a flood of drops, and whether every drop is counted.

Two lab namespaces; the server drops UDP port 9100 with an nft rule that counts. One or
two Python senders in the client namespace send as fast as they can (bounded: --packets
per sender and --seconds per round). On a veth pair the receive path (and so the drop and
the tracer) runs on the sending CPU, so the senders' rate is the throughput measured.

Modes, interleaved round by round in one run (machine noise hits all alike):
  none            no tracer
  dropdoc         dropdoc's eBPF backend, key reason+location (what bpftrace does below)
  dropdoc-full    dropdoc's eBPF backend, key reason+location+proto+port+netns, netns filter
  bpftrace        `tracepoint:skb:kfree_skb { @[args->reason, args->location] = count(); }`
                  (skipped if bpftrace is not installed: apt-get install bpftrace)
  tracefs         dropdoc's tracefs fallback (text events parsed in Python)

Accounting = drops the tracer counted as NETFILTER_DROP / the nft rule counter's delta.
Run as root: .venv/bin/python benchmarks/trace_overhead.py [--rounds 15] [--seconds 2] [--senders 2]
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from dropdoc.lab.topology import SERVER_ADDRESS, LabNet
from dropdoc.trace import Tracer, tracefs

PORT = 9100
NFT_RULES = f"""table inet ddbench {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {PORT} counter drop
  }}
}}
"""
BPFTRACE_PROG = "tracepoint:skb:kfree_skb { @[args->reason, args->location] = count(); }"


class BenchNet(LabNet):
    """The lab topology under its own names: test fixtures running at the same time
    remove any new ddlab-* namespace they did not expect."""

    @property
    def server_ns(self) -> str:
        return f"ddbench-{self.tag}-srv"

    @property
    def client_ns(self) -> str:
        return f"ddbench-{self.tag}-cli"


    def close(self) -> None:
        names = list(self.created)
        super().close()
        for _ in range(3):  # `ip netns del` racing other `ip netns` users can leave a name
            listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            left = [n for n in names if n in listed.split()]
            if not left:
                return
            for name in left:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        print(f"warning: could not remove {left}", file=sys.stderr)


def nft_counter(lab: LabNet) -> int:
    ruleset = json.loads(lab.run(lab.server_ns, "nft", "-j", "list", "table", "inet", "ddbench"))
    for item in ruleset["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return expr["counter"]["packets"]
    raise RuntimeError("nft counter not found")


def flood(lab: LabNet, senders: int, packets: int, seconds: float) -> float:
    """Start the senders together; datagrams per second summed over them."""
    procs = [lab.spawn(lab.client_ns, "dropdoc.lab.udp_burst", "--target", f"{SERVER_ADDRESS}:{PORT}",
                       "--packets", str(packets), "--rate", "0", "--max-seconds", str(seconds))
             for _ in range(senders)]
    rate = 0.0
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 20)
        lab.processes.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(err)
        rate += json.loads(out)["rate_per_s"]
    return rate


class Bpftrace:
    def __init__(self, netfilter_drop: int) -> None:
        self.reason = netfilter_drop
        self.proc: subprocess.Popen | None = None
        self.startup_ms = 0.0

    def __enter__(self) -> Bpftrace:
        start = time.monotonic()
        self.proc = subprocess.Popen(["bpftrace", "-e", BPFTRACE_PROG], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "Attaching" not in line:
            raise RuntimeError(f"bpftrace did not attach: {line!r}")
        self.startup_ms = (time.monotonic() - start) * 1000
        return self

    def stop(self) -> int:
        """SIGINT makes bpftrace print its map; count NETFILTER_DROP entries."""
        assert self.proc is not None
        self.proc.send_signal(2)
        out, _ = self.proc.communicate(timeout=60)
        total = 0
        for reason, count in re.findall(r"^@\[(\d+), [^\]]*\]: (\d+)$", out, re.MULTILINE):
            if int(reason) == self.reason:
                total += int(count)
        return total

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def one_round(lab: LabNet, mode: str, args, reason_number: int) -> dict:
    before = nft_counter(lab)
    startup = None
    if mode == "none":
        rate = flood(lab, args.senders, args.packets, args.seconds)
        counted = None
    elif mode == "bpftrace":
        with Bpftrace(reason_number) as bt:
            startup = bt.startup_ms
            rate = flood(lab, args.senders, args.packets, args.seconds)
            counted = bt.stop()
    else:
        kwargs = {"dropdoc": dict(by=("reason", "location")),
                  "dropdoc-full": dict(by=("reason", "location", "proto", "port", "netns"), netns=lab.server_ns),
                  "tracefs": dict(by=("reason", "location"), backend="tracefs")}[mode]
        start = time.monotonic()
        with Tracer(**kwargs) as tracer:
            tracer.start()
            startup = (time.monotonic() - start) * 1000
            rate = flood(lab, args.senders, args.packets, args.seconds)
            time.sleep(0.2 if mode == "tracefs" else 0)
            result = tracer.stop()
        counted = result.count("NETFILTER_DROP")
        lost = result.lost
    dropped = nft_counter(lab) - before
    row = {"mode": mode, "rate": rate, "dropped": dropped, "counted": counted, "startup_ms": startup}
    if mode not in ("none", "bpftrace"):
        row["lost"] = lost
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--senders", type=int, default=2, choices=(1, 2))
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and sender (bounded)")
    parser.add_argument("--packets", type=int, default=3_000_000, help="per round and sender (bounded)")
    parser.add_argument("--no-tracefs", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (lab namespaces, BPF)", file=sys.stderr)
        return 2
    modes = ["none", "dropdoc", "dropdoc-full"]
    fs = None
    if shutil.which("bpftrace"):
        fs = tracefs.Tracefs.open()  # bpftrace's tracepoint probes read the format files
        modes.append("bpftrace")
    else:
        print("bpftrace not installed: column skipped (apt-get install bpftrace)", file=sys.stderr)
    if not args.no_tracefs:
        modes.append("tracefs")
    rows: list[dict] = []
    try:
        with BenchNet() as lab:
            lab.run(lab.server_ns, "nft", "-f", "-", stdin=NFT_RULES)
            with Tracer(by=("reason",)) as probe:  # the running kernel's number for NETFILTER_DROP
                reason_number = probe.backend.reasons.number("NETFILTER_DROP")
            flood(lab, 1, 50_000, 1.0)  # warm-up (ARP, caches, interpreter)
            for round_no in range(args.rounds):
                order = modes[round_no % len(modes):] + modes[:round_no % len(modes)]
                for mode in order:
                    row = one_round(lab, mode, args, reason_number)
                    row["round"] = round_no
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if fs is not None:
            fs.close()
    base_of = {r["round"]: r["rate"] for r in rows if r["mode"] == "none"}
    print(f"\nkernel {os.uname().release}, {os.cpu_count()} CPUs, {args.senders} sender(s), "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s; medians "
          f"('vs none': median of the per-round ratio to the untraced run of the same round)")
    print(f"{'mode':14} {'drops/s':>10} {'vs none':>8} {'accounting':>11} {'lost':>9} {'start ms':>9}")
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        rate = statistics.median(r["rate"] for r in mine)
        paired = statistics.median(r["rate"] / base_of[r["round"]] for r in mine)  # same round
        accounting = "-" if mode == "none" else \
            f"{statistics.median(r['counted'] / r['dropped'] for r in mine if r['dropped']):.3f}"
        lost = "-" if "lost" not in mine[0] else str(int(statistics.median(r["lost"] or 0 for r in mine)))
        startup = "-" if mine[0]["startup_ms"] is None else f"{statistics.median(r['startup_ms'] for r in mine):.0f}"
        print(f"{mode:14} {rate:10.0f} {paired:8.2f} {accounting:>11} {lost:>9} {startup:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
