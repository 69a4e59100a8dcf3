"""`dropdoc sim` calibrated from a real kernel: a lab scenario measured live (--from-host
--netns) and through a bundle (--from), plus the errors a user can cause."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from dropdoc.lab import scenarios
from tests.functional.conftest import DROPDOC, requires_root, run_cli

pytestmark = [pytest.mark.functional, requires_root]


def _run_while_loaded(name: str, args_for) -> tuple[subprocess.CompletedProcess, dict]:
    """Start `dropdoc ...` against the scenario's namespace, then its bounded load."""
    with scenarios.running(name) as lab:
        out: dict = {}
        command = [*DROPDOC, *args_for(lab.netns)]
        thread = threading.Thread(target=lambda: out.update(
            proc=subprocess.run(command, capture_output=True, text=True, timeout=60)))
        thread.start()
        time.sleep(1.0)          # python start-up + the first snapshot
        lab.start_load()
        summary = lab.wait_load()
        thread.join(timeout=60)
        return out["proc"], summary


def test_from_host_calibrates_udp_rcvbuf_and_predicts_it(no_leftovers):
    proc, _ = _run_while_loaded("udp-rcvbuf", lambda ns: [
        "sim", "--from-host", "--netns", ns, "--measure-seconds", "3.5", "--seconds", "3.5", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cal = doc["calibration"]
    # settings read from the kernel: the 4 KiB SO_RCVBUF is doubled to 8 KiB
    assert cal["params"]["udp_rcvbuf"] == 4096 and "udp_rcvbuf" in cal["measured"]
    assert cal["params"]["rx_path"] == "veth"
    # rates measured: ~1000 datagrams/s offered (3000 in 3 s), read at ~50/s
    assert 500 <= cal["params"]["udp_rate"] <= 1100
    assert 30 <= cal["params"]["read_rate"] <= 70
    # 3000 datagrams in 3.5 s leave too little softirq time for a per-packet cost (unless the
    # rest of the host received a lot meanwhile: then it is measured, and says from where)
    assert "rx_cost_us" in cal["defaulted"] or "/proc/stat softirq" in cal["measured"]["rx_cost_us"]
    assert doc["bottleneck"] == "udp.rcvbuf_full"
    measured_drop_rate = cal["params"]["udp_rate"] - cal["params"]["read_rate"]
    assert doc["drops_per_s"]["udp.rcvbuf_full"] == pytest.approx(measured_drop_rate, rel=0.25)


def test_from_host_measures_the_per_packet_softirq_cost(no_leftovers):
    """cpu-backlog (1000 firewall rules walked on the RPS CPU): --from-host reads the
    softirq time of the CPU whose backlog dropped from /proc/stat over the window and
    divides it by the packets it processed: tens of microseconds, not the 1 us default -
    and with it the model drains that CPU at what it really does."""
    proc, _ = _run_while_loaded("cpu-backlog", lambda ns: [
        "sim", "--from-host", "--netns", ns, "--measure-seconds", "3", "--seconds", "3", "--format", "json",
        "--what-if", "udp_rate=300000", "--what-if", "udp_total=40000", "--what-if", "rps_cpus=1"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cal = doc["calibration"]
    assert cal["params"]["netdev_max_backlog"] == 1 and cal["params"]["rx_path"] == "veth"
    assert "/proc/stat softirq" in cal["measured"]["rx_cost_us"], cal
    assert 5.0 < cal["params"]["rx_cost_us"] < 500.0
    # the what-if burst overflows the measured CPU: most of it is dropped at its backlog
    after = doc["after"]
    assert after["bottleneck"] == "cpu.backlog_drop"
    assert after["drops"]["cpu.backlog_drop"] > 0.5 * 40_000


def test_from_bundle_reads_the_reference_case_settings(no_leftovers, tmp_path):
    bundle = tmp_path / "lo.tar.gz"
    proc, _ = _run_while_loaded("listen-overflow", lambda ns: [
        "collect", "--netns", ns, "--duration", "3", "-o", str(bundle)])
    assert proc.returncode == 0, proc.stderr
    result = run_cli("sim", "--from", str(bundle), "--seconds", "5", "--format", "json",
                     "--what-if", "somaxconn=4096", "--what-if", "app_backlog=4096")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    params = doc["calibration"]["params"]
    assert params["somaxconn"] == 16 and params["app_backlog"] == 16    # backlog in force, capped
    assert params["conn_rate"] > params["accept_rate"] > 0
    assert doc["before"]["bottleneck"] == "tcp.listen_overflow"
    assert doc["after"]["drops"]["tcp.listen_overflow"] < doc["before"]["drops"]["tcp.listen_overflow"]
    text = run_cli("sim", "--from", str(bundle), "--seconds", "2")
    assert "measured  somaxconn = 16" in text.stdout and "bottleneck: tcp.listen_overflow" in text.stdout


def test_from_host_errors_are_one_line(no_leftovers):
    unknown = run_cli("sim", "--from-host", "--netns", "ddlab-no-such-ns", "--measure-seconds", "0.2")
    assert unknown.returncode == 3
    assert unknown.stderr.startswith("dropdoc: ") and len(unknown.stderr.strip().splitlines()) == 1
    damaged = run_cli("sim", "--from", "/etc/hostname")
    assert damaged.returncode == 3 and len(damaged.stderr.strip().splitlines()) == 1
    assert "Traceback" not in damaged.stderr + unknown.stderr
