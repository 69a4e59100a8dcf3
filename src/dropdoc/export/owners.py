"""Which process owns a socket, for the `process` label of the exporter's top sockets.

The full /proc/*/fd scan (sources/process_sockets.py) costs ~4 us per fd - 0.4 s on a host
with 100k sockets - far too much for every scrape. The exporter only names the top 20
listeners and UDP sockets, so it keeps the last scan and rescans only when one of those is
an inode it has never seen, at most once per `min_rescan` seconds. An inode that stayed
unknown after a scan (a socket no process holds any more, or one in a process we may not
read) is remembered as unknown, so it does not trigger a rescan on every scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..errors import NeedsPrivilege, SourceUnavailable
from ..sources import process_sockets

UNKNOWN = "unknown"


class OwnerCache:
    def __init__(self, proc: str = "/proc", min_rescan: float = 30.0,
                 scan: Callable[[], process_sockets.SocketOwners] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._scan = scan or (lambda: process_sockets.scan(proc))
        self.min_rescan = min_rescan
        self._clock = clock
        self._owners: dict[int, tuple[int, str]] = {}
        self._unresolved: set[int] = set()
        self._last_scan: float | None = None
        self.scans = 0
        self.status: str | None = None  # None until the first scan, then a source status
        self.error: str | None = None

    def names(self, inodes: Iterable[int]) -> dict[int, str]:
        """inode -> process name ('unknown' when no readable process holds it)."""
        wanted = [i for i in inodes if i]
        fresh = [i for i in wanted if i not in self._owners and i not in self._unresolved]
        now = self._clock()
        due = self._last_scan is None or now - self._last_scan >= self.min_rescan
        # After a failed scan the fresh inodes are not marked unresolved: retried later.
        if fresh and due and self._rescan(now):
            self._unresolved.update(i for i in fresh if i not in self._owners)
        return {i: self._owners[i][1] if i in self._owners else UNKNOWN for i in wanted}

    def _rescan(self, now: float) -> bool:
        self._last_scan = now
        self.scans += 1
        try:
            result = self._scan()
        except (NeedsPrivilege, SourceUnavailable) as exc:
            self.status = "needs-privilege" if isinstance(exc, NeedsPrivilege) else "unavailable"
            self.error = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - names are optional: keep the old ones
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return False
        # Replace, not merge: a closed socket's inode can be reused by another process.
        self._owners = dict(result.owners)
        self._unresolved = set()
        self.status, self.error = "ok", None
        return True
