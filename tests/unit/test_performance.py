"""What the optimisations for 100k sockets must not change (timings live in benchmarks/,
not in tests): the process scan's answers, the single-read file path, one netlink dump
shared by identical requests within a snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dropdoc.errors import NeedsPrivilege, SourceUnavailable, read_text
from dropdoc.sources import ReadContext, process_sockets


def fake_proc(root: Path, processes: dict[str, dict]) -> Path:
    """/proc-like tree: <pid>/comm, <pid>/ns/net -> 'net:[N]', <pid>/fd/<n> -> target."""
    proc = root / "proc"
    (proc / "thread-self" / "ns").mkdir(parents=True)
    os.symlink("net:[4026531840]", proc / "thread-self" / "ns" / "net")
    (proc / "sys").mkdir()  # not a pid: ignored
    for pid, spec in processes.items():
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "ns").mkdir()
        (proc / pid / "comm").write_text(spec["comm"] + "\n")
        if spec.get("netns"):
            os.symlink(spec["netns"], proc / pid / "ns" / "net")
        for fd, target in enumerate(spec["fds"]):
            os.symlink(target, proc / pid / "fd" / str(fd))
    return proc


PROCESSES = {
    "1": {"comm": "init", "netns": "net:[4026531840]", "fds": ["/dev/null", "socket:[100]"]},
    "42": {"comm": "nginx", "netns": "net:[4026531840]",
           "fds": ["socket:[200]", "pipe:[7]", "socket:[201]", "socket:[]", "socket:[\u00b2]", "anon_inode:[eventfd]"]},
    "43": {"comm": "nginx-worker", "netns": "net:[4026531840]", "fds": ["socket:[200]", "socket:[300]"]},
    "77": {"comm": "container", "netns": "net:[4026532999]", "fds": ["socket:[900]"]},
    "88": {"comm": "no-ns-link", "fds": ["socket:[800]"]},  # ns/net unreadable: scanned anyway
}


def test_scan_skips_other_namespaces_and_keeps_first_owner(tmp_path):
    proc = fake_proc(tmp_path, PROCESSES)
    owners = process_sockets.scan(str(proc), netns_link=process_sockets.current_netns_link(str(proc)))
    expected = {100: (1, "init"), 200: (42, "nginx"), 201: (42, "nginx"), 300: (43, "nginx-worker"),
                800: (88, "no-ns-link")}
    assert owners.owners == expected  # 200 is shared after fork: listing order decides, as before
    assert owners.other_netns_pids == 1 and owners.unreadable_pids == 0
    everything = process_sockets.scan(str(proc))  # without a namespace: every process, as before
    assert everything.owners == {**expected, 900: (77, "container")}
    assert everything.other_netns_pids == 0


def test_scan_of_a_process_that_exited_meanwhile(tmp_path):
    proc = fake_proc(tmp_path, PROCESSES)
    os.rename(proc / "42" / "fd", proc / "42" / "fd.gone")  # its fd directory vanished
    owners = process_sockets.scan(str(proc))
    assert 201 not in owners.owners and owners.owners[200] == (43, "nginx-worker")
    assert owners.unreadable_pids == 0


def test_scan_without_proc_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable):
        process_sockets.scan(str(tmp_path / "nothing"))


def test_read_recorded_and_replayed_through_the_same_json(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, PROCESSES)
    recorder: dict[str, bytes] = {}
    ctx = ReadContext(root=str(tmp_path), recorder=recorder)
    live = process_sockets.read(ctx)
    direct = process_sockets.read(ReadContext(root=str(tmp_path)))
    assert live == direct
    replayed = process_sockets.read(ReadContext(root="/nonexistent", live=False, replay=recorder))
    assert replayed == live and replayed.other_netns_pids == 1
    # A bundle written before other_netns_pids existed still loads.
    old = {"json/process_sockets": b'{"owners": {"5": [9, "x"]}, "unreadable_pids": 2}'}
    assert process_sockets.read(ReadContext(root="/x", live=False, replay=old)) == \
        process_sockets.SocketOwners({5: (9, "x")}, 2, 0)
    assert proc.exists()


# --- read_text: os.read, one read where the kernel gives the whole value at once ----------------

@pytest.mark.parametrize("where", ["proc/sys/net/core", "sys/class/net/eth0/statistics", "proc/net", "other"])
def test_read_text_reads_whole_files(tmp_path, where):
    directory = tmp_path / where
    directory.mkdir(parents=True)
    for size in (0, 5, 65535, 65536, 65537, 300_000):
        path = directory / f"f{size}"
        data = bytes((i * 7) % 251 for i in range(size))
        path.write_bytes(data)
        assert read_text(str(path)) == data.decode("utf-8", errors="replace")


def test_read_text_on_real_kernel_files():
    assert read_text("/proc/sys/kernel/osrelease").strip() == os.uname().release
    with open("/proc/self/mountinfo", "rb") as handle:  # a seq_file: many pages
        assert len(read_text("/proc/self/mountinfo")) > 0 and handle.read()


def test_read_text_errors_are_translated(tmp_path):
    with pytest.raises(SourceUnavailable, match="No such file"):
        read_text(str(tmp_path / "missing"))
    with pytest.raises(SourceUnavailable):
        read_text(str(tmp_path))  # a directory: EISDIR on read
    if os.geteuid() != 0:
        secret = tmp_path / "secret"
        secret.write_text("x")
        secret.chmod(0)
        with pytest.raises(NeedsPrivilege):
            read_text(str(secret))


# --- identical netlink requests within one snapshot: one dump ----------------------------------

def test_identical_netlink_requests_share_one_dump(monkeypatch):
    calls = []

    def fake_dump(protocol, msg_type, payload, what):
        calls.append((protocol, msg_type, payload))
        return b"answer-%d" % len(calls)

    monkeypatch.setattr("dropdoc.netlink.dump", fake_dump)
    recorder: dict[str, bytes] = {}
    ctx = ReadContext(recorder=recorder)
    assert ctx.netlink_dump(4, 20, b"req", "a") == b"answer-1"
    assert ctx.netlink_dump(4, 20, b"req", "b") == b"answer-1"  # the second source: same answer
    assert ctx.netlink_dump(4, 20, b"other", "c") == b"answer-2"
    assert len(calls) == 2 and list(recorder.values()) == [b"answer-1", b"answer-2"]
    assert ReadContext().netlink_dump(4, 20, b"req", "d") == b"answer-3"  # a new snapshot asks again
