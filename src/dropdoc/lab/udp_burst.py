"""Lab UDP sender: a bounded burst of datagrams, then a JSON summary on stdout.

Only sends to the lab range or loopback, at most --packets datagrams and for at most
--max-seconds. --rate 0 sends as fast as one Python process can (~200-400k/s here).
--df sets IP_PMTUDISC_DO (don't fragment) for MTU scenarios. --fresh-source sends every
datagram from a new socket (a new ephemeral source port), so each one is a new flow for
connection tracking (conntrack-table scenarios). --cpu N runs the sender on CPU N only
(softnet scenarios: the sender on one CPU, RPS steering the receive side to another, so
the receiving CPU's backlog is fed across CPUs as a NIC would, not drained inline).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from .targets import LAB_NETWORK, allowed_target, split_target

MAX_PACKETS = 50_000_000
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2


def burst(host: str, port: int, packets: int, size: int, rate: float, max_seconds: float,
          dont_fragment: bool = False, fresh_source: bool = False) -> dict[str, float | int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    payload = b"d" * size
    sent = errors = 0
    start = time.monotonic()
    deadline = start + max_seconds
    interval = 1.0 / rate if rate > 0 else 0.0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if dont_fragment and family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.connect((host, port))
        while sent + errors < packets:
            now = time.monotonic()
            if now >= deadline:
                break
            if interval and now < start + (sent + errors) * interval:
                time.sleep(min(interval, deadline - now))
                continue
            # A batch between clock checks keeps the rate up without losing the time bound.
            for _ in range(min(256 if not interval else 1, packets - sent - errors)):
                try:
                    if fresh_source:
                        with socket.socket(family, socket.SOCK_DGRAM) as one:
                            one.connect((host, port))
                            one.send(payload)
                    else:
                        sock.send(payload)
                    sent += 1
                except OSError:  # ECONNREFUSED from an earlier ICMP, ENOBUFS, EMSGSIZE ...
                    errors += 1
    seconds = time.monotonic() - start
    # started_at (wall clock): several senders of one load can be put on a common time line
    # (their combined rate is what arrives; sim validation needs it)
    return {"sent": sent, "errors": errors, "seconds": round(seconds, 3),
            "rate_per_s": round(sent / seconds, 1) if seconds > 0 else 0.0,
            "started_at": round(time.time() - seconds, 6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--packets", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--rate", type=float, default=0.0, help="datagrams per second (0: as fast as possible)")
    parser.add_argument("--df", action="store_true", help="set don't-fragment")
    parser.add_argument("--fresh-source", action="store_true",
                        help="send each datagram from a new socket (a new source port: a new flow)")
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--cpu", type=int, default=None, help="run on this CPU only (sched_setaffinity)")
    args = parser.parse_args(argv)
    host, port = split_target(args.target)
    if not allowed_target(host):
        print(f"refusing to send to {host}: only the lab range {LAB_NETWORK} or loopback", file=sys.stderr)
        return 2
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (OSError, ValueError) as exc:  # no such CPU (offline, cpuset): run unpinned
            print(f"not pinned to CPU {args.cpu}: {exc}", file=sys.stderr)
    summary = burst(host, port, min(args.packets, MAX_PACKETS), max(0, min(args.size, 65000)),
                    args.rate, min(args.max_seconds, 60.0), args.df, args.fresh_source)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
