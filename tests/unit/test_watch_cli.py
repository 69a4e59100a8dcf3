"""`dropdoc watch` argument handling that fails before any counter is read, and the stop
flag its signal handlers set."""

from __future__ import annotations

import time

from click.testing import CliRunner

from dropdoc.cli import main
from dropdoc.commands.watch import StopFlag


def invoke(*args: str):
    return CliRunner().invoke(main, ["watch", *args])


def test_retention_needs_record():
    result = invoke("--retention", "1d", "--count", "1")
    assert result.exit_code == 2 and "--retention applies to --record" in result.output


def test_bad_durations_are_usage_errors():
    for option in ("--window", "--retention"):
        result = invoke(option, "soon", "--record", "/nonexistent/h.db")
        assert result.exit_code == 2
        assert f"Invalid value for {option}: not a duration: 'soon'" in result.output


def test_record_into_a_file_that_is_not_a_history_is_one_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not sqlite\n" * 200)
    result = invoke("--record", str(path), "--count", "1")
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [f"dropdoc: {path}: not a dropdoc history (file is not a database)"]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_record_into_a_missing_directory_is_one_line(tmp_path):
    result = invoke("--record", str(tmp_path / "no" / "h.db"), "--count", "1")
    assert result.exit_code == 3 and "does not exist" in result.output and "Traceback" not in result.output


def test_bad_interval_and_count():
    assert invoke("--interval", "0").exit_code == 2
    assert invoke("--count", "0").exit_code == 2


def test_stop_flag_wait_returns_early_once_set():
    flag = StopFlag()
    start = time.monotonic()
    assert flag.wait(0.06) is False and time.monotonic() - start >= 0.05
    flag.set(15, None)  # called as a signal handler: (signum, frame)
    start = time.monotonic()
    assert flag.wait(10) is True and flag.is_set()
    assert time.monotonic() - start < 0.5


def test_a_clock_set_back_while_recording_is_told_and_counted(tmp_path):
    from dropdoc.commands.watch import _record
    from dropdoc.history import History
    from dropdoc.meter import Interval
    from dropdoc.render import watch_view

    t0 = 1_700_000_000.0
    state = watch_view.new_state("vm", None, 1.0, 60, started=0.0, recording="h.db", recorded=0)
    with History(str(tmp_path / "h.db")) as history:
        for t in range(1, 11):
            _record(state, history, Interval(wall=t0 + t, seconds=1.0, drops={"udp.no_port": 0}))
        assert state.notice is None and state.recorded == 10
        _record(state, history, Interval(wall=t0 + 4, seconds=1.0, drops={"udp.no_port": 0}))  # NTP stepped back 7 s
        assert state.recorded == history.count() == 4
    assert state.notice == "the clock was set back: 7 samples stamped after 2023-11-14T22:13:23Z removed from h.db"
