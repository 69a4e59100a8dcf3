"""Lab UDP receiver: a socket with a chosen receive buffer, read at a chosen rate.

--read-rate 0 reads as fast as it can, N reads N datagrams per second, -1 never reads
(the buffer fills and the kernel drops: udp.rcvbuf_full). --filter drop-all attaches a
classic BPF socket filter `ret #0` (SO_ATTACH_FILTER) that rejects every datagram before
it is queued (socket.filter_drop). --rcvbuf-force sets --rcvbuf with SO_RCVBUFFORCE (root:
not capped by net.core.rmem_max, which a child netns cannot raise). Prints "ready" once
bound; exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import sys
import time

from .server import set_process_name


SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # root: not capped by net.core.rmem_max
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k (0 = drop the packet)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def attach_drop_all_filter(sock: socket.socket) -> None:
    """Classic BPF program `ret #0`: the kernel drops every packet for this socket."""
    program = (_SockFilter * 1)(_SockFilter(BPF_RET_K, 0, 0, 0))
    fprog = _SockFprog(1, ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    # the kernel copies the program during the call; `program` stays alive until then
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def sink(host: str, port: int, rcvbuf: int, read_rate: float, max_seconds: float,
         drop_all: bool = False, force: bool = False) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if rcvbuf > 0:
            option = SO_RCVBUFFORCE if force else socket.SO_RCVBUF
            sock.setsockopt(socket.SOL_SOCKET, option, rcvbuf)
        if drop_all:
            attach_drop_all_filter(sock)
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
    parser.add_argument("--rcvbuf-force", action="store_true",
                        help="set --rcvbuf with SO_RCVBUFFORCE (root; a child netns cannot raise rmem_max)")
    parser.add_argument("--read-rate", type=float, default=0.0, help="datagrams/s; 0 unlimited; -1 never read")
    parser.add_argument("--filter", choices=("none", "drop-all"), default="none",
                        help="drop-all: attach a socket filter that rejects every datagram")
    parser.add_argument("--name", default="udp-sink")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    set_process_name(args.name)
    try:
        sink(args.host, args.port, args.rcvbuf, args.read_rate, args.max_seconds,
             drop_all=args.filter == "drop-all", force=args.rcvbuf_force)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
