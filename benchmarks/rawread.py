"""The raw-reading baseline the benchmarks compare a dropdoc snapshot against.

"Reading the same files raw in Python" is derived from the snapshot itself: every source
is read once through a context that notes each read it asks for - also the ones that fail,
such as a sysctl this kernel or namespace lacks - and each raw answer it records (the keys
bundles use):

  proc/... , sys/...            -> open() + read() of that file, bytes, no decoding
  listdir/...                   -> os.listdir() of that directory
  netlink/<proto>-<type>-<hex>  -> the same netlink dump request, recv() until NLMSG_DONE,
                                   no parsing beyond finding the end of the dump
  json/process_sockets          -> the raw scan an `ss -p` does: list /proc, readlink()
                                   each /proc/<pid>/ns/net (the snapshot skips processes of
                                   other namespaces, so does this), list /proc/<pid>/fd,
                                   readlink() every fd, read comm of each process that
                                   holds a socket; no dropdoc code involved
  json/sockstat/host/<key>      -> pread() of /proc/sys/<key> through an fd opened outside
                                   the namespace (what sources/sockstat.py does)
  json/sockstat/page_size       -> nothing (sysconf, not a read)

so the baseline follows whatever sources are registered (other areas add sources) and
reads exactly what the snapshot read, nothing more, nothing less. Only the parsing,
data building and error handling are left out: that is what the ratio measures.
A source whose answers have no raw equivalent (ethtool ioctls, recorded as JSON) is left
out of the like-for-like comparison and timed on its own.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from dropdoc import netns as netns_mod
from dropdoc.lab.topology import LabNet
from dropdoc.sources import SOURCES, ReadContext, read_source

_NLMSG = struct.Struct("=IHHII")
NLMSG_DONE, NLMSG_ERROR = 3, 2


@dataclass
class RawPlan:
    files: list[str]
    dirs: list[str]
    netlink: list[tuple[int, int, bytes]]
    process_scan: bool
    host_files: list[str]  # read through fds opened outside the namespace (host-wide limits)
    sources: list[str]     # the sources whose reads this plan replays
    skipped: dict[str, str]  # sources left out of the comparison: why
    host_reads: list[str] = field(default_factory=list)  # opened and read outside the namespace
    per_source: dict[str, "RawPlan"] = field(default_factory=dict)  # each source's own plan

    def describe(self) -> str:
        return (f"{len(self.files) + len(self.host_files) + len(self.host_reads)} files, {len(self.dirs)} directory listings, "
                f"{len(self.netlink)} netlink dumps" + (", the /proc/*/fd scan" if self.process_scan else ""))


def _raw_equivalent(key: str, root: str) -> tuple[str, object] | None:
    """(kind, what) for one recorded answer, None if there is no raw read behind it."""
    if key.startswith("listdir/"):
        return "dir", os.path.join(root, key[len("listdir/"):])
    if key.startswith("netlink/"):
        proto, msg_type, payload = key[len("netlink/"):].split("-", 2)
        return "netlink", (int(proto), int(msg_type), bytes.fromhex(payload))
    if key == "json/process_sockets":
        return "scan", None
    if key == "json/sockstat/page_size":
        return "none", None  # sysconf(), not a read
    if key == "json/host_sysctls":
        return "none", None  # read by take_snapshot before entering the namespace: see plan_from
    if key.startswith("json/sockstat/host/"):  # a global limit, read from the initial namespace
        return "host_file", "/proc/sys/" + key[len("json/sockstat/host/"):].replace(".", "/")
    if key.startswith("json/"):
        return None
    return "file", os.path.join(root, key)


@dataclass(frozen=True)
class TracingContext(ReadContext):
    """A ReadContext that notes every read it is asked for, also those that fail (a file
    this kernel lacks costs the snapshot an open() too: the raw side must try it)."""

    attempts: list = field(default_factory=list, repr=False, compare=False)

    def read(self, *parts: str) -> str:
        self.attempts.append("/".join(parts))
        return super().read(*parts)

    def listdir(self, *parts: str) -> list[str]:
        self.attempts.append("listdir/" + "/".join(parts))
        return super().listdir(*parts)

    def netlink_dump(self, protocol: int, msg_type: int, payload: bytes, what: str) -> bytes:
        self.attempts.append(f"netlink/{protocol}-{msg_type}-{payload.hex()}")
        return super().netlink_dump(protocol, msg_type, payload, what)


def plan_from(netns: str | None, final: bool = True, root: str = "/") -> RawPlan:
    """What a snapshot of `netns` reads, source by source, from one recorded read each.

    A source whose answers have no raw equivalent here (ethtool ioctls recorded as JSON)
    is left out of the plan and named in `skipped`; the benchmarks time it separately.
    `per_source` holds each source's own plan."""
    live = root == "/"
    plan = RawPlan([], [], [], False, [], [], {})
    plan.files.append(os.path.join(root, "proc/sys/kernel/osrelease"))  # take_snapshot's kernel_release()
    if live and netns is not None:
        # take_snapshot reads the global sysctls in the host namespace first (a child
        # namespace has no /proc/sys entry for them).
        from dropdoc.sources import sysctls

        if hasattr(sysctls, "read_keys"):
            plan.host_reads = ["/proc/sys/" + key.replace(".", "/") for key in sorted(sysctls.GLOBAL_KEYS)]
    with netns_mod.entered(netns if live else None):
        local = not live or netns_mod.is_initial_netns()
        for name, source in SOURCES.items():
            if source.final_only and not final:
                continue
            recorder: dict[str, bytes] = {}
            ctx = TracingContext(root=root, netns=netns, live=live, sysfs_is_local=local, recorder=recorder)
            result = read_source(source, ctx)
            keys = list(dict.fromkeys(ctx.attempts + [k for k in recorder if k.startswith("json/")]))
            steps = [(key, _raw_equivalent(key, root)) for key in keys]
            missing = [key for key, step in steps if step is None]
            if missing:
                plan.skipped[name] = f"no raw equivalent for {', '.join(missing)}"
                continue
            own = RawPlan([], [], [], False, [], [name], {})
            if not result.ok:
                plan.skipped.setdefault(f"{name} (status)", result.status)
            for target in (plan, own):
                for _key, (kind, what) in steps:
                    if kind == "file":
                        target.files.append(what)
                    elif kind == "dir":
                        target.dirs.append(what)
                    elif kind == "netlink":
                        target.netlink.append(what)
                    elif kind == "scan":
                        target.process_scan = True
                    elif kind == "host_file":
                        target.host_files.append(what)
            plan.sources.append(name)
            plan.per_source[name] = own
    return plan


def per_source_costs(plan: RawPlan, netns: str | None, repeat: int = 20) -> dict[str, dict[str, float]]:
    """For each source: median wall and CPU ms of its raw reads and of reading it with dropdoc
    (both inside netns, interleaved)."""
    out: dict[str, dict[str, float]] = {}
    for name, own in plan.per_source.items():
        raw = raw_reader(own, netns)
        source = SOURCES[name]

        def parsed(source=source) -> None:
            with netns_mod.entered(netns):
                ctx = ReadContext(netns=netns, sysfs_is_local=netns is None or netns_mod.is_initial_netns())
                read_source(source, ctx)

        cpu: dict[str, list[float]] = {}
        wall = interleaved({"raw": raw, "dropdoc": parsed}, repeat, 1, cpu)
        out[name] = {"raw_ms": median(wall["raw"]) * 1e3, "dropdoc_ms": median(wall["dropdoc"]) * 1e3,
                     "raw_cpu_ms": median(cpu["raw"]) * 1e3, "dropdoc_cpu_ms": median(cpu["dropdoc"]) * 1e3}
    return out


def _netlink_raw(protocol: int, msg_type: int, payload: bytes) -> int:
    request = _NLMSG.pack(_NLMSG.size + len(payload), msg_type, 0x301, 1, 0) + payload
    total = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as sock:
        sock.sendall(request)
        while True:
            chunk = sock.recv(1 << 20)
            total += len(chunk)
            offset, last = 0, None
            while offset + 16 <= len(chunk):  # walk headers only, to find the end of the dump
                length, last = struct.unpack_from("=IH", chunk, offset)
                if length < 16:
                    break
                offset += (length + 3) & ~3
            if not chunk or last in (NLMSG_DONE, NLMSG_ERROR):
                return total


def _scan_raw(proc: str) -> int:
    found = 0
    try:
        own = os.readlink(f"{proc}/thread-self/ns/net")
    except OSError:
        own = None
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:  # the snapshot reads each process's netns link too (and skips other namespaces)
            if own is not None and os.readlink(f"{proc}/{pid}/ns/net") != own:
                continue
        except OSError:
            pass
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        has_socket = False
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                    has_socket = True
                    found += 1
            except OSError:
                pass
        if has_socket:
            try:
                with open(f"{proc}/{pid}/comm", "rb") as handle:
                    handle.read()
            except OSError:
                pass
    return found


def raw_reader(plan: RawPlan, netns: str | None, root: str = "/") -> Callable[[], int]:
    """A function doing the plan's reads inside `netns` (entered like a snapshot does)."""
    proc = os.path.join(root, "proc")

    # Opened once, outside the namespace, as sources/sockstat.py does for the same files.
    host = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in plan.host_files]

    def run() -> int:
        total = 0
        for path in plan.host_reads:
            try:
                with open(path, "rb") as handle:
                    total += len(handle.read())
            except OSError:
                pass
        for fd in host:
            total += len(os.pread(fd, 4096, 0))
        with netns_mod.entered(netns):
            for path in plan.files:
                try:
                    with open(path, "rb") as handle:
                        total += len(handle.read())
                except OSError:
                    pass
            for path in plan.dirs:
                try:
                    total += len(os.listdir(path))
                except OSError:
                    pass
            for proto, msg_type, payload in plan.netlink:
                total += _netlink_raw(proto, msg_type, payload)
            if plan.process_scan:
                total += _scan_raw(proc)
        return total

    return run


def interleaved(sides: dict[str, Callable[[], object]], rounds: int, repeat: int,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run every side `repeat` times per round, rounds interleaved; wall seconds per call.
    With `cpu`, also the CPU seconds of the calling thread per call (user + system: what
    the work costs, without the waiting a busy machine adds)."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for name in sides:
        if cpu is not None:
            cpu[name] = []
    for _ in range(rounds):
        for name, func in sides.items():
            for _ in range(repeat):
                start, start_cpu = time.perf_counter(), time.thread_time()
                func()
                samples[name].append(time.perf_counter() - start)
                if cpu is not None:
                    cpu[name].append(time.thread_time() - start_cpu)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    uname = os.uname()
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        pass
    return f"{uname.nodename}, {os.cpu_count()} CPUs ({model}), kernel {uname.release}"


class BenchNet(LabNet):
    """A LabNet under its own prefix: the functional tests' leftover check removes new
    ddlab-* namespaces, which must not hit a benchmark running next to them."""

    @property
    def server_ns(self) -> str:
        return f"perfbench-{self.tag}-srv"

    @property
    def client_ns(self) -> str:
        return f"perfbench-{self.tag}-cli"

    def keep_name(self, holder_pid: int) -> None:
        """If something removed our /run/netns entry while the holders keep the namespace
        alive (a cleanup running next to us), attach the name again to a holder's one."""
        if not os.path.exists(f"/run/netns/{self.server_ns}"):
            subprocess.run(["ip", "netns", "attach", self.server_ns, str(holder_pid)], check=True,
                           capture_output=True, timeout=10)
            print(f"(re-attached {self.server_ns}: its name had been removed by someone else)")
