"""Drop history in SQLite (`dropdoc watch --record history.db`), read back by `dropdoc report`.

Schema `dropdoc.history/1`:
  meta(key, value)                          schema, hostname, kernel, netns
  samples(ts, seconds)                      one row per measured interval (ts = its end, unix time)
  drops(ts, finding, layer, drops)          only findings that dropped in that interval
  gaps(ts, finding)                         findings that could not be measured in it (None)
A finding with no row for a sample dropped nothing then; a sample with no row at all was
not measured (dropdoc was not running): the report draws that as a gap, never as zero.
Retention: rows older than `retention_s` are deleted as new ones arrive (at most once a
minute), so a recorder left running for weeks stays small.
"""

from __future__ import annotations

import math
import os
import platform
import sqlite3
from dataclasses import dataclass
from typing import Self

from .errors import DropdocError
from .meter import Interval
from .rules.engine import load_rules

SCHEMA = "dropdoc.history/1"
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
_PRUNE_EVERY_S = 60.0
# A reader (`dropdoc report`) and the recorder share the file: WAL lets the reader see the
# last committed sample while the recorder writes the next one, and a writer that still
# finds the file busy waits this long before giving up with a one-line error.
_BUSY_TIMEOUT_S = 10.0

# WITHOUT ROWID: the primary key is the row, so a sample costs one b-tree entry per
# table instead of a row plus an index entry (half the file for the same history).
_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples(ts REAL PRIMARY KEY, seconds REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops(ts REAL NOT NULL, finding TEXT NOT NULL, layer TEXT NOT NULL,
                                 drops INTEGER NOT NULL, PRIMARY KEY (ts, finding)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps(ts REAL NOT NULL, finding TEXT NOT NULL, PRIMARY KEY (ts, finding)) WITHOUT ROWID;
"""


class HistoryError(DropdocError):
    """A history file that cannot be opened or is not a dropdoc history."""


@dataclass
class Sample:
    ts: float
    seconds: float
    drops: dict[str, int]        # finding -> drops (only non-zero)
    gaps: tuple[str, ...]        # findings not measurable in this interval


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '7d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise DropdocError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)") from None
    if not math.isfinite(value):
        raise DropdocError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    if value <= 0:
        raise DropdocError(f"duration must be positive: {text!r}")
    return value


class History:
    """One history file. create=True (the recorder) makes a new file or appends to a
    dropdoc history; create=False (readers) only opens an existing one. Anything else -
    a missing directory, an unrelated SQLite database, a file that is not SQLite, another
    schema version - is a one-line HistoryError, and the file is left untouched."""

    def __init__(self, path: str, retention_s: float = DEFAULT_RETENTION_S, create: bool = True) -> None:
        self.path = path
        self.retention_s = retention_s
        self._pruned_at = float("-inf")
        self.db: sqlite3.Connection | None = None
        if os.path.isdir(path):
            raise HistoryError(f"{path}: is a directory, not a history file")
        if not os.path.exists(path):
            if not create:
                raise HistoryError(f"{path}: no such history file")
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise HistoryError(f"{path}: directory {parent} does not exist")
        try:
            self.db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S)
            self._open(create)
        except HistoryError as exc:
            self.close()
            raise HistoryError(f"{path}: {exc}") from None
        except sqlite3.OperationalError as exc:
            self.close()
            raise HistoryError(f"{path}: cannot use it ({exc})") from None
        except sqlite3.DatabaseError as exc:
            self.close()
            raise HistoryError(f"{path}: not a dropdoc history ({exc})") from None

    def _open(self, create: bool) -> None:
        assert self.db is not None
        schema = self._schema()
        if schema is None:
            tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            if tables:
                raise HistoryError(f"an SQLite database but not a dropdoc history (tables: {', '.join(sorted(tables))})")
            if not create:
                raise HistoryError("empty: not written by dropdoc watch --record")
        elif schema != SCHEMA:
            raise HistoryError(f"history schema {schema!r}, this dropdoc reads {SCHEMA!r}")
        if create:
            # WAL is a property of the file: set once by the writer, readers inherit it.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses the last sample at most
            self.db.executescript(_DDL)
            if schema is None:
                with self.db:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))

    def _schema(self) -> str | None:
        assert self.db is not None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else row[0]

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            raise HistoryError(f"{self.path}: history already closed")
        return self.db

    def _write(self, what: str, action) -> None:
        """Run a write transaction; SQLite errors (disk full, locked too long, file
        replaced underneath) become one-line HistoryErrors."""
        db = self._conn()
        try:
            with db:
                action(db)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot {what} ({exc})") from None

    def _query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        """Run one read statement; a damaged file is a one-line HistoryError, also when the
        damage is only found past the pages read while opening it."""
        db = self._conn()
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot read it ({exc})") from None

    def set_meta(self, **values: str | None) -> None:
        def action(db: sqlite3.Connection) -> None:
            for key, value in values.items():
                if value is not None:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
        self._write("write its metadata", action)

    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM meta"))

    def describe_host(self, netns: str | None) -> None:
        """Record which host and namespace the samples come from. A history that already
        holds samples of another host or namespace is refused: one file is one series, and
        a report over mixed samples would add up drops of different places."""
        current = {"hostname": platform.node(), "netns": netns or ""}
        recorded = self.meta()
        if self.count():
            for key, value in current.items():
                if key in recorded and recorded[key] != value:
                    where = {"hostname": "host", "netns": "network namespace"}[key]
                    raise HistoryError(f"{self.path} holds samples of {where} {recorded[key] or '(host)'!r}, "
                                       f"not {value or '(host)'!r}: record to another file")
        self.set_meta(kernel=platform.release(), **current)

    def append(self, interval: Interval) -> None:
        layers = {rule.id: rule.layer for rule in load_rules()}

        def action(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO samples VALUES (?, ?)", (interval.wall, interval.seconds))
            for finding, value in interval.drops.items():
                if value is None:
                    db.execute("INSERT OR REPLACE INTO gaps VALUES (?, ?)", (interval.wall, finding))
                elif value > 0:
                    db.execute("INSERT OR REPLACE INTO drops VALUES (?, ?, ?, ?)",
                               (interval.wall, finding, layers.get(finding, "unknown"), value))
        self._write("append a sample", action)
        # Paced by the samples' own clock (also when it steps back), so the first append
        # prunes and then at most one a minute.
        if not 0 <= interval.wall - self._pruned_at < _PRUNE_EVERY_S:
            self.prune(interval.wall - self.retention_s)
            self._pruned_at = interval.wall

    def prune(self, older_than: float) -> None:
        def action(db: sqlite3.Connection) -> None:
            for table in ("samples", "drops", "gaps"):
                db.execute(f"DELETE FROM {table} WHERE ts < ?", (older_than,))
        self._write("prune old samples", action)

    def count(self) -> int:
        """Number of recorded samples."""
        return self._query("SELECT count(*) FROM samples")[0][0]

    def samples(self, since: float | None = None) -> list[Sample]:
        """Every recorded interval, oldest first."""
        since = float("-inf") if since is None else since
        # One statement is one consistent read: a sample the recorder commits meanwhile is
        # either there with all its drops and gaps or not there at all (never a sample
        # that looks quiet because its drops were read before it was written).
        rows = self._query(
            "SELECT 0, ts, seconds, NULL FROM samples WHERE ts >= :since "
            "UNION ALL SELECT 1, ts, finding, drops FROM drops WHERE ts >= :since "
            "UNION ALL SELECT 2, ts, finding, NULL FROM gaps WHERE ts >= :since",
            {"since": since})
        seconds: dict[float, float] = {}
        drops: dict[float, dict[str, int]] = {}
        gaps: dict[float, list[str]] = {}
        for kind, ts, value, count in rows:
            if kind == 0:
                seconds[ts] = value
            elif kind == 1:
                drops.setdefault(ts, {})[value] = count
            else:
                gaps.setdefault(ts, []).append(value)
        return [Sample(ts, seconds[ts], drops.get(ts, {}), tuple(sorted(gaps.get(ts, ()))))
                for ts in sorted(seconds)]

    def close(self) -> None:
        """Close the file (idempotent); the last writer's close folds the WAL back in."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
