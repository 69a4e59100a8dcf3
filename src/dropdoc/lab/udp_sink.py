"""Lab UDP receiver: a socket with a chosen receive buffer, read at a chosen rate.

--read-rate 0 reads as fast as it can, N reads N datagrams per second, -1 never reads
(the buffer fills and the kernel drops: udp.rcvbuf_full). Prints "ready" once bound;
exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from .server import set_process_name


def sink(host: str, port: int, rcvbuf: int, read_rate: float, max_seconds: float) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if rcvbuf > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
        sock.settimeout(0.2)
        print("ready", flush=True)
        interval = 1.0 / read_rate if read_rate > 0 else 0.0
        received = 0
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            if read_rate < 0:
                time.sleep(0.2)
                continue
            try:
                sock.recv(65535)
            except (socket.timeout, BlockingIOError):
                continue
            received += 1
            if interval:
                time.sleep(interval)
    return received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF bytes (0: kernel default)")
    parser.add_argument("--read-rate", type=float, default=0.0, help="datagrams/s; 0 unlimited; -1 never read")
    parser.add_argument("--name", default="udp-sink")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    set_process_name(args.name)
    try:
        sink(args.host, args.port, args.rcvbuf, args.read_rate, args.max_seconds)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
