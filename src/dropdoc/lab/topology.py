"""The lab network: a server and a client namespace joined by a veth pair.

Everything the lab creates is owned by one LabNet and removed in `close()`, which the
context manager calls on normal exit, on errors and on Ctrl-C; the CLI turns SIGTERM
into SystemExit so that path is taken too. Processes are ended by the PIDs we started,
namespaces by the names we made (a random tag keeps parallel runs apart).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from ..errors import DropdocError, NeedsPrivilege

SERVER_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX = 30


class LabError(DropdocError):
    """The lab could not be built (missing tool, no root, kernel refused)."""


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise LabError("the lab needs iproute2 (`ip`): run scripts/install.sh") from None
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise LabError(f"ip {' '.join(args)}: {message}")


@dataclass
class LabNet:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    processes: list[subprocess.Popen] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    # Host-wide sysctls a scenario had to change (global keys), restored in close().
    host_sysctls_saved: dict[str, object] = field(default_factory=dict)

    @property
    def server_ns(self) -> str:
        return f"ddlab-{self.tag}-srv"

    @property
    def client_ns(self) -> str:
        return f"ddlab-{self.tag}-cli"

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

    @property
    def server_if(self) -> str:
        return f"dd{self.tag}s"

    @property
    def client_if(self) -> str:
        return f"dd{self.tag}c"

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
