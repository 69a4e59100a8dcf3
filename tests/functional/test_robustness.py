"""Robustness on the real kernel and the real CLI: copied trees of older kernels, files a
user may not read, and a non-root user diagnosing a namespace full of root's sockets.

Never a traceback; every gap is a coverage status with a reason; an owner that cannot be
known is shown as unknown, not invented and not dropped.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dropdoc.lab.topology import SERVER_ADDRESS, LabNet

from .conftest import DROPDOC, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]

TREES = Path(__file__).resolve().parent.parent / "fixtures" / "trees"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SINK_PORT = 9200

needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]


@pytest.fixture
def world_readable_tmp():
    """A directory nobody can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dropdoc-robust-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):  # give back what the test took away, then remove it all
        if not sub.is_symlink():
            sub.chmod(0o755 if sub.is_dir() else 0o644)
    shutil.rmtree(path)


# --- dropdoc collect --root on trees of older kernels -----------------------------------------

@pytest.mark.parametrize("name, snmp6", [("el7-3.10", "unavailable"), ("deb10-4.19", "ok"), ("deb11-5.10", "ok")])
def test_collect_root_tree_of_older_kernels(name, snmp6):
    proc = run_cli("collect", "--root", str(TREES / name / "before"))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    coverage = document["coverage"]
    assert document["host"]["kernel"] == (TREES / name / "before/proc/sys/kernel/osrelease").read_text().strip()
    assert {k: coverage[k] for k in ("snmp", "netstat", "softnet", "netdev", "sysctls", "link_stats",
                                     "udp_sockets", "tcp_listeners")} == dict.fromkeys(
        ("snmp", "netstat", "softnet", "netdev", "sysctls", "link_stats", "udp_sockets", "tcp_listeners"), "ok")
    assert coverage["snmp6"] == snmp6
    assert coverage["process_sockets"] == "unavailable"  # owners need the live system
    assert set(document["errors"]) == {k for k, v in coverage.items() if v != "ok"}
    assert not any(e.split(":")[0].endswith("Error") for e in document["errors"].values())


@needs_setpriv
def test_unreadable_files_as_nobody_are_needs_privilege(world_readable_tmp):
    """chmod 000 on parts of /proc and /sys of a copied tree, read as nobody: the statuses
    say needs-privilege, the rest is still read, the CLI exits 0 without a traceback, and a
    diagnosis of two such copies leaves the affected rules not evaluated (not 'no drops')."""
    for side in ("before", "after"):
        shutil.copytree(TREES / "deb11-5.10" / side, world_readable_tmp / side)
        (world_readable_tmp / side / "proc/net/softnet_stat").chmod(0)
        (world_readable_tmp / side / "proc/net/snmp6").chmod(0)
        (world_readable_tmp / side / "sys/class/net").chmod(0)
    proc = run_cli("collect", "--root", str(world_readable_tmp / "before"), user="nobody")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    coverage = document["coverage"]
    assert (coverage["softnet"], coverage["snmp6"], coverage["link_stats"]) == ("needs-privilege",) * 3
    assert "run as root" in document["errors"]["softnet"]
    assert coverage["snmp"] == coverage["netstat"] == "ok"
    assert document["sources"]["netstat"]["TcpExt"]["ListenOverflows"] == 0

    script = (
        "import json, sys\n"
        "from dropdoc import delta\n"
        "from dropdoc.diagnose import diagnosis_from_window\n"
        "from dropdoc.snapshot import take_snapshot\n"
        "from dropdoc.window import Window\n"
        "b, a = (take_snapshot(root=sys.argv[1] + s) for s in ('/before', '/after'))\n"
        "a.monotonic = b.monotonic + 5.0\n"
        "d = diagnosis_from_window(Window(b, a, delta.compute(b, a), listeners={}))\n"
        "print(json.dumps(d.to_dict()))\n")
    proc = subprocess.run([*NOBODY, sys.executable, "-c", script, str(world_readable_tmp)],
                          capture_output=True, text=True, timeout=60)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    diagnosis = json.loads(proc.stdout)
    assert diagnosis["coverage"]["softnet"] == "needs-privilege"
    assert "run as root" in diagnosis["coverage_errors"]["softnet"]
    assert "cpu.backlog_drop" in diagnosis["not_evaluated"]  # the drops of 'after' are unseen
    assert "cpu.backlog_drop" not in [f["id"] for f in diagnosis["findings"]]
    assert {f["id"]: f["drops"] for f in diagnosis["findings"]}["tcp.rcvq_drop"] == 300


# --- live, in a lab namespace, as nobody: owners of root's sockets are unknown ------------------

@pytest.fixture
def udp_overflow_lab(no_leftovers):
    """A root-owned UDP receiver that never reads, in a lab server namespace."""
    with LabNet() as lab:
        sink = lab.spawn(lab.server_ns, "dropdoc.lab.udp_sink", "--port", str(SINK_PORT), "--rcvbuf", "4096",
                         "--read-rate", "-1", "--name", "rootsink", "--max-seconds", "30")
        ready, _, _ = select.select([sink.stdout], [], [], 15)
        assert ready and sink.stdout.readline().strip() == "ready"
        yield lab, sink


def burst(lab: LabNet, packets: int, rate: int) -> subprocess.Popen:
    return lab.spawn(lab.client_ns, "dropdoc.lab.udp_burst", "--target", f"{SERVER_ADDRESS}:{SINK_PORT}",
                     "--packets", str(packets), "--size", "256", "--rate", str(rate), "--max-seconds", "3")


@needs_setpriv
def test_nobody_diagnoses_with_the_owner_gap_visible(udp_overflow_lab):
    lab, sink = udp_overflow_lab
    diagnose = subprocess.Popen(["ip", "netns", "exec", lab.server_ns, *NOBODY, *DROPDOC, "diagnose",
                                 "--duration", "3", "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let the first snapshot happen: the burst falls inside the window
        load = burst(lab, 2000, 2000)
        out, err = diagnose.communicate(timeout=60)
        lab.stop(load)
    finally:
        if diagnose.poll() is None:
            diagnose.kill()
            diagnose.wait()
    assert "Traceback" not in err, err[-2000:]
    assert diagnose.returncode in (1, 2), err
    document = json.loads(out)
    assert document["coverage"]["process_sockets"] == "ok"  # read what it may; the gap is per process
    finding = next(f for f in document["findings"] if f["id"] == "udp.rcvbuf_full")
    subject = finding["subjects"][0]
    assert subject["socket"] == f"0.0.0.0:{SINK_PORT}"
    assert subject["pid"] is None and subject["process"] is None  # root's process: unknown to nobody
    assert subject["drops"] > 0
    assert "owner unknown" in json.dumps(finding["fixes"])

    collected = subprocess.run(["ip", "netns", "exec", lab.server_ns, *NOBODY, *DROPDOC, "collect"],
                               capture_output=True, text=True, timeout=60)
    no_traceback(collected)
    owners = json.loads(collected.stdout)["sources"]["process_sockets"]
    assert owners["unreadable_pids"] >= 1  # at least the root-owned sink
    assert str(sink.pid) not in json.dumps(owners["owners"])


def test_root_finds_the_owner_and_skips_other_namespaces(udp_overflow_lab):
    lab, sink = udp_overflow_lab
    proc = run_cli("collect", "--netns", lab.server_ns)
    no_traceback(proc)
    document = json.loads(proc.stdout)
    owners = document["sources"]["process_sockets"]
    sink_socket = next(s for s in document["sources"]["udp_sockets"] if s["port"] == SINK_PORT)
    assert owners["owners"][str(sink_socket["inode"])] == [sink.pid, "rootsink"]
    assert owners["other_netns_pids"] > 0  # the host's own processes were not scanned
    assert owners["unreadable_pids"] == 0
