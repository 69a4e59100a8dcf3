"""Which process owns which socket: /proc/<pid>/fd/* -> "socket:[inode]".

This is what `ss -p` does. The pid namespace is not switched by --netns, so a scan from
the host finds the owners of sockets in every network namespace. Other users' fd
directories need root: those processes are counted as unreadable, so the report can say
an owner is unknown rather than absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import SourceUnavailable
from .base import ReadContext, Source, register


@dataclass
class SocketOwners:
    owners: dict[int, tuple[int, str]] = field(default_factory=dict)  # inode -> (pid, comm)
    unreadable_pids: int = 0

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
    data = ctx.record_json("process_sockets", lambda: _scan_json(ctx.proc()))
    return SocketOwners({int(k): (v[0], v[1]) for k, v in data["owners"].items()}, data["unreadable_pids"])


def _scan_json(proc: str) -> dict:
    result = scan(proc)
    return {"owners": {str(k): list(v) for k, v in result.owners.items()},
            "unreadable_pids": result.unreadable_pids}


def scan(proc: str) -> SocketOwners:
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError as exc:
        raise SourceUnavailable(f"{proc}: {exc.strerror}") from exc
    result = SocketOwners()
    for pid in pids:
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            result.unreadable_pids += 1
            continue
        except OSError:
            continue  # exited meanwhile
        comm = None
        for fd in fds:
            try:
                inode = parse_fd_link(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                continue
            if inode is None or inode in result.owners:
                continue
            if comm is None:
                comm = _comm(proc, pid)
            result.owners[inode] = (pid, comm)
    return result


def _comm(proc: str, pid: int) -> str:
    try:
        with open(os.path.join(proc, str(pid), "comm"), encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


register(Source("process_sockets", read, final_only=True,
                description="/proc/<pid>/fd: which process owns each socket"))
