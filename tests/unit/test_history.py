"""SQLite history: round trip, gaps, retention, bad files, a reader while the recorder writes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from dropdoc.errors import DropdocError
from dropdoc.history import SCHEMA, History, HistoryError, parse_duration
from dropdoc.meter import Interval

T0 = 1_700_000_000.0


def interval(t: float, seconds: float = 1.0, **drops: int | None) -> Interval:
    values = {"tcp.listen_overflow": 0, "udp.no_port": 0, "netfilter.drop": 0}
    values.update({k.replace("__", "."): v for k, v in drops.items()})
    return Interval(wall=T0 + t, seconds=seconds, drops=values)


def test_round_trip_keeps_drops_zero_and_gaps_apart(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        history.describe_host("srv")
        history.append(interval(1, tcp__listen_overflow=286, netfilter__drop=None))
        history.append(interval(2))
        history.append(interval(3, seconds=0.5, udp__no_port=3))
    with History(path, create=False) as history:
        samples = history.samples()
        meta = history.meta()
        assert history.count() == 3
    assert [s.ts for s in samples] == [T0 + 1, T0 + 2, T0 + 3]
    first, quiet, last = samples
    assert first.drops == {"tcp.listen_overflow": 286}
    assert first.gaps == ("netfilter.drop",)          # not measured: a gap, not a zero
    assert quiet.drops == {} and quiet.gaps == ()    # measured, nothing dropped
    assert last.seconds == 0.5 and last.drops == {"udp.no_port": 3}
    assert meta["schema"] == SCHEMA and meta["netns"] == "srv" and meta["hostname"]


def test_samples_since(tmp_path):
    with History(str(tmp_path / "h.db")) as history:
        for t in range(10):
            history.append(interval(t, udp__no_port=t + 1))
        assert [s.drops["udp.no_port"] for s in history.samples(since=T0 + 7)] == [8, 9, 10]


def test_retention_prunes_old_samples_as_new_ones_arrive(tmp_path):
    with History(str(tmp_path / "h.db"), retention_s=100) as history:
        for t in range(400):
            history.append(interval(t, tcp__listen_overflow=1, netfilter__drop=None))
        samples = history.samples()
        # Pruned at most once a minute (of sample time): between retention and retention + 60 s kept.
        assert 100 <= len(samples) <= 161
        assert samples[-1].ts == T0 + 399
        assert samples[0].ts >= T0 + 399 - 160
        # Drops and gaps of pruned samples are gone too: nothing dangles.
        old = history.db.execute("SELECT count(*) FROM drops WHERE ts < ?", (samples[0].ts,)).fetchone()[0]
        old += history.db.execute("SELECT count(*) FROM gaps WHERE ts < ?", (samples[0].ts,)).fetchone()[0]
        assert old == 0


def test_prune_explicitly(tmp_path):
    with History(str(tmp_path / "h.db")) as history:
        for t in range(5):
            history.append(interval(t, udp__no_port=1))
        history.prune(T0 + 3)
        assert [s.ts for s in history.samples()] == [T0 + 3, T0 + 4]


def test_not_sqlite_is_one_line_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the samples you are looking for\n" * 100)
    with pytest.raises(HistoryError, match="not a dropdoc history") as err:
        History(str(path))
    assert "\n" not in str(err.value)
    assert path.read_text().startswith("these are not")  # untouched


def test_unrelated_sqlite_database_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "app.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users(name TEXT)")
    db.commit()
    db.close()
    for create in (True, False):
        with pytest.raises(HistoryError, match="not a dropdoc history.*users"):
            History(path, create=create)
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]
    db.close()


def test_other_schema_version_is_refused(tmp_path):
    path = str(tmp_path / "h.db")
    History(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='dropdoc.history/9' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="history/9"):
        History(path, create=False)


def test_missing_file_directory_and_bad_places(tmp_path):
    with pytest.raises(HistoryError, match="no such history file"):
        History(str(tmp_path / "absent.db"), create=False)
    assert not (tmp_path / "absent.db").exists()  # a reader never creates one
    with pytest.raises(HistoryError, match="is a directory"):
        History(str(tmp_path))
    with pytest.raises(HistoryError, match="does not exist"):
        History(str(tmp_path / "no" / "such" / "h.db"))
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(HistoryError, match="not written by dropdoc"):
        History(str(empty), create=False)


@pytest.mark.parametrize("where", ["header", "middle", "cut"])
def test_damaged_history_is_one_line_error(tmp_path, where):
    path = tmp_path / "h.db"
    with History(str(path)) as history:
        for t in range(3000):
            history.append(interval(t, tcp__listen_overflow=t + 1, netfilter__drop=None))
    data = path.read_bytes()
    middle = len(data) // 2
    damaged = {"header": data[:100] + b"\xff" * 4000 + data[4100:],
               "middle": data[:middle] + b"\xa5" * 8192 + data[middle + 8192:],
               "cut": data[:middle]}[where]
    path.write_bytes(damaged)
    with pytest.raises(HistoryError) as err, History(str(path), create=False) as history:
        history.samples()   # opening may succeed: the damage is found while reading
    assert "\n" not in str(err.value)


def test_one_file_is_one_series(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        history.describe_host("srv")
        history.describe_host("srv")          # the same place again: fine
        history.append(interval(1, udp__no_port=1))
    with History(path) as history:
        with pytest.raises(HistoryError, match="'srv'.*record to another file"):
            history.describe_host(None)
        with pytest.raises(HistoryError):
            history.describe_host("other")
    with History(str(tmp_path / "empty.db")) as history:
        history.describe_host("a")
        history.describe_host("b")            # no samples yet: nothing mixed


def test_closed_history(tmp_path):
    history = History(str(tmp_path / "h.db"))
    history.close()
    history.close()  # idempotent
    with pytest.raises(HistoryError, match="closed"):
        history.samples()


def test_wal_and_files_cleaned_up_on_close(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        history.append(interval(1, udp__no_port=1))
        assert history.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(os.listdir(tmp_path)) == ["h.db"]


WRITER = textwrap.dedent("""
    import sys
    from dropdoc.history import History
    from dropdoc.meter import Interval
    with History(sys.argv[1]) as h:
        print("ready", flush=True)
        for t in range(int(sys.argv[2])):
            # Every sample drops something: a reader must never see one without its drops.
            h.append(Interval(wall=1.7e9 + t, seconds=1.0,
                              drops={"tcp.listen_overflow": t + 1, "udp.no_port": 0, "netfilter.drop": None}))
""")


def test_reader_while_the_recorder_writes_sees_whole_samples(tmp_path):
    path = str(tmp_path / "h.db")
    History(path).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, "3000"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        reads, seen = 0, 0
        deadline = time.monotonic() + 30
        with History(path, create=False) as reader:
            while writer.poll() is None and time.monotonic() < deadline:
                samples = reader.samples()      # never "database is locked", never a torn sample
                for sample in samples:
                    assert sample.drops == {"tcp.listen_overflow": round(sample.ts - 1.7e9) + 1}
                    assert sample.gaps == ("netfilter.drop",)
                reads += 1
                seen = max(seen, len(samples))
        assert writer.wait(timeout=30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert reads >= 2 and seen > 0
    with History(path, create=False) as history:
        assert history.count() == 3000


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800),
                                          ("2.5", 2.5), (" 1H ", 3600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "-1d", "0", "nan", "inf", "1e999d", "7 days"])
def test_parse_duration_rejects(text):
    with pytest.raises(DropdocError):
        parse_duration(text)
