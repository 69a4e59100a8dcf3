"""`dropdoc serve`: the Prometheus exporter (library: dropdoc.export).

SIGTERM, SIGINT and SIGHUP (the terminal closed; there is no configuration to reload)
stop it cleanly: the server shut down, the tracer detached, exit 0. Status lines go to
stderr; a stderr that is gone (`dropdoc serve 2>&1 | head -1`) never changes the outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace

import click

from ..cli import friendly_errors

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@click.command("serve")
@click.option("--listen", default="127.0.0.1:9877", show_default=True, metavar="HOST:PORT",
              help="address to serve /metrics on (IPv6 as [::1]:PORT, port 0 = any free port)")
@click.option("--allow-remote", is_flag=True,
              help="allow a non-loopback --listen address (0.0.0.0, ::, a public IP)")
@click.option("--netns", "netns", multiple=True, metavar="NAME",
              help="also serve this network namespace (as in `ip netns list`); repeatable")
@click.option("--host/--no-host", "host", default=True, show_default=True,
              help="serve the exporter's own (host) namespace, label netns=\"\"")
@click.option("--trace", is_flag=True,
              help="keep a kfree_skb tracer attached: dropdoc_trace_drops_total by drop reason (root)")
@click.option("--cache-seconds", default=1.0, show_default=True, type=click.FloatRange(0, 60),
              help="scrapes within this many seconds of a collection share it")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64),
              help="threads answering HTTP requests (more connections wait in the accept queue)")
@click.option("-v", "--verbose", is_flag=True, help="log every request")
@friendly_errors
def command(listen: str, allow_remote: bool, netns: tuple[str, ...], host: bool, trace: bool,
            cache_seconds: float, workers: int, verbose: bool) -> None:
    """Prometheus exporter: drop counters per finding, listen queues, source health."""
    from ..errors import DropdocError
    from ..export.http import MetricsServer, parse_listen
    from ..export.prometheus import CONTENT_TYPE, Exporter
    from ..netns import netns_path

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="dropdoc serve: %(levelname)s %(message)s")
    address = parse_listen(listen, allow_remote)
    for name in netns:
        netns_path(name)  # UnknownNetns now, not at the first scrape
    namespaces = ([None] if host else []) + list(dict.fromkeys(netns))
    if not namespaces:
        raise click.UsageError("--no-host needs at least one --netns")

    exporter = Exporter(namespaces, trace=trace, cache_seconds=cache_seconds)
    received: list[int] = []

    def on_signal(signum, frame):
        # Only a flag: Event.set() in a handler can deadlock on the lock the interrupted
        # main thread holds inside Event.wait().
        received.append(signum)

    # Bind first: a port in use is the likeliest failure and costs nothing to report.
    server = MetricsServer(address, exporter.metrics, CONTENT_TYPE, workers=workers)
    previous = {sig: signal.signal(sig, on_signal) for sig in EXIT_SIGNALS}
    try:
        for sample in exporter.start():
            if not sample.reachable:  # e.g. no privilege to enter it: say so now, do not serve blind
                raise DropdocError(sample.errors[0])
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                  name="dropdoc-accept", daemon=True)
        thread.start()
        labels = ", ".join(ns or "host" for ns in namespaces)
        tracing = "off" if not trace else ("on" if exporter.tracer and exporter.tracer.up else "unavailable")
        _note(f"dropdoc serve: listening on {replace(address, port=server.port).url}/metrics "
              f"(namespaces: {labels}; trace: {tracing})")
        while not received:
            time.sleep(0.5)  # a signal interrupts the sleep and runs on_signal
        server.shutdown()
        thread.join(timeout=15)
    finally:
        server.server_close()
        traced = exporter.tracer is not None and exporter.tracer.up
        exporter.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    name = signal.Signals(received[0]).name if received else "?"
    _note(f"dropdoc serve: stopped ({name})" + (", tracer detached" if traced else ""))


def _note(text: str) -> None:
    try:
        click.echo(text, err=True)
    except OSError:  # stderr closed (a pipe whose reader left, a terminal gone)
        # Point fd 2 at /dev/null: what is still buffered (a log line, this note) would
        # otherwise fail again when the interpreter flushes stderr at exit (status 120).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
