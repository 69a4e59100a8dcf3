"""dropdoc fix end to end on the real kernel, only ever inside lab namespaces:
plan -> apply -> verify -> pending / rollback, the journal surviving SIGKILL, persistence
through a real `sysctl --system` (in a private mount namespace whose sysctl.d directories
hold only our file, inside a lab namespace), the link change kinds, the refusals."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager

import pytest

from dropdoc.fix.apply import Applied
from dropdoc.fix.changes import QdiscLimitChange, RingChange, SysctlChange, TxQueueLenChange
from dropdoc.fix.journal import Journal, read_records
from dropdoc.fix.persist import persist
from dropdoc.fix.plan import PlannedChange, make_plan
from dropdoc.fix.sysctl import read_sysctl
from dropdoc.errors import SourceUnavailable
from dropdoc.lab import scenarios
from dropdoc.lab.topology import SERVER_ADDRESS, LabNet
from dropdoc.model import SCHEMA

from .conftest import DROPDOC, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]

HOST_KEYS = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_rmem")


def host_values() -> dict:
    return {key: read_sysctl(key) for key in HOST_KEYS}


@pytest.fixture
def host_untouched():
    """Whatever a test does, the host's own values stay as they were."""
    before = host_values()
    yield
    assert host_values() == before


@contextmanager
def overloaded_server(seconds: float):
    """somaxconn 16 under a server asking listen() for 1024 that accepts 20/s, and 60
    connections/s arriving for `seconds`: the accept queue overflows all along."""
    with LabNet() as lab:
        from dropdoc.fix.sysctl import write_sysctl

        write_sysctl("net.core.somaxconn", 16, lab.server_ns)
        server = lab.spawn(lab.server_ns, "dropdoc.lab.server", "--port", "8080", "--backlog", "1024",
                           "--accept-rate", "20", "--max-seconds", str(seconds + 10))
        assert server.stdout.readline().strip() == "ready"
        client = lab.spawn(lab.client_ns, "dropdoc.lab.client", "--target", f"{SERVER_ADDRESS}:8080",
                           "--connections", str(int(60 * seconds)), "--rate", "60", "--max-seconds", str(seconds))
        yield lab, server.pid
        lab.stop(client)


def fix_json(*args: str) -> tuple[int, dict, str]:
    result = run_cli("fix", *args, "--format", "json", timeout=60)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


# --- live: applied, pending restart; rollback ------------------------------------------------

def test_live_fix_is_pending_restart_then_rolled_back(tmp_path, no_leftovers, host_untouched):
    journal, persist_file = str(tmp_path / "journal.jsonl"), str(tmp_path / "sysctl.d" / "90-dropdoc.conf")
    with overloaded_server(12.0) as (lab, server_pid):  # ended as soon as the test is done
        code, report, _ = fix_json("--netns", lab.server_ns, "--duration", "2", "--apply", "--yes",
                                   "--journal", journal, "--persist", "--persist-file", persist_file)
        assert code == 1, report  # applied, pending restart
        planned = report["plan"]["changes"][0]
        assert (planned["key"], planned["current"], planned["status"]) == ("net.core.somaxconn", 16, "planned")
        assert "backlog of 16 in force" in planned["why"] and "connection attempts were dropped" in planned["why"]
        assert any(f"pid {server_pid}" in a["text"] for a in report["plan"]["actions"])
        applied = report["applied"][0]
        proposed = planned["proposed"]
        assert (applied["old"], applied["in_force"], applied["verdict"]) == (16, proposed, "pending")
        assert f"pending restart of pid {server_pid}" in applied["detail"]
        check = report["verification"][0]
        assert check["id"] == "tcp.listen_overflow" and check["before"]["drops"] > 0
        assert check["after"]["drops"] > 0  # the server still listens with 16: drops go on, no rollback
        assert report["rolled_back"] == []
        assert read_sysctl("net.core.somaxconn", lab.server_ns) == proposed
        # per-netns values of a named namespace cannot be persisted by sysctl.d
        assert "applied at boot to the host namespace only" in report["persisted"]["skipped"][0]
        assert not os.path.exists(persist_file)
        events = [(r["event"], r.get("seq")) for r in read_records(journal)]
        assert events == [("run-start", None), ("intent", 1), ("outcome", 1), ("run-end", None)]
        intent = read_records(journal)[1]
        assert (intent["old"], intent["new"], intent["netns"]) == (16, proposed, lab.server_ns)
        assert intent["run"] == report["run"] and intent["finding"] == ["tcp.listen_overflow"]

        back = run_cli("fix", "--rollback", "--journal", journal)
        assert back.returncode == 0, back.stderr
        assert f"net.core.somaxconn in network namespace {lab.server_ns}: restored ({proposed} -> 16)" in back.stdout
        assert read_sysctl("net.core.somaxconn", lab.server_ns) == 16
        again = run_cli("fix", "--rollback", "--journal", journal)
        assert again.returncode == 0 and "already rolled back" in again.stdout


# --- a link change from a live diagnosis: qdisc limit -----------------------------------------

def test_qdisc_limit_from_a_live_diagnosis_is_verified_and_rolled_back(tmp_path, no_leftovers, host_untouched):
    """A 10-packet pfifo under a 100 Mbit/s tbf on the client's veth drops bursts of 300
    datagrams; the qdisc.drop fix (qdisc_limit) is applied with `tc qdisc change`."""
    journal = str(tmp_path / "journal.jsonl")
    with LabNet() as lab:
        ns, dev = lab.client_ns, lab.client_if
        lab.run(ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", "100mbit",
                "burst", "16k", "limit", "30k")
        lab.run(ns, "tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo", "limit", "10")
        sink = lab.spawn(lab.server_ns, "dropdoc.lab.udp_sink", "--port", "9000", "--max-seconds", "30")
        assert sink.stdout.readline().strip() == "ready"
        stop = threading.Event()

        def bursts() -> None:  # bounded: at most 25 bursts of 300 datagrams, stopped when fix is done
            for _ in range(25):
                if stop.is_set():
                    return
                burst = lab.spawn(ns, "dropdoc.lab.udp_burst", "--target", f"{SERVER_ADDRESS}:9000",
                                  "--packets", "300", "--size", "1400", "--max-seconds", "2")
                burst.wait(timeout=10)
                lab.stop(burst)
                time.sleep(0.3)
        sender = threading.Thread(target=bursts)
        sender.start()
        try:
            code, report, _ = fix_json("--netns", ns, "--duration", "2", "--apply", "--yes", "--journal", journal)
        finally:
            stop.set()
            sender.join(timeout=30)
        limit = [c for c in report["plan"]["changes"] if c["kind"] == "qdisc_limit"]
        assert len(limit) == 1, report["plan"]
        assert (limit[0]["interface"], limit[0]["handle"], limit[0]["qdisc"], limit[0]["current"]) == \
            (dev, "10:", "pfifo", 10)
        assert "holds 10 packets and dropped" in limit[0]["why"]
        assert limit[0]["command"] == f"tc -n {ns} qdisc change dev {dev} handle 10: parent 1:1 pfifo limit " \
            f"{limit[0]['proposed']}"
        applied = [a for a in report["applied"] if a["kind"] == "qdisc_limit"][0]
        assert applied["verdict"] == "verified", report["verification"]
        assert code == 0
        check = next(c for c in report["verification"] if c["id"] == "qdisc.drop")
        assert check["before"]["drops"] > 0 and check["verdict"] in ("fixed", "improved")
        change = QdiscLimitChange(ns, 0, interface=dev, handle="10:", qdisc="pfifo")
        assert change.read_current() == limit[0]["proposed"]
        back = run_cli("fix", "--rollback", "--journal", journal)
        assert back.returncode == 0, back.stderr
        assert change.read_current() == 10


# --- verification fails: automatic rollback -------------------------------------------------

def test_change_that_does_not_lower_the_drops_is_rolled_back(tmp_path, no_leftovers, host_untouched):
    journal = str(tmp_path / "journal.jsonl")
    with overloaded_server(14.0) as (lab, _pid):  # ended as soon as the test is done
        measured = run_cli("diagnose", "--netns", lab.server_ns, "--duration", "2", "--format", "json")
        data = json.loads(measured.stdout)
        finding = next(f for f in data["findings"] if f["id"] == "tcp.listen_overflow")
        # the wrong knob: the SYN-queue limit does not bound the accept queue
        syn_backlog = read_sysctl("net.ipv4.tcp_max_syn_backlog", lab.server_ns)
        finding["fixes"] = [{"kind": "sysctl", "key": "net.ipv4.tcp_max_syn_backlog", "current": syn_backlog,
                             "proposed": syn_backlog * 2, "netns": lab.server_ns}]
        path = tmp_path / "diagnosis.json"
        path.write_text(json.dumps(data))
        code, report, _ = fix_json("--from", str(path), "--apply", "--yes", "--journal", journal)
        assert code == 2, report
        applied = report["applied"][0]
        assert applied["verdict"] == "not effective" and applied["restored"] == "restored"
        assert "not down by half" in applied["detail"]
        assert report["rolled_back"][0]["status"] == "restored"
        assert read_sysctl("net.ipv4.tcp_max_syn_backlog", lab.server_ns) == syn_backlog
        events = [r["event"] for r in read_records(journal)]
        assert events == ["run-start", "intent", "outcome", "restore", "restored", "run-end"]
        assert read_records(journal)[3]["cause"] == "verification failed"


# --- the journal survives SIGKILL between two writes ----------------------------------------

def two_change_diagnosis(netns: str) -> tuple[dict, dict]:
    current = {key: read_sysctl(key, netns) for key in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog")}
    fixes = [{"kind": "sysctl", "key": key, "current": value, "proposed": value * 2, "netns": netns}
             for key, value in current.items()]
    data = {"schema": SCHEMA, "host": {"kernel": "x", "netns": netns}, "window": {"seconds": 1.0},
            "findings": [{"id": "tcp.listen_overflow", "layer": "transport", "severity": "critical", "drops": 100,
                          "rate_per_s": 100.0, "benign": False, "summary": "", "evidence": [], "subjects": [],
                          "fixes": fixes}]}
    return data, current


@pytest.mark.parametrize("pause, changed", [
    ("between:1", {"net.core.somaxconn"}),                                  # change 1 complete, 2 not begun
    ("after-write:2", {"net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"}),  # 2 written, outcome not
])
def test_rollback_after_sigkill_restores_what_was_changed(tmp_path, no_leftovers, host_untouched, pause, changed):
    journal = str(tmp_path / "journal.jsonl")
    with LabNet() as lab:
        data, before = two_change_diagnosis(lab.server_ns)
        path = tmp_path / "diagnosis.json"
        path.write_text(json.dumps(data))
        fixer = subprocess.Popen([*DROPDOC, "fix", "--from", str(path), "--apply", "--yes", "--journal", journal],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "DROPDOC_FIX_TEST_PAUSE": f"{pause}:30"})
        try:
            deadline = time.monotonic() + 20
            said = b""
            while b"test pause" not in said and time.monotonic() < deadline and fixer.poll() is None:
                ready, _, _ = select.select([fixer.stderr], [], [], 1)
                if ready:
                    said += os.read(fixer.stderr.fileno(), 4096)
            assert b"test pause" in said, f"the fixer never reached its pause point: {said!r}"
            os.kill(fixer.pid, signal.SIGKILL)
            fixer.wait(timeout=10)
        finally:
            if fixer.poll() is None:
                fixer.kill()
                fixer.wait()
            fixer.stderr.close()
        now = {key: read_sysctl(key, lab.server_ns) for key in before}
        assert {key for key in before if now[key] != before[key]} == changed
        events = [(r["event"], r.get("seq")) for r in read_records(journal)]
        assert events[-1] == (("outcome", 1) if pause.startswith("between") else ("intent", 2))

        back = run_cli("fix", "--rollback", "--journal", journal)
        assert back.returncode == 0, back.stderr
        assert {key: read_sysctl(key, lab.server_ns) for key in before} == before
        assert back.stdout.count(": restored (") == len(changed)


# --- persist: survives `sysctl --system` ----------------------------------------------------

SYSCTL_SYSTEM = r"""
set -eu
conf_dir=$1; empty_dir=$2; empty_file=$3
# Only inside this private mount namespace: every directory sysctl --system reads is
# replaced by an empty one, /etc/sysctl.d by ours, /etc/sysctl.conf by an empty file.
for parent in /run /usr/local/lib; do
  if [ -d "$parent" ]; then mount -t tmpfs -o size=1m,mode=755 dropdoc-test "$parent"; fi
done
mkdir -p /run/sysctl.d /usr/local/lib/sysctl.d
for d in /run/sysctl.d /usr/local/lib/sysctl.d /usr/lib/sysctl.d /lib/sysctl.d; do
  if [ -d "$d" ]; then mount --bind "$empty_dir" "$d"; fi
done
mount --bind "$conf_dir" /etc/sysctl.d
if [ -e /etc/sysctl.conf ]; then mount --bind "$empty_file" /etc/sysctl.conf; fi
# refuse to go on unless our file is the only thing sysctl --system can find
[ "$(ls -A /etc/sysctl.d)" = "90-dropdoc.conf" ]
for d in /run/sysctl.d /usr/local/lib/sysctl.d /usr/lib/sysctl.d /lib/sysctl.d; do
  if [ -d "$d" ]; then [ -z "$(ls -A "$d")" ]; fi
done
if [ -e /etc/sysctl.conf ]; then [ ! -s /etc/sysctl.conf ]; fi
sysctl --system
"""


def test_persisted_file_survives_sysctl_system_in_a_lab_namespace(tmp_path, no_leftovers, host_untouched):
    values = {"net.core.somaxconn": 3001, "net.ipv4.tcp_max_syn_backlog": 3002,
              "net.ipv4.tcp_rmem": (4096, 87381, 3000003)}
    conf_dir, empty_dir = tmp_path / "conf", tmp_path / "empty"
    conf_dir.mkdir()
    empty_dir.mkdir()
    (tmp_path / "empty.conf").write_text("")
    path = conf_dir / "90-dropdoc.conf"
    # Written by the real persist() path, as for host-namespace changes - never applied to
    # the host: the file is only loaded inside the lab namespace below.
    kept = [Applied(PlannedChange(SysctlChange(None, value, key=key), ["tcp.listen_overflow"], value), seq,
                    None, verdict="verified") for seq, (key, value) in enumerate(values.items(), 1)]
    result = persist(kept, str(path), Journal(None), {"tcp.listen_overflow": "tcp.listen_overflow (test)"})
    assert [e.key for e in result.written] == list(values)
    assert all(key in values for key in (line.split(" = ")[0] for line in path.read_text().splitlines()
                                         if line and not line.startswith("#")))  # per-netns keys only
    with LabNet() as lab:
        before = {key: read_sysctl(key, lab.server_ns) for key in values}
        assert all(before[key] != value for key, value in values.items())
        out = subprocess.run(["ip", "netns", "exec", lab.server_ns, "unshare", "--mount", "--propagation", "private",
                              "sh", "-c", SYSCTL_SYSTEM, "sh", str(conf_dir), str(empty_dir),
                              str(tmp_path / "empty.conf")], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        applying = {line.split()[2] for line in out.stdout.splitlines() if line.startswith("* Applying")}
        assert applying <= {"/etc/sysctl.d/90-dropdoc.conf", "/etc/sysctl.conf"}
        assert "/etc/sysctl.d/90-dropdoc.conf" in applying
        assert {key: read_sysctl(key, lab.server_ns) for key in values} == values
        assert {key: read_sysctl(key, lab.client_ns) for key in values} != values  # only that namespace


# --- link change kinds on the lab's veth ----------------------------------------------------

def test_link_changes_read_apply_restore_in_a_lab_namespace(no_leftovers, host_untouched):
    with LabNet() as lab:
        ns, dev = lab.server_ns, lab.server_if
        txq = TxQueueLenChange(ns, 2000, interface=dev)
        old = txq.read_current()
        txq.validate(old)
        txq.apply()
        assert txq.read_current() == 2000
        txq.restore(old)
        assert txq.read_current() == old

        lab.run(ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "pfifo", "limit", "100")
        limit = QdiscLimitChange(ns, 300, interface=dev, handle="1:", qdisc="pfifo")
        assert limit.read_current() == 100
        limit.validate(100)
        limit.apply()
        assert limit.read_current() == 300
        limit.restore(100)
        assert limit.read_current() == 100

        with pytest.raises(SourceUnavailable, match="ring sizes not readable"):
            RingChange(ns, 512, interface=dev).read_current()  # veth has no rings

        # planned live: the ring is unreadable, a global key is refused, a per-netns one planned
        data = {"schema": SCHEMA, "host": {"netns": ns}, "window": {"seconds": 5.0}, "findings": [
            {"id": "nic.rx_missed", "severity": "critical", "drops": 10, "rate_per_s": 2.0, "fixes": [
                {"kind": "command", "device": dev, "setting": "rx ring", "current": 256, "proposed": 512}]},
            {"id": "cpu.backlog_drop", "severity": "critical", "drops": 10, "rate_per_s": 2.0, "fixes": [
                {"kind": "sysctl", "key": "net.core.netdev_max_backlog", "current": 1000, "proposed": 2048},
                {"kind": "sysctl", "key": "net.core.somaxconn", "current": 1, "proposed": 8192}]}]}
        plan = make_plan(data)
        status = {c.target: (c.status, c.current_from) for c in plan.changes}
        assert status[f"{dev} rx ring"][0] == "unreadable"
        assert status["net.core.netdev_max_backlog"][0] == "refused"
        assert status["net.core.somaxconn"] == ("planned", "live")
        assert [c.current for c in plan.changes if c.target == "net.core.somaxconn"] == [4096]


# --- refusals --------------------------------------------------------------------------------

@pytest.fixture
def public_dir():
    """A directory the unprivileged user can read (pytest's tmp_path is root-only)."""
    path = tempfile.mkdtemp(prefix="dropdoc-fix-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def host_diagnosis(directory: str) -> str:
    data = {"schema": SCHEMA, "host": {"netns": None}, "window": {"seconds": 5.0}, "findings": [
        {"id": "tcp.listen_overflow", "severity": "critical", "drops": 286, "rate_per_s": 57.2, "subjects": [],
         "fixes": [{"kind": "sysctl", "key": "net.core.somaxconn", "current": 128, "proposed": 65535}]}]}
    path = os.path.join(directory, "host.json")
    with open(path, "w") as handle:
        json.dump(data, handle)
    os.chmod(path, 0o644)
    return path


def cli_without_tty(*args: str, nobody: bool = False) -> subprocess.CompletedProcess:
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if nobody else []
    return subprocess.run([*prefix, *DROPDOC, "fix", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_refusals_are_one_line_and_change_nothing(public_dir, host_untouched):
    path = host_diagnosis(public_dir)
    for args, nobody, words in ((("--apply", "--yes", "--from", path), True, "run as root"),
                                (("--rollback",), True, "run as root"),
                                (("--apply", "--from", path), False, "add --yes"),
                                (("--persist", "--from", path), False, "use both"),
                                (("--rollback", "--from", path), False, "takes no diagnosis")):
        result = cli_without_tty(*args, nobody=nobody)
        assert result.returncode == 3, result
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and words in result.stderr and "Traceback" not in result.stderr
    bad = os.path.join(public_dir, "bad.json")
    with open(bad, "w") as handle:
        handle.write("{}")
    result = cli_without_tty("--from", bad)
    assert result.returncode == 3 and "not a dropdoc diagnosis" in result.stderr and result.stderr.count("\n") == 1


def test_dry_run_without_root_shows_the_plan(public_dir, host_untouched):
    path = host_diagnosis(public_dir)
    result = cli_without_tty("--from", path, nobody=True)
    assert result.returncode == 0, result.stderr
    current = read_sysctl("net.core.somaxconn")
    assert f"net.core.somaxconn: {current} -> 65535" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert "command: sysctl -w net.core.somaxconn=65535" in result.stdout


# --- the lab's --fix uses the same library --------------------------------------------------

def test_lab_fix_reports_verified_change(no_leftovers, host_untouched):
    result = scenarios.run("listen-overflow", fix=True)
    report = result.fix_report
    assert [a.change.target for a in report.applied] == ["net.core.somaxconn"]
    applied = report.applied[0]
    assert applied.verdict == "verified" and applied.change.netns == result.server_ns
    check = report.verification.checks[0]
    assert check.id == "tcp.listen_overflow" and check.before_drops > 0 and check.verdict == "fixed"
    assert report.exit_code == 0
    out = result.to_dict()["fix"]
    assert out["verification"][0]["verdict"] == "fixed"
    assert out["applied"][0]["verdict"] == "verified"
    assert "peaked at" in out["plan"]["changes"][0]["why"]

