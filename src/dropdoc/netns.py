"""Entering a named network namespace from inside this process.

Counters under /proc/net and /proc/sys/net are per network namespace and are resolved
against the calling task's namespace when a file is opened. Switching this thread with
setns(2) and back costs microseconds, so one snapshot of a namespace needs no
`ip netns exec` per file and no helper process. /sys is not switched by setns (sysfs
shows the namespace of whoever mounted it): sources that need per-netns link data
use netlink instead (see sources/link_stats.py).
"""

from __future__ import annotations

import ctypes
import os
import re
from contextlib import contextmanager
from typing import Iterator

from .errors import NeedsPrivilege, SourceUnavailable, UnknownNetns

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    """Path of the bind mount `ip netns add NAME` creates; UnknownNetns if absent."""
    if not _VALID_NAME.match(name) or name in {".", ".."}:
        raise UnknownNetns(f"invalid network namespace name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    if not os.path.exists(path):
        known = list_netns()
        hint = f" (known: {', '.join(known)})" if known else " (none exist; see `ip netns list`)"
        raise UnknownNetns(f"no network namespace named {name!r}{hint}")
    return path


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return []


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == 1:  # EPERM
            raise NeedsPrivilege("entering a network namespace needs CAP_SYS_ADMIN (run as root)")
        raise SourceUnavailable(f"setns failed: {os.strerror(err)}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body inside network namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError as exc:
        raise NeedsPrivilege(f"{path}: {exc.strerror} (run as root)") from exc
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def inode_of(name: str | None) -> int | None:
    """Namespace inode (as in `ip netns list-id`/tracepoints), None if unreadable."""
    path = netns_path(name) if name else "/proc/self/ns/net"
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def is_initial_netns() -> bool:
    """True if this thread is in the host's (initial) network namespace, where /sys matches.

    Compared with kthreadd (pid 2): kernel threads live in the initial namespace, and
    unlike pid 1 (which sandboxes may shield from ptrace access) its ns link is readable.
    Fallback: global-only sysctls such as netdev_max_backlog exist only there.
    """
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino == os.stat("/proc/2/ns/net").st_ino
    except OSError:
        return os.path.exists("/proc/sys/net/core/netdev_max_backlog")
