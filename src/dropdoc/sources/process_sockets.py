"""Which process owns which socket: /proc/<pid>/fd/* -> "socket:[inode]".

This is what `ss -p` does. The pid namespace is not switched by --netns, so the scan runs
over every process of the host. Other users' fd directories need root: those processes
are counted as unreadable, so the report can say an owner is unknown rather than absent.

Cost (benchmarks/many_sockets.py): one readlink() per fd, ~4 us each from Python, so
100k sockets take ~0.4 s. To keep that down on hosts full of containers, processes whose
network namespace (/proc/<pid>/ns/net) is not the one being diagnosed are skipped and
counted in `other_netns_pids`: their sockets live in another namespace and can never be
the subject of a finding here. (The one exception - a socket created in this namespace
and then handed to, or kept by, a process that moved to another one - is reported as
owner unknown, like an unreadable process.) A process whose namespace link cannot be
read (not root) is scanned as before. readlink() goes through a directory fd of
/proc/<pid>/fd, so the kernel resolves one path component per fd instead of four.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

from ..errors import SourceUnavailable
from .base import ReadContext, Source, register


@dataclass
class SocketOwners:
    owners: dict[int, tuple[int, str]] = field(default_factory=dict)  # inode -> (pid, comm)
    unreadable_pids: int = 0
    other_netns_pids: int = 0  # processes skipped: they live in another network namespace

    def owner(self, inode: int) -> tuple[int, str] | None:
        return self.owners.get(inode)


def parse_fd_link(target: str) -> int | None:
    """'socket:[12345]' -> 12345; anything else None."""
    if target.startswith("socket:[") and target.endswith("]"):
        digits = target[8:-1]
        return int(digits) if digits.isascii() and digits.isdigit() else None  # not '²'
    return None


def read(ctx: ReadContext) -> SocketOwners:
    if not ctx.live and ctx.replay is None:
        raise SourceUnavailable("socket owners are only known on the live system")
    if ctx.recorder is None and ctx.replay is None:
        return scan(ctx.proc(), netns_link=current_netns_link(ctx.proc()))
    data = ctx.record_json("process_sockets",
                           lambda: _scan_json(ctx.proc(), current_netns_link(ctx.proc())))
    return SocketOwners({int(k): (v[0], v[1]) for k, v in data["owners"].items()}, data["unreadable_pids"],
                        data.get("other_netns_pids", 0))


def current_netns_link(proc: str) -> str | None:
    """'net:[4026531840]' of the calling thread (inside --netns while sources run)."""
    try:
        return os.readlink(os.path.join(proc, "thread-self", "ns", "net"))
    except OSError:
        return None


def _scan_json(proc: str, netns_link: str | None) -> dict:
    result = scan(proc, netns_link=netns_link)
    return {"owners": {str(k): list(v) for k, v in result.owners.items()},
            "unreadable_pids": result.unreadable_pids, "other_netns_pids": result.other_netns_pids}


def scan(proc: str, netns_link: str | None = None) -> SocketOwners:
    """Owners of every socket held by a process under `proc`. With netns_link
    ('net:[<inode>]'), processes in another network namespace are skipped (counted)."""
    enabled = gc.isenabled()
    gc.disable()  # 100k new tuples would trigger collections over the whole heap: useless
    try:
        return _scan(proc, netns_link)
    finally:
        if enabled:
            gc.enable()


def _scan(proc: str, netns_link: str | None) -> SocketOwners:
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError as exc:
        raise SourceUnavailable(f"{proc}: {exc.strerror}") from exc
    result = SocketOwners()
    owners = result.owners
    readlink = os.readlink
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    for name in pids:
        pid_dir = f"{proc}/{name}"
        if netns_link is not None:
            try:
                if readlink(pid_dir + "/ns/net") != netns_link:
                    result.other_netns_pids += 1
                    continue
            except OSError:
                pass  # not ours to read (or exited): the fd directory decides below
        try:
            dir_fd = os.open(pid_dir + "/fd", flags)
        except PermissionError:
            result.unreadable_pids += 1
            continue
        except OSError:
            continue  # exited meanwhile
        try:
            try:
                fds = os.listdir(dir_fd)
            except PermissionError:
                result.unreadable_pids += 1
                continue
            except OSError:
                continue
            pid, comm = int(name), None
            for fd in fds:
                try:
                    target = readlink(fd, dir_fd=dir_fd)
                except OSError:
                    continue  # closed meanwhile
                if not target.startswith("socket:["):
                    continue
                digits = target[8:-1]  # parse_fd_link(), inlined: this loop runs once per fd
                if target[-1] != "]" or not digits.isdigit() or not digits.isascii():
                    continue
                inode = int(digits)
                if inode in owners:
                    continue
                if comm is None:
                    comm = _comm(proc, pid)
                owners[inode] = (pid, comm)
        finally:
            os.close(dir_fd)
    return result


def _comm(proc: str, pid: int) -> str:
    try:
        with open(os.path.join(proc, str(pid), "comm"), encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


register(Source("process_sockets", read, final_only=True,
                description="/proc/<pid>/fd: which process owns each socket"))
