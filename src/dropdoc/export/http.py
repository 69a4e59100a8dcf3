"""The exporter's HTTP side: where it may listen, and a server that cannot be swamped.

Listening: loopback only unless the user says --allow-remote. Drop counters name the
host's sockets, processes and namespaces; that is not for every network to read, and
Prometheus scraping the same host (or through a local proxy/agent) needs nothing more.

Why not prometheus_client's start_http_server: it starts one thread per connection
(1,000 concurrent scrapes = 1,000 threads) and encodes the registry for every request.
Here a fixed pool of `workers` threads answers requests with the cached encoding; while
all of them are busy the accept loop waits, so further connections wait in the kernel's
accept queue (`backlog`) instead of costing memory in this process. Responses are
HTTP/1.0 (connection closed after each), and a client that sends nothing is dropped after
`timeout` seconds, so idle connections cannot hold the pool for long.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from ..errors import DropdocError

log = logging.getLogger("dropdoc.serve")

DEFAULT_LISTEN = "127.0.0.1:9877"


class ListenRefused(DropdocError):
    """--listen names an address we will not (or cannot) listen on."""


@dataclass(frozen=True)
class ListenAddress:
    family: int
    host: str   # numeric address
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"http://{host}:{self.port}"


def split_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9877', '[::1]:9877', 'localhost:9877', ':9877' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ListenRefused(f"--listen {text!r}: write an IPv6 address as [::1]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ListenRefused(f"--listen {text!r}: expected HOST:PORT (IPv6 as [::1]:PORT)")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ListenRefused(f"--listen {text!r}: port must be a number 0-65535")
    return host, int(port_text)


def _resolve(host: str) -> tuple[int, str]:
    if host in ("", "*"):
        return socket.AF_INET, "0.0.0.0"  # what an empty host means to bind(): every address
    if host == "localhost":
        return socket.AF_INET, "127.0.0.1"  # never ask a resolver what localhost is
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ListenRefused(f"--listen: cannot resolve {host!r}: {exc.strerror or exc}") from None
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr[0]
    return (socket.AF_INET6 if address.version == 6 else socket.AF_INET), str(address)


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_listen(text: str, allow_remote: bool = False) -> ListenAddress:
    """Where to listen; ListenRefused for anything but loopback unless allow_remote."""
    host, port = split_listen(text)
    family, address = _resolve(host)
    if not allow_remote and not is_loopback(address):
        what = "every address" if ipaddress.ip_address(address).is_unspecified else "a non-loopback address"
        raise ListenRefused(f"--listen {text}: {address} is {what}; the exporter listens on loopback "
                            f"only (127.0.0.1, ::1) unless you add --allow-remote")
    return ListenAddress(family, address, port)


INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>dropdoc exporter</title></head>
<body><h1>dropdoc exporter</h1>
<p>Packet-drop metrics for Prometheus: <a href="/metrics">/metrics</a>.</p>
<p>Diagnose on this host with <code>dropdoc diagnose</code>.</p>
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 10.0  # seconds a client may take to send its request

    def version_string(self) -> str:
        return "dropdoc"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body, status, ctype = self.server.metrics(), 200, self.server.content_type
            except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
                log.error("collection failed: %s: %s", type(exc).__name__, exc)
                body, status, ctype = f"collection failed: {exc}\n".encode(), 500, "text/plain; charset=utf-8"
        elif path == "/":
            body, status, ctype = INDEX, 200, "text/html; charset=utf-8"
        else:
            body, status, ctype = b"not found: try /metrics\n", 404, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MetricsServer(socketserver.TCPServer):
    """A TCP server with a fixed pool of worker threads (see the module docstring)."""

    allow_reuse_address = True
    request_queue_size = 1024  # listen() backlog (the kernel caps it at net.core.somaxconn)

    def __init__(self, address: ListenAddress, metrics: Callable[[], bytes], content_type: str,
                 workers: int = 8) -> None:
        self.address_family = address.family
        self.metrics = metrics
        self.content_type = content_type
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dropdoc-http")
        try:
            super().__init__((address.host, address.port), _Handler)
        except OSError as exc:
            self._pool.shutdown(wait=False)
            raise ListenRefused(f"cannot listen on {address.url}: {exc.strerror or exc}") from None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        # Wait for a free worker here, in the accept loop: excess connections stay in the
        # kernel's accept queue instead of piling up as sockets and tasks in this process.
        self._slots.acquire()
        try:
            self._pool.submit(self._work, request, client_address)
        except BaseException:
            self._slots.release()
            self.shutdown_request(request)
            raise

    def _work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as exc:  # noqa: BLE001 - a client that went away is routine
            log.debug("request from %s: %s: %s", client_address, type(exc).__name__, exc)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
