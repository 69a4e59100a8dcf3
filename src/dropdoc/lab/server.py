"""Lab server: listens with a chosen backlog and accepts at a chosen rate, then exits.

Run inside the lab's server namespace. It names itself (prctl PR_SET_NAME) so the
diagnosis can show a real process name, as for the reference case's "payments" service.
Bounded: it exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import sys
import time

PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def serve(host: str, port: int, backlog: int, accept_rate: float, max_seconds: float) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
        listener.settimeout(0.2)
        print("ready", flush=True)
        interval = 1.0 / accept_rate if accept_rate > 0 else 0.0
        accepted = 0
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except (socket.timeout, BlockingIOError):
                continue
            conn.close()
            accepted += 1
            if interval:
                time.sleep(interval)
    return accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--accept-rate", type=float, default=0.0, help="accepts per second (0: unlimited)")
    parser.add_argument("--name", default="payments")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    set_process_name(args.name)
    try:
        serve(args.host, args.port, args.backlog, args.accept_rate, args.max_seconds)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
