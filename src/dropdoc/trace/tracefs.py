"""The tracefs fallback backend: the skb:kfree_skb event as text, aggregated in Python.

Used when BPF is not available. It is slow (every drop is formatted by the kernel and
parsed here) and, under load, the ring buffer overruns: those losses are read from
`per_cpu/cpu*/stats` and reported, never hidden. The event carries no netns, no socket
and no port, so those dimensions and filters are reported as unavailable.

To disturb nothing else on the host it works in its own tracefs *instance*
(`instances/dropdoc-<pid>`: a private ring buffer with its own event switches and
buffer size), mounts tracefs only if it is not mounted, and on detach disables the event,
removes the instance and unmounts what it mounted. A stale instance left by a killed
dropdoc (its pid no longer alive) is removed on the next start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import threading
from collections import Counter
from dataclasses import dataclass, field

from ..errors import (
    DropdocError,
    NeedsPrivilege,
    ParseError,
    SourceUnavailable,
    read_text,
)
from . import reasons as reasons_mod
from .backend import attach_timed

DEFAULT_MOUNT = "/sys/kernel/tracing"
EVENT = "events/skb/kfree_skb"
INSTANCE_PREFIX = "dropdoc-"
BUFFER_KB = 4096

_EVENT_LINE = re.compile(
    r"kfree_skb: [^\n]*?protocol=(\d+) location=(\S+)(?: (\[\S+\]))?(?: reason: (\S+))?[ \t]*$", re.MULTILINE)
_LOST_LINE = re.compile(r"\[LOST (\d+) EVENTS\]")
_STATS_LINE = re.compile(r"^([a-z ]+):\s+(\S+)", re.MULTILINE)

_libc = ctypes.CDLL(None, use_errno=True)


# --- pure parsers ------------------------------------------------------------------------

def parse_events(text: str) -> tuple[Counter, int]:
    """Count kfree_skb lines of trace/trace_pipe output by (reason, location, protocol);
    also the number of events the pipe says were lost ([LOST n EVENTS] lines)."""
    counts: Counter = Counter()
    for protocol, location, module, reason in _EVENT_LINE.findall(text):
        location = location.split("/", 1)[0]  # drop the function size of %pS
        if module:
            location = f"{location} {module}"
        counts[(reason or None, location, int(protocol))] += 1
    lost = sum(int(n) for n in _LOST_LINE.findall(text))
    return counts, lost


def parse_stats(text: str) -> dict[str, int]:
    """`per_cpu/cpuN/stats`: overrun, commit overrun, dropped events, entries ..."""
    out: dict[str, int] = {}
    for name, value in _STATS_LINE.findall(text):
        try:
            out[name.strip()] = int(value)
        except ValueError:
            continue  # timestamps ("oldest event ts:  123.45")
    if "overrun" not in out:
        raise ParseError("tracefs stats: no overrun line")
    return out


def lost_from_stats(per_cpu: list[dict[str, int]]) -> int:
    return sum(s.get("overrun", 0) + s.get("dropped events", 0) for s in per_cpu)


def find_mount(mounts_text: str) -> str | None:
    """Mount point of tracefs (or of debugfs' tracing directory) in /proc/self/mounts."""
    debugfs = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        if parts[2] == "tracefs":
            return parts[1].replace("\\040", " ")
        if parts[2] == "debugfs":
            debugfs = parts[1].replace("\\040", " ") + "/tracing"
    if debugfs and os.path.isdir(os.path.join(debugfs, "events")):
        return debugfs
    return None


# --- mount and instance ------------------------------------------------------------------

@dataclass
class Tracefs:
    root: str
    mounted_by_us: bool = False

    @classmethod
    def open(cls, mount_point: str = DEFAULT_MOUNT) -> Tracefs:
        try:
            mounts = read_text("/proc/self/mounts")
        except DropdocError:
            mounts = ""
        found = find_mount(mounts)
        if found:
            return cls(found)
        if os.geteuid() != 0:
            raise NeedsPrivilege("tracefs is not mounted and mounting it needs root")
        if _libc.mount(b"nodev", mount_point.encode(), b"tracefs", 0, None) != 0:
            err = ctypes.get_errno()
            raise SourceUnavailable(f"mount -t tracefs nodev {mount_point}: {os.strerror(err)}")
        return cls(mount_point, mounted_by_us=True)

    def close(self) -> str | None:
        """Unmount if we mounted; returns a warning if that was not possible."""
        if not self.mounted_by_us:
            return None
        if _libc.umount2(self.root.encode(), 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EBUSY:
                return f"tracefs at {self.root} left mounted: busy (someone else uses it)"
            return f"could not unmount tracefs at {self.root}: {os.strerror(err)}"
        self.mounted_by_us = False
        return None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def event_format(self) -> reasons_mod.TracepointFormat:
        path = self.path(EVENT, "format")
        if not os.path.exists(path):
            raise SourceUnavailable("this kernel has no skb:kfree_skb tracepoint")
        return reasons_mod.parse_format(read_text(path))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_instances(fs: Tracefs) -> list[str]:
    """Instances left by a dropdoc that was killed (SIGKILL skips every cleanup)."""
    removed = []
    base = fs.path("instances")
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(INSTANCE_PREFIX):
            continue
        pid_text = name[len(INSTANCE_PREFIX):].split("-")[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            try:
                _write(os.path.join(base, name, EVENT, "enable"), "0")
                os.rmdir(os.path.join(base, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


# --- backend -------------------------------------------------------------------------------

_instance_seq = 0
_instance_lock = threading.Lock()


@dataclass
class TracefsBackend:
    ethertype: int | None = None
    name: str = "tracefs"
    variant: str = ""
    reasons: reasons_mod.ReasonNames = field(default_factory=reasons_mod.ReasonNames)
    warnings: list[str] = field(default_factory=list)
    startup_ms: float | None = None
    fs: Tracefs | None = None
    instance: str | None = None
    pipe_fd: int = -1
    has_reasons: bool = False
    _counts: Counter = field(default_factory=Counter)
    _pipe_lost: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ncpus: int = 0
    _final_lost: int | None = None

    def attach(self) -> None:
        self.startup_ms = attach_timed(self._attach, self.close)

    def _attach(self) -> None:
        global _instance_seq
        self.fs = Tracefs.open()
        fmt = self.fs.event_format()
        self.has_reasons = fmt.reasons is not None
        self.reasons = reasons_mod.from_format(fmt)
        self.variant = ",".join(f for f in ("skbaddr", "location", "protocol", "reason", "rx_sk")
                                if f in fmt.fields)
        for name in remove_stale_instances(self.fs):
            self.warnings.append(f"removed stale tracefs instance {name}")
        with _instance_lock:
            _instance_seq += 1
            name = f"{INSTANCE_PREFIX}{os.getpid()}-{_instance_seq}"
        path = self.fs.path("instances", name)
        try:
            os.mkdir(path)
        except PermissionError as exc:
            raise NeedsPrivilege(f"{path}: {exc.strerror} (run as root)") from None
        except OSError as exc:
            raise SourceUnavailable(f"cannot create tracefs instance {path}: {exc.strerror}") from None
        self.instance = path
        _write(os.path.join(path, "buffer_size_kb"), str(BUFFER_KB))
        if self.ethertype is not None:
            _write(os.path.join(path, EVENT, "filter"), f"protocol == {self.ethertype}")
        self._ncpus = len([d for d in os.listdir(os.path.join(path, "per_cpu")) if d.startswith("cpu")])
        self.pipe_fd = os.open(os.path.join(path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        _write(os.path.join(path, EVENT, "enable"), "1")
        self._thread = threading.Thread(target=self._reader, name="dropdoc-tracefs", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        rest, got_data = "", False
        while True:
            stopping = self._stop.is_set()
            if not got_data and not stopping:
                try:
                    select.select([self.pipe_fd], [], [], 0.05)
                except (OSError, ValueError):
                    break
            try:
                chunk = os.read(self.pipe_fd, 1 << 20)
            except BlockingIOError:
                chunk = b""
            except OSError:
                break
            got_data = bool(chunk)
            if chunk:
                text = rest + chunk.decode("utf-8", errors="replace")
                cut = text.rfind("\n") + 1
                rest = text[cut:]
                counts, lost = parse_events(text[:cut])
                with self._lock:
                    self._counts.update(counts)
                    self._pipe_lost += lost
            elif stopping:
                break
        if rest:
            counts, lost = parse_events(rest)
            with self._lock:
                self._counts.update(counts)
                self._pipe_lost += lost

    def _stats_lost(self) -> int | None:
        if not self.instance:
            return None
        stats = []
        for cpu in range(self._ncpus):
            try:
                stats.append(parse_stats(read_text(os.path.join(self.instance, "per_cpu", f"cpu{cpu}", "stats"))))
            except DropdocError:
                return None
        return lost_from_stats(stats)

    def read(self) -> tuple[dict[tuple, int], int | None]:
        with self._lock:
            counts = dict(self._counts)
            pipe_lost = self._pipe_lost
        lost = self._final_lost if self._final_lost is not None else self._stats_lost()
        lost = max(lost or 0, pipe_lost) if lost is not None else pipe_lost
        out = {(reason, location, protocol, None, None, None): n
               for (reason, location, protocol), n in counts.items()}
        return out, lost

    def stop(self) -> None:
        """Disable the event, then drain what is still in the buffer."""
        if self.instance and os.path.isdir(self.instance):
            try:
                _write(os.path.join(self.instance, EVENT, "enable"), "0")
            except OSError:
                pass
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
            self._final_lost = self._stats_lost()

    def close(self) -> None:
        self.stop()
        if self.pipe_fd >= 0:
            os.close(self.pipe_fd)
            self.pipe_fd = -1
        if self.instance:
            try:
                os.rmdir(self.instance)  # frees its ring buffer and event switches
            except OSError as exc:
                self.warnings.append(f"could not remove tracefs instance {self.instance}: {exc.strerror}")
            self.instance = None
        if self.fs is not None:
            warning = self.fs.close()
            if warning:
                self.warnings.append(warning)
            self.fs = None
