"""The journal: every change dropdoc makes, as JSON lines, fsync'ed one record at a time.

For each change the *intent* (old value, new value, netns, reason, run id) is written and
synced before the system is touched, and the *outcome* after. A fixer killed between two
writes therefore leaves either an intent without outcome (the change may or may not have
happened: restoring the old value is right in both cases) or a complete pair. Rollback
(`dropdoc fix --rollback`) rebuilds each change from its record and restores the old value
if the setting still holds what dropdoc wrote (or the old value already).

Record events: run-start, intent, outcome, restore, restored, persist, persist-undone, run-end,
rollback-start, rollback-end.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import DropdocError, ParseError, translated

DEFAULT_PATH = "/var/lib/dropdoc/journal.jsonl"
VERSION = 1


class JournalBusy(DropdocError):
    """Another dropdoc fix holds the journal."""


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())


class Journal:
    """Append-only JSONL file; path=None keeps the records in memory (the lab's own runs)."""

    def __init__(self, path: str | None = DEFAULT_PATH, run_id: str | None = None) -> None:
        self.path = path
        self.run_id = run_id or new_run_id()
        self.memory: list[dict[str, Any]] = []
        self._fd: int | None = None

    # --- writing --------------------------------------------------------------------------

    def open(self) -> "Journal":
        """Open for appending and take an exclusive lock (one fixer at a time)."""
        if self.path is None or self._fd is not None:
            return self
        directory = os.path.dirname(os.path.abspath(self.path))
        with translated(directory):
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700, exist_ok=True)
        with translated(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(f"{self.path} is locked: another `dropdoc fix` is running") from None
        self._fd = fd
        self._sync_dir(directory)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> "Journal":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _sync_dir(directory: str) -> None:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"v": VERSION, "event": event, "run": self.run_id, "time": now_iso(), **fields}
        self.memory.append(record)
        if self.path is not None:
            self.open()
            line = (json.dumps(record, sort_keys=True, default=_jsonable) + "\n").encode()
            with translated(self.path):
                os.write(self._fd, line)  # type: ignore[arg-type]
                os.fsync(self._fd)  # type: ignore[arg-type]
        return record

    # --- reading --------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        if self.path is None:
            return list(self.memory)
        return read_records(self.path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def parse_records(text: str) -> list[dict[str, Any]]:
    """JSON lines; a torn last line (killed mid-write) is ignored, anything else is an error."""
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break  # the last write was torn
            raise ParseError(f"journal line {number} is not JSON") from None
        if not isinstance(record, dict) or "event" not in record or "run" not in record:
            raise ParseError(f"journal line {number} is not a dropdoc journal record")
        records.append(record)
    return records


def read_records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with translated(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_records(handle.read())


# --- what a run did -------------------------------------------------------------------------

@dataclass
class JournaledChange:
    seq: int
    change: dict[str, Any]  # the Change record (kind, netns, key/interface, ...)
    old: Any
    new: Any
    finding: list[str]
    reason: str
    outcome: str | None = None  # applied / failed / None: killed before the outcome was written
    restored: str | None = None  # restored / already / skipped / failed (last restore attempt)


@dataclass
class RunSummary:
    run: str
    changes: list[JournaledChange] = field(default_factory=list)
    persisted: list[dict[str, Any]] = field(default_factory=list)
    ended: str | None = None
    started: str | None = None
    persist_undone: bool = False

    @property
    def pending_restore(self) -> list[JournaledChange]:
        """Changes whose old value is not (known to be) back."""
        return [c for c in self.changes if c.restored not in ("restored", "already")]


def runs(records: list[dict[str, Any]]) -> dict[str, RunSummary]:
    """Runs in journal order, each with its changes and their last known state."""
    found: dict[str, RunSummary] = {}
    for record in records:
        run = found.setdefault(record["run"], RunSummary(record["run"]))
        event = record["event"]
        if event == "run-start":
            run.started = record.get("time")
        elif event == "intent":
            run.changes.append(JournaledChange(record["seq"], record["change"], record.get("old"),
                                               record.get("new"), list(record.get("finding", [])),
                                               record.get("reason", "")))
        elif event in ("outcome", "restored"):
            change = next((c for c in run.changes if c.seq == record.get("seq")), None)
            if change is not None:
                if event == "outcome":
                    change.outcome = record.get("status")
                else:
                    change.restored = record.get("status")
        elif event == "persist":
            run.persisted.append(record)
            run.persist_undone = False
        elif event == "persist-undone":
            run.persist_undone = True
        elif event == "run-end":
            run.ended = record.get("status")
    return found


def last_run_with_changes(records: list[dict[str, Any]]) -> RunSummary | None:
    candidates = [r for r in runs(records).values() if r.changes]
    return candidates[-1] if candidates else None


def iter_reversed(changes: list[JournaledChange]) -> Iterator[JournaledChange]:
    return iter(sorted(changes, key=lambda c: -c.seq))
