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
from dropdoc.history import SCHEMA, SCHEMA_V1, History, HistoryError, parse_duration
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
        old += history.db.execute("SELECT count(*) FROM gap_runs WHERE last < ?", (samples[0].ts,)).fetchone()[0]
        assert old == 0
        assert all(s.gaps == ("netfilter.drop",) for s in samples)


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


# --- dropdoc.history/2: gaps as runs; /1 files still read and appended to ----------------------

V1_DDL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples(ts REAL PRIMARY KEY, seconds REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE drops(ts REAL NOT NULL, finding TEXT NOT NULL, layer TEXT NOT NULL,
                   drops INTEGER NOT NULL, PRIMARY KEY (ts, finding)) WITHOUT ROWID;
CREATE TABLE gaps(ts REAL NOT NULL, finding TEXT NOT NULL, PRIMARY KEY (ts, finding)) WITHOUT ROWID;
"""


def v1_file(path: str) -> str:
    """An empty history as dropdoc wrote it before /2 (the layout is the test's own copy)."""
    db = sqlite3.connect(path)
    db.executescript(V1_DDL)
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_V1,))
    db.commit()
    db.close()
    return path


def shaped(t: int) -> Interval:
    """A host like this one: two findings never measurable, a third now and then."""
    return interval(t, tcp__listen_overflow=t % 7, cloud__allowance_exceeded=None,
                    netfilter__drop=None, udp__no_port=None if 40 <= t < 45 else 0)


def test_an_unmeasurable_finding_costs_one_row_per_change_not_one_per_sample(tmp_path):
    with History(str(tmp_path / "h.db")) as history:
        for t in range(1, 101):
            history.append(shaped(t))
        runs = history.db.execute("SELECT first, last, findings FROM gap_runs ORDER BY first").fetchall()
        samples = history.samples()
    assert runs == [(T0 + 1, T0 + 39, "cloud.allowance_exceeded,netfilter.drop"),
                    (T0 + 40, T0 + 44, "cloud.allowance_exceeded,netfilter.drop,udp.no_port"),
                    (T0 + 45, T0 + 100, "cloud.allowance_exceeded,netfilter.drop")]
    assert [s.gaps for s in samples[38:41]] == [("cloud.allowance_exceeded", "netfilter.drop"),
                                                ("cloud.allowance_exceeded", "netfilter.drop", "udp.no_port"),
                                                ("cloud.allowance_exceeded", "netfilter.drop", "udp.no_port")]


def test_a_new_recorder_run_starts_a_new_gap_run(tmp_path):
    path = str(tmp_path / "h.db")
    for start in (1, 50):                       # the recorder stopped at 10 and started again at 50
        with History(path) as history:
            for t in range(start, start + 10):
                history.append(shaped(t))
    with History(path, create=False) as history:
        samples = history.samples()
        runs = history.db.execute("SELECT count(*) FROM gap_runs").fetchone()[0]
    assert runs == 2 and len(samples) == 20
    assert all(s.gaps == ("cloud.allowance_exceeded", "netfilter.drop") for s in samples)


def test_version_1_and_2_files_read_the_same(tmp_path):
    files = {1: v1_file(str(tmp_path / "v1.db")), 2: str(tmp_path / "v2.db")}
    read = {}
    for version, path in files.items():
        with History(path) as history:
            assert history.version == version
            for t in range(1, 120):
                history.append(shaped(t))
        with History(path, create=False) as history:
            read[version] = (history.samples(), history.samples(since=T0 + 42), history.columns(),
                             history.columns(since=T0 + 42), history.meta()["schema"])
    assert read[1][:4] == read[2][:4]
    assert (read[1][4], read[2][4]) == (SCHEMA_V1, SCHEMA)
    columns = read[2][2]
    assert columns.always_gaps == ("cloud.allowance_exceeded", "netfilter.drop")
    assert columns.gaps == [(T0 + t, "udp.no_port") for t in range(40, 45)]


def test_version_1_file_keeps_its_layout_when_appended_to(tmp_path):
    path = v1_file(str(tmp_path / "v1.db"))
    with History(path) as history:
        history.append(shaped(1))
        assert history.db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 2
        assert history.db.execute("SELECT name FROM sqlite_master WHERE name='gap_runs'").fetchone() is None


def test_a_second_recorder_is_refused_a_reader_is_not(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as recorder:
        recorder.append(shaped(1))
        with pytest.raises(HistoryError, match="another recorder .* record to another file") as err:
            History(path)
        assert "\n" not in str(err.value)
        with History(path, create=False) as reader:
            assert reader.count() == 1
        recorder.append(shaped(2))              # the refused one changed nothing
    with History(path) as again:                # the lock went with the first recorder
        again.append(shaped(3))
        assert again.count() == 3


def test_two_recorders_starting_on_a_new_file_one_wins(tmp_path):
    path = str(tmp_path / "h.db")
    script = textwrap.dedent("""
        import sys, time
        from dropdoc.history import History, HistoryError
        time.sleep(max(float(sys.argv[2]) - time.time(), 0))
        try:
            with History(sys.argv[1]) as h:
                time.sleep(0.5)
            print("recorded")
        except HistoryError as exc:
            print("refused" if "another recorder" in str(exc) else f"error: {exc}")
    """)
    at = str(time.time() + 0.5)
    procs = [subprocess.Popen([sys.executable, "-c", script, path, at], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
    assert outcomes == ["recorded", "refused", "refused"]
    with History(path, create=False) as history:
        assert history.meta()["schema"] == SCHEMA


@pytest.mark.parametrize("version", [1, 2])
def test_clock_set_back_removes_the_samples_it_overlaps_and_says_so(tmp_path, version):
    path = str(tmp_path / "h.db")
    if version == 1:
        v1_file(path)
    with History(path) as history:
        for t in range(1, 11):
            assert history.append(shaped(t)).removed == 0
        stepped = history.append(interval(5.5, tcp__listen_overflow=9, netfilter__drop=None))
        assert stepped.removed == 6 and stepped.removed_after == pytest.approx(T0 + 4.5, abs=0.06)
        history.append(interval(6.5, netfilter__drop=None))
        samples = history.samples()
    # One series in time order: 1..4 from before the step, then the new clock's samples.
    assert [s.ts - T0 for s in samples] == [1, 2, 3, 4, 5.5, 6.5]
    assert samples[4].drops == {"tcp.listen_overflow": 9}
    assert [s.gaps for s in samples[3:]] == [("cloud.allowance_exceeded", "netfilter.drop"),
                                            ("netfilter.drop",), ("netfilter.drop",)]


def test_tiny_overlap_between_consecutive_samples_is_not_a_clock_step(tmp_path):
    with History(str(tmp_path / "h.db")) as history:
        history.append(interval(1))
        assert history.append(Interval(wall=T0 + 2, seconds=1.01, drops={})).removed == 0
        assert history.count() == 2


def test_recorder_refuses_a_file_whose_samples_are_ahead_of_the_clock(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        history.append(Interval(wall=time.time() + 3600, seconds=1.0, drops={}))
    with pytest.raises(HistoryError, match="ahead of this clock.*record to another file"):
        History(path)
    with History(path, create=False) as reader:   # reading it is fine
        assert reader.count() == 1

