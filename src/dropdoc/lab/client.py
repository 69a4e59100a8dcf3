"""Lab client: a bounded burst of TCP connections, then a JSON summary on stdout.

Safety: it only connects to the lab's own address range (198.18.0.0/15, RFC 2544
benchmarking addresses that the lab puts on its veth pair) or to loopback, opens at most
--connections sockets and stops after --max-seconds whatever happens.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import sys
import time

from .targets import LAB_NETWORK, allowed_target, split_target

MAX_CONNECTIONS = 5000


def burst(host: str, port: int, connections: int, rate: float, max_seconds: float) -> dict[str, int]:
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, float] = {}
    established: list[socket.socket] = []
    failed = started = 0
    start = time.monotonic()
    deadline = start + max_seconds
    interval = 1.0 / rate if rate > 0 else 0.0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        while time.monotonic() < deadline and (started < connections or pending):
            now = time.monotonic()
            while started < connections and now >= start + started * interval:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((host, port))
                started += 1
                if code in (0, errno.EINPROGRESS):
                    pending[sock] = now
                    selector.register(sock, selectors.EVENT_WRITE)
                else:
                    failed += 1
                    sock.close()
            for key, _ in selector.select(timeout=0.005):
                sock = key.fileobj
                selector.unregister(sock)
                del pending[sock]
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    established.append(sock)
                else:
                    failed += 1
                    sock.close()
        timed_out = len(pending)
    finally:
        for sock in list(pending) + established:
            sock.close()
        selector.close()
    return {"started": started, "connected": len(established), "failed": failed,
            "timed_out": timed_out, "seconds": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--rate", type=float, default=400.0, help="new connections per second")
    parser.add_argument("--max-seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    host, port = split_target(args.target)
    if not allowed_target(host):
        print(f"refusing to send to {host}: only the lab range {LAB_NETWORK} or loopback", file=sys.stderr)
        return 2
    connections = min(args.connections, MAX_CONNECTIONS)
    summary = burst(host, int(port), connections, args.rate, min(args.max_seconds, 60.0))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
