"""Lab TCP stream: a receiver that can stop reading, and a bounded sender.

    python -m dropdoc.lab.tcp_stream recv --port 8081 --read-after -1   # never reads
    python -m dropdoc.lab.tcp_stream send --target 198.18.0.1:8081 --bytes 4000000

The receiver accepts connections and reads them only after --read-after seconds (-1:
never): its receive buffer fills, TCP advertises a zero window and the sender waits and
sends window probes - flow control, nothing is lost. It prints "ready" once listening
and exits by itself after --max-seconds. The sender only connects to the lab range or
loopback, sends at most --bytes (capped) and stops after --max-seconds whatever happens;
it prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

from .server import set_process_name
from .targets import LAB_NETWORK, allowed_target, split_target

MAX_BYTES = 1 << 30
CHUNK = 65536


def receive(host: str, port: int, rcvbuf: int, read_after: float, max_seconds: float) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    selector = selectors.DefaultSelector()
    received = 0
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf > 0:  # inherited by accepted sockets
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        listener.bind((host, port))
        listener.listen(128)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ)
        print("ready", flush=True)
        start = time.monotonic()
        deadline = start + max_seconds
        conns: list[socket.socket] = []
        try:
            while time.monotonic() < deadline:
                reading = read_after >= 0 and time.monotonic() >= start + read_after
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    if sock is listener:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        conns.append(conn)
                        selector.register(conn, selectors.EVENT_READ)
                    elif reading:
                        try:
                            data = sock.recv(CHUNK)
                        except BlockingIOError:
                            continue
                        if not data:
                            selector.unregister(sock)
                            sock.close()
                        received += len(data)
                if not reading:
                    time.sleep(0.05)  # readable sockets stay readable: do not spin
        finally:
            for conn in conns:
                conn.close()
            selector.close()
    return received


def send(host: str, port: int, total: int, max_seconds: float) -> dict[str, float | int | str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    payload = b"s" * CHUNK
    sent = 0
    start = time.monotonic()
    deadline = start + max_seconds
    outcome = "complete"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(max(min(max_seconds, 5.0), 0.1))
        sock.connect((host, port))
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            while sent < total:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcome = "stopped at the time limit (peer window closed)"
                    break
                if not selector.select(timeout=min(remaining, 0.2)):
                    continue
                try:
                    sent += sock.send(payload[:min(CHUNK, total - sent)])
                except BlockingIOError:
                    continue
                except OSError as exc:
                    outcome = f"error: {exc.strerror or exc}"
                    break
    seconds = time.monotonic() - start
    return {"sent_bytes": sent, "requested_bytes": total, "outcome": outcome, "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    recv_p = sub.add_parser("recv", help="accept connections, read late or never")
    recv_p.add_argument("--host", default="0.0.0.0")
    recv_p.add_argument("--port", type=int, default=8081)
    recv_p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF bytes (0: autotuning)")
    recv_p.add_argument("--read-after", type=float, default=-1.0, help="start reading after S seconds; -1 never")
    recv_p.add_argument("--name", default="tcp-recv")
    recv_p.add_argument("--max-seconds", type=float, default=120.0)
    send_p = sub.add_parser("send", help="send a bounded amount of data")
    send_p.add_argument("--target", required=True, help="host:port")
    send_p.add_argument("--bytes", type=int, default=4_000_000)
    send_p.add_argument("--max-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.mode == "recv":
        set_process_name(args.name)
        try:
            receive(args.host, args.port, args.rcvbuf, args.read_after, min(args.max_seconds, 600.0))
        except KeyboardInterrupt:
            pass
        return 0
    host, port = split_target(args.target)
    if not allowed_target(host):
        print(f"refusing to send to {host}: only the lab range {LAB_NETWORK} or loopback", file=sys.stderr)
        return 2
    try:
        summary = send(host, port, max(0, min(args.bytes, MAX_BYTES)), min(args.max_seconds, 60.0))
    except OSError as exc:
        summary = {"error": f"connect: {exc.strerror or exc}"}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
