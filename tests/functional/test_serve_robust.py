"""`dropdoc serve` on an operator's bad day: a served namespace deleted and re-created under
the same name, SIGHUP, a stderr whose reader left. Namespaces are this run's (no_leftovers),
traffic is a bounded handful of UDP datagrams to 127.0.0.1 inside the test's namespace."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .conftest import RUN_PREFIX, requires_root
from .test_serve import SERVE, serve  # noqa: F401 - the fixture

pytestmark = [requires_root, pytest.mark.functional]

# 5 datagrams to a port nothing listens on, inside the namespace: Udp.NoPorts += 5.
NO_PORT = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "[s.sendto(b'x', ('127.0.0.1', 9)) for _ in range({count})]")


def new_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def no_port_drops(name: str, count: int) -> None:
    subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", NO_PORT.format(count=count)],
                   check=True, timeout=30)


def test_namespace_deleted_then_recreated_is_absent_then_a_new_baseline(serve, no_leftovers):  # noqa: F811
    name = f"ddlab-{RUN_PREFIX}-sgone"
    new_namespace(name)
    try:
        served = serve("--netns", name, "--no-host", "--cache-seconds", "0")
        metric = {"name": "dropdoc_drops_total", "netns": name, "finding": "udp.no_port"}
        start = served.value(**metric)
        no_port_drops(name, 5)
        assert served.value(**metric) == start + 5
        subprocess.run(["ip", "netns", "del", name], check=True)
        assert served.value(**metric) is None                      # absent while gone, not 0
        assert served.value("dropdoc_source_up", netns=name, source="snmp") == 0
        new_namespace(name)
        no_port_drops(name, 8)   # another namespace's counters: 8 > the old 5, not "+3 drops"
        assert served.value(**metric) == start + 5
        no_port_drops(name, 2)
        assert served.value(**metric) == start + 7
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert served.stop() == 0
    warnings = [line for line in served.lines if "WARNING" in line]
    assert len(warnings) == 1 and "no network namespace named" in warnings[0], warnings  # one line, not one a source


def test_sighup_and_a_closed_stderr_stop_cleanly():
    hup = subprocess.Popen([*SERVE, "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert "listening on" in hup.stderr.readline()
        hup.send_signal(signal.SIGHUP)
        assert hup.wait(15) == 0
        assert "stopped (SIGHUP)" in hup.stderr.read()
    finally:
        if hup.poll() is None:
            hup.kill()
            hup.wait()
    # `dropdoc serve 2>&1 | head -1`: the reader of stderr is gone when it stops.
    piped = subprocess.Popen([*SERVE, "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert "listening on" in piped.stderr.readline()
        piped.stderr.close()
        piped.send_signal(signal.SIGTERM)
        assert piped.wait(15) == 0
    finally:
        if piped.poll() is None:
            piped.kill()
            piped.wait()
