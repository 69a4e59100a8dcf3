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

import os
import platform
import sqlite3
import time
from dataclasses import dataclass

from .errors import DropdocError
from .meter import Interval
from .rules.engine import load_rules

SCHEMA = "dropdoc.history/1"
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
_PRUNE_EVERY_S = 60.0

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples(ts REAL PRIMARY KEY, seconds REAL NOT NULL);
CREATE TABLE IF NOT EXISTS drops(ts REAL NOT NULL, finding TEXT NOT NULL, layer TEXT NOT NULL,
                                 drops INTEGER NOT NULL, PRIMARY KEY (ts, finding));
CREATE TABLE IF NOT EXISTS gaps(ts REAL NOT NULL, finding TEXT NOT NULL, PRIMARY KEY (ts, finding));
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
    if value <= 0:
        raise DropdocError(f"duration must be positive: {text!r}")
    return value


class History:
    def __init__(self, path: str, retention_s: float = DEFAULT_RETENTION_S, create: bool = True) -> None:
        if not create and not os.path.exists(path):
            raise HistoryError(f"{path}: no such history file")
        try:
            self.db = sqlite3.connect(path)
            self.db.executescript(_DDL)
            self._check_schema(create)
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{path}: not a dropdoc history ({exc})") from None
        self.path = path
        self.retention_s = retention_s
        self._pruned_at = 0.0

    def _check_schema(self, create: bool) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            if not create:
                raise HistoryError("no schema row: not written by dropdoc watch --record")
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
            self.db.commit()
        elif row[0] != SCHEMA:
            raise HistoryError(f"history schema {row[0]!r}, this dropdoc reads {SCHEMA!r}")

    def set_meta(self, **values: str | None) -> None:
        with self.db:
            for key, value in values.items():
                if value is not None:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def describe_host(self, netns: str | None) -> None:
        self.set_meta(hostname=platform.node(), kernel=platform.release(), netns=netns or "")

    def append(self, interval: Interval) -> None:
        layers = {rule.id: rule.layer for rule in load_rules()}
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO samples VALUES (?, ?)", (interval.wall, interval.seconds))
            for finding, value in interval.drops.items():
                if value is None:
                    self.db.execute("INSERT OR REPLACE INTO gaps VALUES (?, ?)", (interval.wall, finding))
                elif value > 0:
                    self.db.execute("INSERT OR REPLACE INTO drops VALUES (?, ?, ?, ?)",
                                    (interval.wall, finding, layers.get(finding, "unknown"), value))
        now = time.monotonic()
        if now - self._pruned_at >= _PRUNE_EVERY_S:
            self.prune(interval.wall - self.retention_s)
            self._pruned_at = now

    def prune(self, older_than: float) -> None:
        with self.db:
            for table in ("samples", "drops", "gaps"):
                self.db.execute(f"DELETE FROM {table} WHERE ts < ?", (older_than,))

    def samples(self, since: float | None = None) -> list[Sample]:
        """Every recorded interval, oldest first."""
        since = float("-inf") if since is None else since
        drops: dict[float, dict[str, int]] = {}
        for ts, finding, value in self.db.execute("SELECT ts, finding, drops FROM drops WHERE ts >= ?", (since,)):
            drops.setdefault(ts, {})[finding] = value
        gaps: dict[float, list[str]] = {}
        for ts, finding in self.db.execute("SELECT ts, finding FROM gaps WHERE ts >= ?", (since,)):
            gaps.setdefault(ts, []).append(finding)
        return [Sample(ts, seconds, drops.get(ts, {}), tuple(sorted(gaps.get(ts, ()))))
                for ts, seconds in self.db.execute("SELECT ts, seconds FROM samples WHERE ts >= ? ORDER BY ts", (since,))]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
