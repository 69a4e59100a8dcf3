"""Controls and bad input: a healthy namespace is healthy; errors are one line, never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from dropdoc.lab import scenarios

from .conftest import DROPDOC, lab_namespaces, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]


def test_healthy_namespace_with_real_traffic_has_no_warning(no_leftovers):
    result = scenarios.run("healthy")
    diagnosis = result.before.diagnosis
    assert result.before.load["connected"] == 200
    assert diagnosis.counter_deltas["Tcp.PassiveOpens"] >= 200
    assert [f.id for f in diagnosis.findings if f.severity in ("warning", "critical")] == []
    assert diagnosis.healthy and diagnosis.exit_code() == 0


def assert_one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_unknown_netns_is_one_line_exit_3():
    proc = run_cli("diagnose", "--netns", "dropdoc-no-such-ns", "--duration", "0.2")
    assert proc.returncode == 3
    assert_one_line_error(proc, "no network namespace named 'dropdoc-no-such-ns'")


def test_json_diagnosis_follows_contract():
    proc = run_cli("diagnose", "--duration", "0.3", "--format", "json")
    assert proc.returncode in (0, 1, 2), proc.stderr
    document = json.loads(proc.stdout)
    assert document["schema"] == "dropdoc.diagnosis/1"
    assert set(document) >= {"host", "window", "coverage", "healthy", "findings"}
    assert document["coverage"]["snmp"] == "ok"
    assert 0.25 <= document["window"]["seconds"] < 2


def test_not_root_diagnose_works_with_gaps_and_netns_needs_root():
    proc = run_cli("diagnose", "--duration", "0.3", "--format", "json", user="nobody")
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert json.loads(proc.stdout)["coverage"]["snmp"] == "ok"
    proc = run_cli("diagnose", "--netns", "anything", user="nobody")
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr


def test_not_root_lab_is_refused_in_one_line():
    proc = run_cli("lab", "run", "listen-overflow", user="nobody")
    assert proc.returncode == 3
    assert_one_line_error(proc, "run as root")


def test_unknown_scenario_is_one_line():
    proc = run_cli("lab", "run", "no-such-scenario")
    assert proc.returncode == 3
    assert_one_line_error(proc, "unknown lab scenario")


def test_collect_on_garbled_and_missing_files_reports_gaps(tmp_path):
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    (net / "snmp").write_text("Tcp: RtoAlgorithm RtoMin\nTcp: 1\n")  # values missing: garbled
    (net / "netstat").write_bytes(b"\xff\xfe garbage \x00\n")
    proc = run_cli("collect", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["coverage"]["snmp"] == "failed"
    assert document["coverage"]["netstat"] == "failed"
    assert document["coverage"]["softnet"] == "unavailable"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_lab_interrupted_tears_down(signum, no_leftovers):
    proc = subprocess.Popen([*DROPDOC, "lab", "run", "listen-overflow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not lab_namespaces():
        time.sleep(0.05)
    assert lab_namespaces(), "lab never started"
    time.sleep(1.0)  # inside the measurement window, server and client running
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert lab_namespaces() == []
