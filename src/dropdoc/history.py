"""Drop history in SQLite (`dropdoc watch --record history.db`), read back by `dropdoc report`.

Schema `dropdoc.history/2` (every new file):
  meta(key, value)                   schema, hostname, kernel, netns
  samples(ts, seconds)               one row per measured interval (ts = its end, unix time)
  drops(ts, finding, layer, drops)   only findings that dropped in that interval
  gap_runs(first, last, findings)    samples first..last (by ts), consecutive samples of one
                                     recorder, in which the same findings (comma-separated)
                                     could not be measured (None)
`dropdoc.history/1` files keep one `gaps(ts, finding)` row per sample and unmeasurable
finding; they are read, and appended to in their own layout. The change is why the version
moved: a finding this host lacks is a gap in *every* sample, and /1 wrote a row for it every
second (on this host 2 of the 3 rows a quiet sample costs); /2 writes one row per change of
the set. A dropdoc that reads only /1 refuses a /2 file in one line instead of reading its
gaps as zeros.

A finding with no drop row for a sample dropped nothing then; a sample with no row at all was
not measured (dropdoc was not running): the report draws that as a gap, never as zero.

One recorder per file: the recorder holds an flock(2) on it and a second one is refused (two
recorders of one place store overlapping intervals, and a report would add up both).
Samples are keyed by wall-clock time and stay in order: when the clock is stepped back (an
interval would begin before the last stored one ended), the samples stored after its start
are removed - the clock now wins, one series never overlaps itself - and append() says how
many. A recorder refuses a file whose newest sample is more than a minute ahead of the clock.
Retention: rows older than `retention_s` are deleted as new ones arrive (at most once a
minute), so a recorder left running for weeks stays small.
A reader that may not write to the file (another user's, read-only media) still reads it,
without leaving files next to it.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import platform
import sqlite3
import time
import urllib.parse
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

from .errors import DropdocError
from .meter import Interval
from .rules.engine import load_rules

SCHEMA = "dropdoc.history/2"
SCHEMA_V1 = "dropdoc.history/1"
READABLE = (SCHEMA_V1, SCHEMA)
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
_PRUNE_EVERY_S = 60.0
# A reader (`dropdoc report`) and the recorder share the file: WAL lets the reader see the
# last committed sample while the recorder writes the next one, and a writer that still
# finds the file busy waits this long before giving up with a one-line error.
_BUSY_TIMEOUT_S = 10.0
# Consecutive samples may overlap by this much without counting as a clock step: the wall
# and monotonic clocks of a snapshot are read microseconds apart, and NTP slews <= 0.5 ms/s.
_CLOCK_SLACK_S = 0.05
# A recorder refuses a file whose newest sample is further ahead of the clock than this.
_FUTURE_LIMIT_S = 60.0

# WITHOUT ROWID: the primary key is the row, so a sample costs one b-tree entry per
# table instead of a row plus an index entry (half the file for the same history).
_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples(ts REAL PRIMARY KEY, seconds REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops(ts REAL NOT NULL, finding TEXT NOT NULL, layer TEXT NOT NULL,
                                 drops INTEGER NOT NULL, PRIMARY KEY (ts, finding)) WITHOUT ROWID;
"""
_GAPS_DDL = {
    1: "CREATE TABLE IF NOT EXISTS gaps(ts REAL NOT NULL, finding TEXT NOT NULL, "
       "PRIMARY KEY (ts, finding)) WITHOUT ROWID;",
    2: "CREATE TABLE IF NOT EXISTS gap_runs(first REAL PRIMARY KEY, last REAL NOT NULL, "
       "findings TEXT NOT NULL) WITHOUT ROWID;",
}


class HistoryError(DropdocError):
    """A history file that cannot be opened or is not a dropdoc history."""


@dataclass
class Sample:
    ts: float
    seconds: float
    drops: dict[str, int]        # finding -> drops (only non-zero)
    gaps: tuple[str, ...]        # findings not measurable in this interval


@dataclass
class SampleColumns:
    """The samples of a history column-wise and sparse (`History.columns`): a week of 1 s
    samples is 600k rows, too many to build one Sample each for a report."""
    ts: list[float]                          # end of each interval, ascending
    seconds: list[float]                     # its length, same order
    drops: list[tuple[float, str, int]]      # (ts, finding, drops): the non-zero drops
    gaps: list[tuple[float, str]]            # (ts, finding): not measurable in that interval ...
    always_gaps: tuple[str, ...] = ()        # ... but for these, not measurable in any (rows left out)


@dataclass(frozen=True)
class Appended:
    """What append() did besides storing the sample."""
    removed: int = 0                 # samples removed: stamped after this one began (clock set back)
    removed_after: float | None = None


GapRun = tuple[float, float, str]    # (first ts, last ts, "finding,finding")


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


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class History:
    """One history file. create=True (the recorder) makes a new file or appends to a
    dropdoc history; create=False (readers) only opens an existing one and adds no sample.
    Anything else - a missing directory, an unrelated SQLite database, a file that is not
    SQLite, another schema version, a second recorder - is a one-line HistoryError, and
    the file is left untouched."""

    def __init__(self, path: str, retention_s: float = DEFAULT_RETENTION_S, create: bool = True) -> None:
        self.path = path
        self.retention_s = retention_s
        self.version = 2
        self._pruned_at = float("-inf")
        self.db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._last_ts: float | None = None      # newest stored sample (the recorder's)
        self._run: GapRun | None = None         # the gap run the next sample may extend (/2)
        if os.path.isdir(path):
            raise HistoryError(f"{path}: is a directory, not a history file")
        if not os.path.exists(path):
            if not create:
                raise HistoryError(f"{path}: no such history file")
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise HistoryError(f"{path}: directory {parent} does not exist")
        try:
            if create:
                self._lock()
                self.db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S)
            else:
                self.db = sqlite3.connect(self._reader_uri(), uri=True, timeout=_BUSY_TIMEOUT_S)
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

    def _lock(self) -> None:
        """One recorder per file. The descriptor stays open until close(), after SQLite's:
        closing any descriptor of the file drops the POSIX locks SQLite holds on it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise HistoryError(f"cannot record to it ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise HistoryError("another recorder (dropdoc watch --record) is writing to it; "
                                   "one recorder per file: record to another file") from None
            raise HistoryError(f"cannot lock it ({exc.strerror})") from None
        self._lock_fd = fd

    def _reader_uri(self) -> str:
        """How a reader opens the file. Its owner: read-write but never created (closing
        then folds the WAL back in and removes the -wal/-shm files, as the recorder does).
        Anyone else reads without writing a byte: through the recorder's -shm index when
        there is one, else the file as immutable - unless a -wal file still holds samples
        that only that index could show (a reader must not leave -shm/-wal files of its
        own next to another user's history: the recorder could not write them)."""
        absolute = os.path.abspath(self.path)
        uri = "file:" + urllib.parse.quote(absolute)
        directory = os.path.dirname(absolute)
        if os.access(absolute, os.W_OK) and os.access(directory, os.W_OK):
            return uri + "?mode=rw"
        if os.path.exists(absolute + "-shm"):
            return uri + "?mode=ro"
        wal = absolute + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise HistoryError(f"{os.path.basename(wal)} holds samples not yet folded into the file, and "
                               f"this user cannot write to {directory} to read them: run as the recorder's "
                               f"user, or copy the files to a writable directory")
        return uri + "?immutable=1"

    def _open(self, create: bool) -> None:
        assert self.db is not None
        schema = self._schema()
        if schema is None:
            tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            if tables:
                raise HistoryError(f"an SQLite database but not a dropdoc history (tables: {', '.join(sorted(tables))})")
            if not create:
                raise HistoryError("empty: not written by dropdoc watch --record")
        elif schema not in READABLE:
            raise HistoryError(f"history schema {schema!r}, this dropdoc reads {' and '.join(map(repr, READABLE))}")
        self.version = 1 if schema == SCHEMA_V1 else 2
        if create:
            # WAL is a property of the file: set once by the writer, readers inherit it.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses the last sample at most
            self.db.executescript(_DDL + _GAPS_DDL[self.version])
            if schema is None:
                with self.db:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
            self._last_ts = self.db.execute("SELECT max(ts) FROM samples").fetchone()[0]
            ahead = (self._last_ts or 0.0) - time.time()
            if ahead > _FUTURE_LIMIT_S:
                raise HistoryError(f"its newest sample ({iso(self._last_ts)}) is {ahead:.0f} s ahead of this "
                                   f"clock: the clock was set back since; samples are keyed by wall time, "
                                   f"record to another file")

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

    # -- writing -----------------------------------------------------------------------

    def append(self, interval: Interval) -> Appended:
        layers = {rule.id: rule.layer for rule in load_rules()}
        seconds = max(interval.seconds, 0.0)
        # Samples stored after `limit` overlap this interval: the clock was set back.
        limit = min(interval.wall - seconds + min(_CLOCK_SLACK_S, seconds / 2),
                    math.nextafter(interval.wall, -math.inf))
        stepped_back = self._last_ts is not None and self._last_ts > limit
        gaps = sorted(f for f, v in interval.drops.items() if v is None)
        result = {"removed": 0, "run": None}

        def action(db: sqlite3.Connection) -> None:
            if stepped_back:
                result["removed"] = self._remove_after(db, limit)
            db.execute("INSERT OR REPLACE INTO samples VALUES (?, ?)", (interval.wall, interval.seconds))
            db.executemany("INSERT OR REPLACE INTO drops VALUES (?, ?, ?, ?)",
                           [(interval.wall, f, layers.get(f, "unknown"), v)
                            for f, v in interval.drops.items() if v is not None and v > 0])
            result["run"] = self._write_gaps(db, interval.wall, gaps, None if stepped_back else self._run)
        self._write("append a sample", action)
        self._run, self._last_ts = result["run"], interval.wall
        # Paced by the samples' own clock (also when it steps back), so the first append
        # prunes and then at most one a minute.
        if not 0 <= interval.wall - self._pruned_at < _PRUNE_EVERY_S:
            self.prune(interval.wall - self.retention_s)
            self._pruned_at = interval.wall
        return Appended(result["removed"], limit if stepped_back else None)

    def _write_gaps(self, db: sqlite3.Connection, ts: float, gaps: list[str], run: GapRun | None) -> GapRun | None:
        """Store the sample's unmeasurable findings; returns the run the next sample may extend."""
        if self.version == 1:
            db.executemany("INSERT OR REPLACE INTO gaps VALUES (?, ?)", [(ts, f) for f in gaps])
            return None
        if not gaps:
            return None
        findings = ",".join(gaps)
        if run is not None and run[2] == findings and run[1] == self._last_ts:
            db.execute("UPDATE gap_runs SET last = ? WHERE first = ?", (ts, run[0]))
            return run[0], ts, findings
        db.execute("INSERT OR REPLACE INTO gap_runs VALUES (?, ?, ?)", (ts, ts, findings))
        return ts, ts, findings

    def _remove_after(self, db: sqlite3.Connection, limit: float) -> int:
        removed = db.execute("DELETE FROM samples WHERE ts > ?", (limit,)).rowcount
        db.execute("DELETE FROM drops WHERE ts > ?", (limit,))
        if self.version == 1:
            db.execute("DELETE FROM gaps WHERE ts > ?", (limit,))
        else:
            db.execute("DELETE FROM gap_runs WHERE first > ?", (limit,))
            db.execute("UPDATE gap_runs SET last = ? WHERE last > ?", (limit, limit))
        return removed

    def prune(self, older_than: float) -> None:
        def action(db: sqlite3.Connection) -> None:
            for table in ("samples", "drops"):
                db.execute(f"DELETE FROM {table} WHERE ts < ?", (older_than,))
            if self.version == 1:
                db.execute("DELETE FROM gaps WHERE ts < ?", (older_than,))
            else:
                db.execute("DELETE FROM gap_runs WHERE last < ?", (older_than,))
        self._write("prune old samples", action)

    # -- reading -----------------------------------------------------------------------

    def count(self) -> int:
        """Number of recorded samples."""
        return self._query("SELECT count(*) FROM samples")[0][0]

    def samples(self, since: float | None = None) -> list[Sample]:
        """Every recorded interval, oldest first."""
        since = float("-inf") if since is None else since
        gaps_sql = ("SELECT 2, ts, finding, NULL FROM gaps WHERE ts >= :since" if self.version == 1 else
                    "SELECT 3, first, findings, last FROM gap_runs WHERE last >= :since")
        # One statement is one consistent read: a sample the recorder commits meanwhile is
        # either there with all its drops and gaps or not there at all (never a sample
        # that looks quiet because its drops were read before it was written).
        rows = self._query(
            "SELECT 0, ts, seconds, NULL FROM samples WHERE ts >= :since "
            "UNION ALL SELECT 1, ts, finding, drops FROM drops WHERE ts >= :since "
            f"UNION ALL {gaps_sql}", {"since": since})
        seconds: dict[float, float] = {}
        drops: dict[float, dict[str, int]] = {}
        gaps: dict[float, tuple[str, ...]] = {}
        runs: list[GapRun] = []
        for kind, ts, value, extra in rows:
            if kind == 0:
                seconds[ts] = value
            elif kind == 1:
                drops.setdefault(ts, {})[value] = extra
            elif kind == 2:
                gaps[ts] = (*gaps.get(ts, ()), value)
            else:
                runs.append((ts, extra, value))
        order = sorted(seconds)
        for lo, hi, findings in _spans(order, runs):
            for i in range(lo, hi):
                gaps[order[i]] = findings
        return [Sample(ts, seconds[ts], drops.get(ts, {}), tuple(sorted(gaps.get(ts, ())))) for ts in order]

    def columns(self, since: float | None = None) -> SampleColumns:
        """The same samples as samples(), as columns: one row per drop or gap instead of
        one object per sample, and the gaps of a finding that no sample could measure
        (a counter this host lacks) counted instead of returned."""
        since = float("-inf") if since is None else since
        db = self._conn()
        try:
            # One read transaction: every statement sees the same commits of the recorder.
            db.execute("BEGIN")
            try:
                rows = db.execute("SELECT ts, seconds FROM samples WHERE ts >= ? ORDER BY ts", (since,)).fetchall()
                drops = db.execute("SELECT ts, finding, drops FROM drops WHERE ts >= ? ORDER BY ts",
                                   (since,)).fetchall()
                dropped = {finding for _, finding, _ in drops}
                if self.version == 1:
                    counts = db.execute("SELECT finding, count(*) FROM gaps WHERE ts >= ? GROUP BY finding",
                                        (since,)).fetchall()
                    always = tuple(sorted(f for f, n in counts if rows and n >= len(rows) and f not in dropped))
                    gaps = db.execute(f"SELECT ts, finding FROM gaps WHERE ts >= ? AND finding NOT IN "
                                      f"({', '.join('?' * len(always))}) ORDER BY ts", (since, *always)).fetchall()
                else:
                    runs = db.execute("SELECT first, last, findings FROM gap_runs WHERE last >= ?",
                                      (since,)).fetchall()
            finally:
                db.rollback()  # nothing was written: only ends the read transaction
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot read it ({exc})") from None
        ts = [r[0] for r in rows]
        if self.version != 1:
            always, gaps = _columns_of_runs(ts, runs, dropped)
        return SampleColumns(ts, [r[1] for r in rows], drops, gaps, always)

    def close(self) -> None:
        """Close the file (idempotent); the last writer's close folds the WAL back in."""
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _spans(ts: list[float], runs: list[GapRun]) -> list[tuple[int, int, tuple[str, ...]]]:
    """(lo, hi, findings) per gap run: the indexes lo..hi-1 of the samples (sorted `ts`)
    it covers, in time order."""
    spans = []
    for first, last, findings in sorted(runs):
        lo, hi = bisect_left(ts, first), bisect_right(ts, last)
        if hi > lo:
            spans.append((lo, hi, tuple(findings.split(","))))
    return spans


def _columns_of_runs(ts: list[float], runs: list[GapRun], dropped: set[str]
                     ) -> tuple[tuple[str, ...], list[tuple[float, str]]]:
    """(always_gaps, gaps) of SampleColumns from gap runs."""
    spans = _spans(ts, runs)
    covered: dict[str, int] = {}
    for lo, hi, findings in spans:
        for finding in findings:
            covered[finding] = covered.get(finding, 0) + hi - lo
    always = tuple(sorted(f for f, n in covered.items() if ts and n >= len(ts) and f not in dropped))
    gaps = [(ts[i], f) for lo, hi, findings in spans for i in range(lo, hi) for f in findings if f not in always]
    return always, gaps
