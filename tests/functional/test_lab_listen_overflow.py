"""The reference case end to end: lab -> diagnosis names socket, pid and cap -> fix -> 0 drops."""

from __future__ import annotations

import os

import pytest

from dropdoc.lab import scenarios

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]


def host_somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as handle:
        return int(handle.read())


@pytest.fixture(scope="module")
def host_before():
    return host_somaxconn()


@pytest.fixture(scope="module")
def fixed_run(host_before):  # noqa: ARG001 - read the host value before the lab runs
    return scenarios.run("listen-overflow", fix=True)


def test_top_finding_is_listen_overflow_with_socket_pid_and_cap(fixed_run):
    diagnosis = fixed_run.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "tcp.listen_overflow"
    assert top.severity == "critical"
    assert top.drops == diagnosis.counter_deltas["TcpExt.ListenOverflows"] > 0
    subject = top.subjects[0]
    assert subject["socket"].endswith(f":{scenarios.PORT}")
    assert subject["pid"] == fixed_run.server_pid
    assert subject["process"] == "payments"
    assert subject["backlog"] == 16 and subject["somaxconn"] == 16
    assert subject["capped_by"] == "somaxconn"
    sysctl_fixes = [f for f in top.fixes if f["kind"] == "sysctl"]
    assert sysctl_fixes[0]["key"] == "net.core.somaxconn"
    assert sysctl_fixes[0]["current"] == 16 and sysctl_fixes[0]["proposed"] > 16
    assert str(fixed_run.server_pid) in sysctl_fixes[0]["note"]
    assert diagnosis.exit_code() == 2


def test_fix_applied_in_lab_namespace_and_drops_reach_zero(fixed_run):
    assert [a["key"] for a in fixed_run.applied] == ["net.core.somaxconn"]
    assert fixed_run.applied[0]["netns"] == fixed_run.server_ns
    assert fixed_run.server_pid_after not in (None, fixed_run.server_pid)
    after = fixed_run.after.diagnosis
    assert "tcp.listen_overflow" not in after.not_evaluated
    assert after.counter_deltas["TcpExt.ListenOverflows"] == 0
    assert after.counter_deltas["Tcp.PassiveOpens"] >= 400  # the same load was really sent
    assert after.healthy


def test_lab_leaves_nothing_behind(fixed_run):
    from .conftest import lab_namespaces

    assert fixed_run.server_ns not in lab_namespaces()
    for pid in (fixed_run.server_pid, fixed_run.server_pid_after):
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/comm").read().strip() != "payments"


def test_host_somaxconn_untouched(fixed_run, host_before):
    assert fixed_run.applied  # the lab did write somaxconn - in its own namespace only
    assert host_somaxconn() == host_before
