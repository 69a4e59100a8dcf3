"""The lab network: a server and a client namespace joined by a veth pair - or, with
router=True, a client - router - server chain of three namespaces and two veth pairs
(forwarding on in the router) for network-layer scenarios.

Everything the lab creates is owned by one LabNet and removed in `close()`, which the
context manager calls on normal exit, on errors and on Ctrl-C; the CLI turns SIGTERM
into SystemExit so that path is taken too. Processes are ended by the PIDs we started,
namespaces by the names we made (a random tag keeps parallel runs apart).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import DropdocError, NeedsPrivilege

SERVER_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX = 30
# With a router: server 198.18.0.1/30 - 198.18.0.2/30 router 198.18.1.1/30 - 198.18.1.2/30 client.
ROUTER_SERVER_ADDRESS = "198.18.0.2"
ROUTER_CLIENT_ADDRESS = "198.18.1.1"
ROUTED_CLIENT_ADDRESS = "198.18.1.2"
LAB_PREFIX = "198.18.0.0/15"  # the whole lab range: routed via the router from both ends


class LabError(DropdocError):
    """The lab could not be built (missing tool, no root, kernel refused)."""


# Host-wide sysctls are one value for the whole machine: two lab runs (parallel test
# sessions) that change the same key in overlapping windows would each save the other's
# lowered value as "the original" and one of them would restore it. A lab holds this lock
# from its first host change until it has put every value back.
HOST_LOCK = "/run/lock/dropdoc-lab-host-sysctls.lock"
HOST_LOCK_WAIT = 180.0


def _take_host_lock(wait: float) -> int:
    path = HOST_LOCK if os.path.isdir(os.path.dirname(HOST_LOCK)) else "/tmp/dropdoc-lab-host-sysctls.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LabError(f"another lab run has been changing host-wide sysctls for {wait:g} s "
                               f"(lock {path}): try again when it is done") from None
            time.sleep(0.1)


@contextmanager
def host_settings_lock(wait: float = HOST_LOCK_WAIT) -> Iterator[None]:
    """Hold the lab's host-sysctl lock: host values read inside are not a lab's temporary ones."""
    fd = _take_host_lock(wait)
    try:
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise LabError("the lab needs iproute2 (`ip`): run scripts/install.sh") from None
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise LabError(f"ip {' '.join(args)}: {message}")


def _mac(ns: str, ifname: str) -> str:
    result = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "dev", ifname],
                            capture_output=True, text=True, timeout=10)
    fields = result.stdout.split()
    if result.returncode != 0 or "link/ether" not in fields:
        raise LabError(f"no MAC address for {ifname} in {ns}: {result.stderr.strip()[-200:]}")
    return fields[fields.index("link/ether") + 1]


@dataclass
class LabNet:
    # DROPDOC_LAB_TAG_PREFIX lets a test run tell its own namespaces from other runs' ones.
    tag: str = field(default_factory=lambda: (os.environ.get("DROPDOC_LAB_TAG_PREFIX", "")[:4]
                                              + secrets.token_hex(3)))
    processes: list[subprocess.Popen] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    # Host-wide sysctls a scenario had to change (global keys), restored in close().
    host_sysctls_saved: dict[str, object] = field(default_factory=dict)
    router: bool = False  # build client - router - server instead of client - server
    _host_lock: int | None = field(default=None, repr=False)  # held while host sysctls are changed

    @property
    def server_ns(self) -> str:
        return f"ddlab-{self.tag}-srv"

    @property
    def client_ns(self) -> str:
        return f"ddlab-{self.tag}-cli"

    @property
    def router_ns(self) -> str:
        """Only with router=True."""
        return f"ddlab-{self.tag}-rtr"

    @property
    def client_address(self) -> str:
        return ROUTED_CLIENT_ADDRESS if self.router else CLIENT_ADDRESS

    def namespace(self, side: str) -> str:
        """The namespace of a side: "server", "client" or (router=True) "router"."""
        names = {"server": self.server_ns, "client": self.client_ns}
        if self.router:
            names["router"] = self.router_ns
        if side not in names:
            raise LabError(f"no {side!r} namespace in this lab" + ("" if self.router else " (router=False)"))
        return names[side]

    def __enter__(self) -> "LabNet":
        if os.geteuid() != 0:
            raise NeedsPrivilege("the lab creates network namespaces: run as root")
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        if self.router:
            self._build_routed()
            return
        srv_if, cli_if = self.server_if, self.client_if
        for ns in (self.server_ns, self.client_ns):
            _ip("netns", "add", ns)
            self.created.append(ns)
        # Create the pair inside the server namespace so nothing ever exists on the host.
        _ip("-n", self.server_ns, "link", "add", srv_if, "type", "veth", "peer", "name", cli_if,
            "netns", self.client_ns)
        for ns, ifname, address in ((self.server_ns, srv_if, SERVER_ADDRESS),
                                    (self.client_ns, cli_if, CLIENT_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self._pin_neighbours((self.server_ns, srv_if, SERVER_ADDRESS), (self.client_ns, cli_if, CLIENT_ADDRESS))

    def _pin_neighbours(self, one: tuple[str, str, str], other: tuple[str, str, str]) -> None:
        """Permanent ARP entries between the two ends of a link: a burst in the first
        milliseconds would otherwise overflow the unresolved-neighbour queue while ARP is
        answered, and a scenario about something else would lose a few packets to it."""
        for (ns, ifname, _), (peer_ns, peer_if, peer_address) in ((one, other), (other, one)):
            _ip("-n", ns, "neigh", "replace", peer_address, "lladdr", _mac(peer_ns, peer_if),
                "dev", ifname, "nud", "permanent")

    def _build_routed(self) -> None:
        for ns in (self.server_ns, self.router_ns, self.client_ns):
            _ip("netns", "add", ns)
            self.created.append(ns)
        # Both pairs are created inside a lab namespace: nothing ever exists on the host.
        _ip("-n", self.server_ns, "link", "add", self.server_if, "type", "veth", "peer", "name",
            self.router_server_if, "netns", self.router_ns)
        _ip("-n", self.client_ns, "link", "add", self.client_if, "type", "veth", "peer", "name",
            self.router_client_if, "netns", self.router_ns)
        for ns, ifname, address in ((self.server_ns, self.server_if, SERVER_ADDRESS),
                                    (self.router_ns, self.router_server_if, ROUTER_SERVER_ADDRESS),
                                    (self.router_ns, self.router_client_if, ROUTER_CLIENT_ADDRESS),
                                    (self.client_ns, self.client_if, ROUTED_CLIENT_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self._pin_neighbours((self.server_ns, self.server_if, SERVER_ADDRESS),
                             (self.router_ns, self.router_server_if, ROUTER_SERVER_ADDRESS))
        self._pin_neighbours((self.client_ns, self.client_if, ROUTED_CLIENT_ADDRESS),
                             (self.router_ns, self.router_client_if, ROUTER_CLIENT_ADDRESS))
        # The lab range only (no default route): a scenario can never reach beyond the lab.
        _ip("-n", self.server_ns, "route", "add", LAB_PREFIX, "via", ROUTER_SERVER_ADDRESS)
        _ip("-n", self.client_ns, "route", "add", LAB_PREFIX, "via", ROUTER_CLIENT_ADDRESS)
        from .. import netns as netns_mod  # late: keep topology importable without ctypes setup

        with netns_mod.entered(self.router_ns), open("/proc/sys/net/ipv4/ip_forward", "w",
                                                     encoding="utf-8") as handle:
            handle.write("1")

    @property
    def server_if(self) -> str:
        return f"dd{self.tag}s"

    @property
    def client_if(self) -> str:
        return f"dd{self.tag}c"

    @property
    def router_server_if(self) -> str:
        """The router's end of the server link (router=True)."""
        return f"dd{self.tag}r"

    @property
    def router_client_if(self) -> str:
        """The router's end of the client link (router=True)."""
        return f"dd{self.tag}q"

    def run(self, ns: str, *command: str, stdin: str | None = None) -> str:
        """Run a setup command (nft, tc, ip, ...) inside namespace ns; LabError on failure."""
        try:
            result = subprocess.run(["ip", "netns", "exec", ns, *command], input=stdin,
                                    capture_output=True, text=True, timeout=20)
        except FileNotFoundError:
            raise LabError("the lab needs iproute2 (`ip`): run scripts/install.sh") from None
        if result.returncode != 0:
            raise LabError(f"{' '.join(command)} in {ns}: {result.stderr.strip()[-300:] or 'failed'}")
        return result.stdout

    def set_host_sysctl(self, key: str, value: int) -> None:
        """Change a global (host-wide) sysctl for the scenario; close() restores it."""
        from ..fix.sysctl import write_sysctl  # late: fix imports the netns helpers

        if self._host_lock is None:
            self._host_lock = _take_host_lock(HOST_LOCK_WAIT)
        old = write_sysctl(key, value, None)
        self.host_sysctls_saved.setdefault(key, old)

    def spawn(self, ns: str, module: str, *args: str) -> subprocess.Popen:
        """Start `python -m module args` inside namespace ns (ip netns exec execs in place,
        so the Popen pid is the program's pid)."""
        process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", module, *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in list(self.processes):
            try:
                self.stop(process)
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()
        self._restore_host_sysctls()
        if self._host_lock is not None and not self.host_sysctls_saved:
            os.close(self._host_lock)  # everything is back: other lab runs may change them now
            self._host_lock = None

    def _restore_host_sysctls(self) -> None:
        path_of = lambda key: "/proc/sys/" + key.replace(".", "/")  # noqa: E731
        for key, old in list(self.host_sysctls_saved.items()):
            value = " ".join(map(str, old)) if isinstance(old, tuple) else str(old)
            try:
                with open(path_of(key), "w", encoding="utf-8") as handle:
                    handle.write(value)
                del self.host_sysctls_saved[key]
            except OSError as exc:
                print(f"dropdoc lab: could not restore {key}={value}: {exc}", file=sys.stderr)
