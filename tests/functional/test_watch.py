"""`dropdoc watch` against the real kernel: the reference case's drops seen live, recorded,
and checked against TcpExt.ListenOverflows read independently in the same namespace; the
live view on a real pseudo-terminal; Ctrl-C/SIGTERM; errors as one line."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest

from dropdoc.history import History
from dropdoc.meter import Interval
from dropdoc.lab import scenarios

from .conftest import DROPDOC, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
BARS = set("▂▃▄▅▆▇█")  # a sparkline block above zero


class NetstatReader:
    """A `cat /proc/net/netstat` inside the namespace on demand, through one long-lived
    `ip netns exec` shell: a read costs well under a millisecond instead of a ~10 ms
    process start, so it lands right next to the watcher's own samples."""

    def __init__(self, netns: str) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "sh", "-c", "while read _; do cat /proc/net/netstat; echo END; done"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def counter(self, section: str, name: str) -> int:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        lines = []
        while (line := self.process.stdout.readline()) and line != "END\n":
            lines.append(line.split())
        for header, values in zip(lines[::2], lines[1::2], strict=True):
            if header[0] == f"{section}:":
                return int(values[header.index(name)])
        raise AssertionError(f"{section}.{name} not in /proc/net/netstat")

    def close(self) -> None:
        self.process.stdin.close()          # the shell's loop ends by itself
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def watchdog(process: subprocess.Popen, seconds: float) -> threading.Timer:
    """Kill `process` (by PID) if the test hangs; cancelled when it is done."""
    timer = threading.Timer(seconds, lambda: process.poll() is None and process.kill())
    timer.daemon = True
    timer.start()
    return timer


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def test_json_lines_and_history_match_the_kernels_listen_overflows(no_leftovers, tmp_path):
    db = str(tmp_path / "h.db")
    with scenarios.running("listen-overflow") as lab:
        reader = NetstatReader(lab.netns)
        watch = subprocess.Popen([*DROPDOC, "watch", "--netns", lab.netns, "--count", "6", "--format", "json",
                                  "--record", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timer = watchdog(watch, 40)
        try:
            # The watcher prints this once its baseline sample is taken; no load runs yet,
            # so nothing can drop between that sample and `before`.
            assert "dropdoc watch:" in watch.stderr.readline()
            before = reader.counter("TcpExt", "ListenOverflows")
            lab.start_load()
            records = [json.loads(watch.stdout.readline()) for _ in range(6)]
            # Read right after the 6th line, i.e. within a millisecond or two of the
            # watcher's last sample.
            after = reader.counter("TcpExt", "ListenOverflows")
            assert watch.wait(timeout=20) == 0
            load = lab.wait_load()
        finally:
            timer.cancel()
            stop(watch)
            reader.close()
        # Not root: entering the namespace is refused in one line.
        denied = run_cli("watch", "--netns", lab.netns, "--count", "1", user="nobody", timeout=30)
    assert load["started"] == 400
    drops = [r["drops"]["tcp.listen_overflow"] for r in records]
    assert all(d is not None for d in drops), drops
    assert sum(drops) > 0
    assert records[-1]["totals"]["tcp.listen_overflow"] == sum(drops)
    assert all(r["netns"] == lab.netns and r["schema"] == "dropdoc.watch/1" for r in records)
    with History(db, create=False) as history:
        samples = history.samples()
        meta = history.meta()
    assert len(samples) == 6 and meta["netns"] == lab.netns
    recorded = sum(s.drops.get("tcp.listen_overflow", 0) for s in samples)
    assert recorded == sum(drops)
    assert [s.ts for s in samples] == [r["time"] for r in records]
    # The kernel's own count over the same period. `before` is exact (no load yet); a drop
    # may land between the watcher's last sample and `after` (the lab's client and server
    # keep retransmitting for a few seconds after the burst): a couple at most in ~1 ms.
    kernel = after - before
    assert 0 <= kernel - recorded <= 2, (kernel, recorded, drops)
    assert denied.returncode == 3
    assert len(denied.stderr.strip().splitlines()) == 1 and "root" in denied.stderr
    assert not os.path.exists(db + "-wal")


def test_live_view_on_a_terminal_draws_sparklines_and_stops_on_ctrl_c(no_leftovers):
    with scenarios.running("listen-overflow") as lab:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
        watch = subprocess.Popen([*DROPDOC, "watch", "--netns", lab.netns, "--interval", "0.5", "--window", "10s",
                                  "--count", "40"], stdin=slave, stdout=slave, stderr=slave,
                                 env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
        os.close(slave)
        timer = watchdog(watch, 40)
        output, started, interrupted_at = b"", False, None
        try:
            deadline = time.monotonic() + 35
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:     # EIO: the watcher closed the terminal
                        break
                    if not chunk:
                        break
                    output += chunk
                text = ANSI.sub("", output.decode("utf-8", errors="replace"))
                if not started and "0 intervals" in text:
                    lab.start_load()
                    started = True
                drawn = [line for line in text.splitlines() if "tcp.listen_overflow" in line]
                if interrupted_at is None and any(BARS & set(line) for line in drawn):
                    watch.send_signal(signal.SIGINT)     # Ctrl-C
                    interrupted_at = time.monotonic()
                if watch.poll() is not None and not ready:
                    break
            code = watch.wait(timeout=10)
            lab.wait_load()
        finally:
            timer.cancel()
            stop(watch)
            os.close(master)
    assert started and interrupted_at is not None, text[-2000:]
    assert code == 0
    assert "Traceback" not in text and f"netns {lab.netns}" in text
    assert "transport" in drawn[-1]
    assert "not recording" in text


def test_sigterm_closes_the_history_and_exits_0(tmp_path):
    db = str(tmp_path / "h.db")
    watch = subprocess.Popen([*DROPDOC, "watch", "--interval", "0.2", "--format", "json", "--record", db,
                              "--count", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = watchdog(watch, 30)
    try:
        lines = [watch.stdout.readline() for _ in range(3)]
        watch.send_signal(signal.SIGTERM)
        rest, err = watch.communicate(timeout=10)
    finally:
        timer.cancel()
        stop(watch)
    assert watch.returncode == 0, err
    records = [json.loads(line) for line in lines + rest.splitlines()]
    assert 3 <= len(records) < 200
    with History(db, create=False) as history:
        assert history.count() == len(records)          # every printed interval was recorded
    assert sorted(os.listdir(tmp_path)) == ["h.db"]      # WAL folded back in: closed cleanly
    assert "Traceback" not in err


def test_errors_are_one_line(tmp_path):
    unknown = run_cli("watch", "--netns", "ddlab-no-such-ns", "--count", "1", timeout=30)
    assert unknown.returncode == 3 and unknown.stderr.count("\n") == 1
    assert "no network namespace named 'ddlab-no-such-ns'" in unknown.stderr
    (tmp_path / "x.db").write_bytes(b"\x00" * 5000)
    garbage = run_cli("watch", "--record", str(tmp_path / "x.db"), "--count", "1", timeout=30)
    assert garbage.returncode == 3 and garbage.stderr.count("\n") == 1 and "x.db" in garbage.stderr


# --- an operator's bad day: namespaces that vanish, hang-ups, full disks, other users --------------

def qa_namespace(suffix: str) -> str:
    """A namespace name the no_leftovers fixture owns (this run's lab prefix)."""
    from .conftest import RUN_PREFIX

    return f"ddlab-{RUN_PREFIX}-{suffix}"


def test_namespace_deleted_and_recreated_while_watching_is_a_visible_gap(tmp_path, no_leftovers):
    name, db = qa_namespace("wgone"), str(tmp_path / "h.db")
    subprocess.run(["ip", "netns", "add", name], check=True)
    watch = subprocess.Popen([*DROPDOC, "watch", "--netns", name, "--interval", "0.15", "--format", "json",
                              "--record", db, "--count", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    timer = watchdog(watch, 30)
    try:
        records = [json.loads(watch.stdout.readline()) for _ in range(2)]
        subprocess.run(["ip", "netns", "del", name], check=True)
        while not records[-1]["lost"]:
            records.append(json.loads(watch.stdout.readline()))
        records.append(json.loads(watch.stdout.readline()))
        subprocess.run(["ip", "netns", "add", name], check=True)
        rest, err = watch.communicate(timeout=20)
    finally:
        timer.cancel()
        stop(watch)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    records += [json.loads(line) for line in rest.splitlines()]
    assert watch.returncode == 0 and "Traceback" not in err, err
    lost = [r for r in records if r["lost"]]
    assert any("no network namespace named" in r["lost"] for r in lost)
    assert any(r["lost"].startswith("new baseline") for r in lost)  # back: no delta across namespaces
    assert all(set(r["drops"].values()) == {None} for r in lost)  # unknown, never 0
    assert records[-1]["lost"] is None and records[-1]["drops"]["tcp.listen_overflow"] == 0
    with History(db, create=False) as history:
        samples = history.samples()
    assert len(samples) == len(records) == 12
    everything = {f for s in samples for f in s.gaps} | {f for s in samples for f in s.drops}
    assert sum(1 for s in samples if set(s.gaps) >= everything - {"cpu.time_squeeze"}) == len(lost)


def test_hang_up_closed_reader_and_full_output(tmp_path):
    db = str(tmp_path / "h.db")
    # SIGHUP (the terminal closed): a clean stop, the WAL folded back in.
    hup = subprocess.Popen([*DROPDOC, "watch", "--interval", "0.2", "--record", db], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    timer = watchdog(hup, 30)
    try:
        hup.stdout.readline()
        hup.send_signal(signal.SIGHUP)
        _, err = hup.communicate(timeout=10)
    finally:
        timer.cancel()
        stop(hup)
    assert hup.returncode == 0 and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["h.db"]
    # `dropdoc watch --format json | head -1`: ends quietly once the reader is gone.
    piped = subprocess.run(f"{' '.join(DROPDOC)} watch --interval 0.2 --format json | head -1; "
                           "echo \"status=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                           capture_output=True, text=True, timeout=30)
    first, status = piped.stdout.splitlines()
    assert json.loads(first)["schema"] == "dropdoc.watch/1" and status == "status=0"
    assert "Traceback" not in piped.stderr and "Exception ignored" not in piped.stderr, piped.stderr
    # A full disk behind `>`: one line, status 3.
    with open("/dev/full", "w") as full:
        result = subprocess.run([*DROPDOC, "watch", "--interval", "0.2", "--count", "2", "--format", "json"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == "dropdoc: cannot write to standard output: No space left on device"
    assert "Traceback" not in result.stderr


@pytest.fixture
def shared_dir():
    """A directory user nobody can reach (pytest's tmp_path is root's alone), removed after."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="dropdoc-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_tmpfs(shared_dir):
    """A 160 KiB tmpfs mounted for the test and unmounted after it."""
    mount = shared_dir / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_disk_full_and_read_only_history(tiny_tmpfs, shared_dir):
    db = tiny_tmpfs / "h.db"
    full = run_cli("watch", "--interval", "0.1", "--format", "json", "--record", str(db), timeout=60)
    assert full.returncode == 3 and "Traceback" not in full.stderr
    assert full.stderr.splitlines()[-1] == f"dropdoc: {db}: cannot append a sample (database or disk is full)"
    with History(str(db), create=False) as history:   # what was written is intact
        assert history.count() == len(full.stdout.splitlines()) > 0
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    # A recorder cannot use it: one line. A report can (read-only, immutable: nobody writes).
    refused = run_cli("watch", "--record", str(db), "--count", "1", timeout=30)
    assert refused.returncode == 3 and refused.stderr.strip().endswith("Read-only file system)"), refused.stderr
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    report = run_cli("report", str(db), "-o", str(out / "r.md"), user="nobody", timeout=60)
    assert report.returncode == 0, report.stderr
    assert "# dropdoc report" in (out / "r.md").read_text()


CRASHED_RECORDER = """
import os, sys, time
from dropdoc.history import History
from dropdoc.meter import Interval
from dropdoc.meter import Interval
h = History(sys.argv[1])
h.append(Interval(wall=time.time(), seconds=1.0, drops={"tcp.listen_overflow": 3}))
os._exit(0)   # killed before closing: the sample is only in the -wal file
"""


def test_another_users_history_reads_or_says_why_in_one_line(shared_dir):
    home = shared_dir / "rec"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    db = home / "h.db"
    with History(str(db)) as history:                   # root's recorder, finished
        history.append(Interval(wall=time.time() - 5, seconds=1.0, drops={"tcp.listen_overflow": 1}))
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    ok = run_cli("report", str(db), "-o", str(out / "a.md"), user="nobody", timeout=60)
    assert ok.returncode == 0, ok.stderr               # was: "attempt to write a readonly database"
    import sys

    subprocess.run([sys.executable, "-c", CRASHED_RECORDER, str(db)], check=True, timeout=30)
    (home / "h.db-shm").unlink()
    stuck = run_cli("report", str(db), "-o", str(out / "b.md"), user="nobody", timeout=60)
    assert stuck.returncode == 3 and stuck.stderr.count("\n") == 1, stuck.stderr
    assert "h.db-wal holds samples not yet folded into the file" in stuck.stderr
