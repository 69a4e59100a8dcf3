"""Verification: before/after drop rates per finding, changes that cannot show yet
(somaxconn before listen() is called again, socket buffers before sockets are re-created),
inconclusive windows, and which changes are kept or rolled back (with the exit code)."""

from __future__ import annotations

import pytest

from dropdoc.fix.apply import Applied
from dropdoc.fix.changes import SysctlChange
from dropdoc.fix.fixer import exit_code_for
from dropdoc.fix.plan import Plan, PlannedChange
from dropdoc.fix.verify import (FIXED, IMPROVED, INCONCLUSIVE, NOT_IMPROVED, UNKNOWN, Probes, check_finding,
                                verify)
from dropdoc.model import Diagnosis, Finding
from dropdoc.sources.process_sockets import SocketOwners

from windows import listener

SUBJECT = {"socket": "0.0.0.0:8080", "pid": 4242, "process": "payments", "backlog": 16, "somaxconn": 16,
           "capped_by": "somaxconn", "accept_queue": 17}
BEFORE = {"id": "tcp.listen_overflow", "drops": 1214, "rate_per_s": 242.8, "subjects": [SUBJECT],
          "evidence": [{"source": "counters", "counter": "TcpExt.ListenOverflows", "delta": 1214},
                       {"source": "counters", "counter": "Tcp.PassiveOpens", "delta": 400}]}
BEFORE_COUNTERS = {"Ip.InReceives": 3000, "Ip.OutRequests": 1500}


def after(drops: int | None = 0, packets: int = 4000, measured: bool = True,
          not_evaluated: dict | None = None) -> Diagnosis:
    findings = []
    if drops:
        findings.append(Finding("tcp.listen_overflow", "transport", "critical", drops, drops / 5.0, False, ""))
    coverage = {"snmp": "ok", "netstat": "ok"} if measured else {"snmp": "failed", "netstat": "failed"}
    return Diagnosis("6.18", "srv", "vm", 5.0, coverage, findings=findings, not_evaluated=not_evaluated or {},
                     counter_deltas={"TcpExt.ListenOverflows": drops, "Ip.InReceives": packets // 2,
                                     "Ip.OutRequests": packets // 2})


def planned(key="net.core.somaxconn", old=16, new=2048, finding=BEFORE) -> tuple[Plan, Applied]:
    plan = Plan("srv", "test", 5.0, [finding])
    change = PlannedChange(SysctlChange("srv", new, key=key), [finding["id"]], new,
                           subjects=list(finding.get("subjects", [])))
    plan.changes.append(change)
    return plan, Applied(change, 1, old, in_force=new, boottime=1000.0)


def probes(backlog: int | None = None, started_before: bool | None = None) -> Probes:
    listeners = [listener(port=8080, backlog=backlog, inode=40001)] if backlog is not None else []
    return Probes(listeners=lambda netns: listeners, owners=lambda: SocketOwners({40001: (4242, "payments")}),
                  started_before=lambda pid, when: started_before)


# --- per finding -----------------------------------------------------------------------------

@pytest.mark.parametrize("diagnosis, verdict", [
    (after(0), FIXED),
    (after(300), IMPROVED),          # 60/s after 242.8/s: down by more than half
    (after(1000), NOT_IMPROVED),
    (after(0, packets=200), INCONCLUSIVE),  # the load went away too
    (after(0, measured=False), UNKNOWN),
    (after(0, not_evaluated={"tcp.listen_overflow": "counters not available"}), UNKNOWN),
])
def test_finding_verdicts(diagnosis, verdict):
    check = check_finding(BEFORE, diagnosis, BEFORE_COUNTERS)
    assert check.verdict == verdict
    assert (check.before_drops, check.before_rate) == (1214, 242.8)
    if verdict != UNKNOWN:
        assert check.after_drops == (diagnosis.finding("tcp.listen_overflow").drops
                                     if diagnosis.finding("tcp.listen_overflow") else 0)


def test_little_traffic_before_is_not_compared():
    assert check_finding(BEFORE, after(0, packets=0), {"Ip.InReceives": 40, "Ip.OutRequests": 40}).verdict == FIXED


def test_traffic_is_compared_over_the_counters_known_on_both_sides():
    check = check_finding(BEFORE, after(0, packets=200), {"Ip.InReceives": 3000, "Ip6.InReceives": 9})
    assert check.verdict == INCONCLUSIVE and "Ip.InReceives: 3000 before, 100 after" in check.detail


def test_no_rate_before_cannot_be_compared():
    assert check_finding({"id": "x", "drops": None, "rate_per_s": None}, after(0), None).verdict == UNKNOWN
    # drops 0 is a condition without drops (cpu.time_squeeze): see tests/unit/test_lab_fixes.py


# --- somaxconn: applied when listen() is called again ---------------------------------------

def test_somaxconn_pending_restart_when_the_socket_keeps_its_old_backlog():
    plan, applied = planned()
    result = verify(plan, [applied], after(0), probes=probes(backlog=16))
    assert applied.verdict == "pending" and result.keep == [applied] and result.roll_back == []
    assert "pending restart of pid 4242 (payments)" in applied.detail
    assert "0.0.0.0:8080 still listens with the backlog 16" in applied.detail
    assert exit_code_for([applied]) == 1


def test_somaxconn_pending_is_not_rolled_back_even_when_drops_did_not_fall():
    plan, applied = planned()
    result = verify(plan, [applied], after(1214), probes=probes(backlog=16))
    assert applied.verdict == "pending" and result.roll_back == []


def test_somaxconn_verified_after_the_server_listened_again():
    plan, applied = planned()
    result = verify(plan, [applied], after(0), probes=probes(backlog=1024))  # min(1024 asked, 2048)
    assert applied.verdict == "verified" and result.keep == [applied]
    assert "242.8/s before, 0.0/s after" in applied.detail
    assert exit_code_for([applied]) == 0


def test_somaxconn_not_effective_after_restart_is_rolled_back():
    plan, applied = planned()
    result = verify(plan, [applied], after(1200), probes=probes(backlog=2048))
    assert applied.verdict == "not effective" and result.roll_back == [applied]
    assert exit_code_for([applied]) == 2


def test_somaxconn_when_the_app_caps_its_own_backlog():
    finding = BEFORE | {"subjects": [SUBJECT | {"backlog": 8, "capped_by": "listen() backlog"}]}
    plan, applied = planned(finding=finding)
    verify(plan, [applied], after(1214), probes=probes(backlog=8))
    assert applied.verdict == "pending"
    assert "asked listen() for 8 itself" in applied.detail and "raise its own backlog setting" in applied.detail


def test_somaxconn_without_named_socket_uses_the_owner_of_a_socket_capped_by_the_old_value():
    finding = BEFORE | {"subjects": []}
    plan, applied = planned(finding=finding)
    verify(plan, [applied], after(0), probes=probes(backlog=16))
    assert "pending restart of pid 4242 (payments)" in applied.detail


# --- socket buffers: applied to sockets created afterwards ----------------------------------

UDP = {"id": "udp.rcvbuf_full", "drops": 5000, "rate_per_s": 1000.0,
       "subjects": [{"socket": "0.0.0.0:5353", "pid": 77, "process": "dns", "drops": 5000}], "evidence": []}


def udp_after(drops: int) -> Diagnosis:
    findings = [Finding("udp.rcvbuf_full", "transport", "critical", drops, drops / 5.0, False, "")] if drops else []
    return Diagnosis("6.18", "srv", "vm", 5.0, {"snmp": "ok"}, findings=findings)


def test_rmem_default_pending_while_the_receiver_runs_from_before():
    plan, applied = planned("net.core.rmem_default", 212992, 425984, UDP)
    result = verify(plan, [applied], udp_after(5000), probes=probes(started_before=True))
    assert applied.verdict == "pending" and result.roll_back == []
    assert "pending restart of pid 77 (dns)" in applied.detail


def test_rmem_default_not_effective_when_the_receiver_was_restarted():
    plan, applied = planned("net.core.rmem_default", 212992, 425984, UDP)
    result = verify(plan, [applied], udp_after(5000), probes=probes(started_before=False))
    assert applied.verdict == "not effective" and result.roll_back == [applied]


def test_rmem_default_verified_when_drops_fell():
    plan, applied = planned("net.core.rmem_default", 212992, 425984, UDP)
    verify(plan, [applied], udp_after(10), probes=probes(started_before=True))
    assert applied.verdict == "verified"


# --- several changes, exit codes ------------------------------------------------------------

def test_each_change_is_judged_by_its_own_findings():
    plan, somaxconn = planned()
    other = {"id": "tcp.syn_queue_full", "drops": 40, "rate_per_s": 8.0, "subjects": [], "evidence": []}
    plan.findings.append(other)
    syn = PlannedChange(SysctlChange("srv", 4096, key="net.ipv4.tcp_max_syn_backlog"), [other["id"]], 4096)
    plan.changes.append(syn)
    syn_applied = Applied(syn, 2, 2048, in_force=4096)
    diagnosis = after(0)
    diagnosis.findings.append(Finding("tcp.syn_queue_full", "transport", "critical", 40, 8.0, False, ""))
    result = verify(plan, [somaxconn, syn_applied], diagnosis, probes=probes(backlog=1024))
    assert somaxconn.verdict == "verified" and syn_applied.verdict == "not effective"
    assert result.keep == [somaxconn] and result.roll_back == [syn_applied]
    assert exit_code_for([somaxconn, syn_applied]) == 2


def test_unmeasurable_after_window_rolls_back_and_exits_3():
    plan, applied = planned()
    result = verify(plan, [applied], after(0, measured=False), probes=probes(backlog=1024))
    assert applied.verdict == "unknown" and result.roll_back == [applied]
    assert exit_code_for([applied]) == 3


def test_inconclusive_is_kept_and_exits_1():
    plan, applied = planned()
    verify(plan, [applied], after(0, packets=50), BEFORE_COUNTERS, probes=probes(backlog=1024))
    assert applied.verdict == "inconclusive" and "re-check under comparable load" in applied.detail
    assert exit_code_for([applied]) == 1
