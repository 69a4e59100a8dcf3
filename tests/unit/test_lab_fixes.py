"""The pieces `dropdoc lab run --fix` needs beyond `dropdoc fix`: global (host-wide) sysctls
planned for the host and written through a caller's function (the lab's set_host_sysctl,
restored on teardown) instead of being refused, and the verification of a finding that
counts no drops (cpu.time_squeeze). Offline: nothing is read from or written to the system."""

from __future__ import annotations

import pytest

from dropdoc.fix.apply import Applied
from dropdoc.fix.changes import ChangeFailed, SysctlChange
from dropdoc.fix.plan import PLANNED, REFUSED, host_only, make_plan
from dropdoc.fix.verify import FIXED, INCONCLUSIVE, NOT_IMPROVED, Probes, check_finding, verify
from dropdoc.model import SCHEMA, Diagnosis, Finding


def diagnosis(*findings: dict, netns: str | None = "srv") -> dict:
    return {"schema": SCHEMA, "host": {"kernel": "6.18.0", "netns": netns}, "window": {"seconds": 3.0},
            "healthy": False, "findings": list(findings)}


def finding(fid: str, *fixes: dict, drops: int = 6000) -> dict:
    return {"id": fid, "layer": "kernel", "severity": "critical", "drops": drops, "rate_per_s": drops / 3.0,
            "benign": False, "summary": "", "evidence": [], "subjects": [], "fixes": list(fixes)}


def sysctl(key: str, current, proposed) -> dict:
    return {"kind": "sysctl", "key": key, "current": current, "proposed": proposed, "netns": "srv"}


BACKLOG = finding("cpu.backlog_drop", sysctl("net.core.netdev_max_backlog", 1, 16384),
                  sysctl("net.core.somaxconn", 16, 1024))


# --- global keys: refused for a named namespace, unless a host writer is handed in ---------------

def test_without_a_host_writer_a_global_key_stays_refused_for_a_namespace():
    plan = make_plan(diagnosis(BACKLOG), live=False)
    (backlog,) = [c for c in plan.changes if c.target == "net.core.netdev_max_backlog"]
    assert backlog.status == REFUSED and "global" in backlog.reason and backlog.change.netns == "srv"
    assert backlog.change.writer is None


def test_with_a_host_writer_a_global_key_is_planned_for_the_host():
    written = []
    plan = make_plan(diagnosis(BACKLOG), live=False, host_sysctl=lambda key, value: written.append((key, value)),
                     host_sysctl_by="the test lab")
    by_target = {c.target: c for c in plan.changes}
    backlog = by_target["net.core.netdev_max_backlog"]
    assert (backlog.status, backlog.change.netns, backlog.proposed) == (PLANNED, None, 16384)
    assert backlog.change.scope() == "global: changes the whole host"
    assert backlog.note.startswith("global: written in the host namespace by the test lab")
    assert backlog.change.command() == "sysctl -w net.core.netdev_max_backlog=16384"
    # a per-namespace key stays in the namespace, written there as before
    somaxconn = by_target["net.core.somaxconn"]
    assert (somaxconn.status, somaxconn.change.netns, somaxconn.change.writer) == (PLANNED, "srv", None)
    backlog.change.apply()
    backlog.change.restore(1)
    assert written == [("net.core.netdev_max_backlog", 16384), ("net.core.netdev_max_backlog", 1)]


def test_host_only_needs_a_named_namespace():
    assert host_only("net.core.netdev_max_backlog", "srv", live=False)
    assert host_only("net.netfilter.nf_conntrack_max", "srv", live=False)
    assert host_only("net.core.rmem_default", "srv", live=False)
    assert not host_only("net.core.netdev_max_backlog", None, live=False)  # the host itself: as before
    assert not host_only("net.core.somaxconn", "srv", live=False)


def test_a_writer_that_fails_is_a_change_the_system_refused():
    def refuse(key, value):
        raise PermissionError(1, "Operation not permitted")
    change = SysctlChange(None, 8, key="net.core.netdev_budget", writer=refuse)
    with pytest.raises(ChangeFailed, match="net.core.netdev_budget: Operation not permitted"):
        change.apply()


def test_the_writer_is_not_part_of_the_journal_record():
    change = SysctlChange(None, 8, key="net.core.netdev_budget", writer=print)
    assert change.to_record() == {"kind": "sysctl", "netns": None, "target": "net.core.netdev_budget",
                                  "key": "net.core.netdev_budget"}
    assert change == SysctlChange(None, 8, key="net.core.netdev_budget")


# --- a finding without drops (cpu.time_squeeze) is judged by whether it is still reported -------

SQUEEZE = {"id": "cpu.time_squeeze", "drops": 0, "rate_per_s": 0.0, "severity": "warning", "subjects": [],
           "evidence": [{"source": "counters", "counter": "softnet.cpu1.time_squeeze", "delta": 13000}]}


def after(*findings: Finding, packets: int = 80000) -> Diagnosis:
    return Diagnosis("6.18", "srv", "vm", 3.0, {"snmp": "ok", "softnet": "ok"}, findings=list(findings),
                     counter_deltas={"Ip.InReceives": packets, "Ip.OutRequests": 0})


def squeeze(severity: str = "warning", benign: bool = False) -> Finding:
    return Finding("cpu.time_squeeze", "kernel", severity, 0, 0.0, benign, "ran out of budget 900 times")


@pytest.mark.parametrize("result, verdict", [
    (after(), FIXED),                          # no longer reported: below the rule's 10/s per CPU
    (after(squeeze()), NOT_IMPROVED),          # still above the threshold
    (after(squeeze("info", True)), FIXED),     # reported only as benign
    (after(packets=100), INCONCLUSIVE),        # gone, but so was the traffic
])
def test_condition_without_drops(result, verdict):
    check = check_finding(SQUEEZE, result, {"Ip.InReceives": 80000, "Ip.OutRequests": 0})
    assert check.verdict == verdict
    if verdict == FIXED:
        assert check.after_drops == 0 and "no longer reported" in check.detail
    if verdict == NOT_IMPROVED:
        assert "still reported" in check.detail


def test_budget_change_for_a_squeeze_that_ended_is_kept():
    from dropdoc.fix.plan import Plan, PlannedChange

    plan = Plan("srv", "test", 3.0, [SQUEEZE])
    change = PlannedChange(SysctlChange(None, 300, key="net.core.netdev_budget"), ["cpu.time_squeeze"], 300)
    plan.changes.append(change)
    applied = Applied(change, 1, 4, in_force=300, boottime=1000.0)
    result = verify(plan, [applied], after(), {"Ip.InReceives": 80000}, Probes())
    assert applied.verdict == "verified" and result.keep == [applied] and result.roll_back == []
    applied = Applied(change, 1, 4, in_force=300, boottime=1000.0)
    result = verify(plan, [applied], after(squeeze()), {"Ip.InReceives": 80000}, Probes())
    assert applied.verdict == "not effective" and result.roll_back == [applied]


# --- a longer reassembly timeout cannot be judged in a shorter window ----------------------------

def test_ipfrag_time_longer_than_the_window_is_inconclusive():
    # the lab's reassembly-timeout: a firewall drops every non-first fragment; ipfrag_time 1 -> 30
    # made the 5-s re-measurement show 0 timeouts only because they come 30 s later
    from dropdoc.fix.plan import Plan, PlannedChange

    timeouts = {"id": "ip.reassembly_timeout", "drops": 300, "rate_per_s": 60.0, "subjects": [], "evidence": []}
    for seconds, verdict in ((5.0, "inconclusive"), (40.0, "verified")):
        plan = Plan("srv", "test", seconds, [timeouts])
        change = PlannedChange(SysctlChange("srv", 30, key="net.ipv4.ipfrag_time"), ["ip.reassembly_timeout"], 30)
        plan.changes.append(change)
        applied = Applied(change, 1, 1, in_force=30, boottime=1000.0)
        result = verify(plan, [applied], after(), None, Probes())
        assert applied.verdict == verdict and result.keep == [applied] and result.roll_back == []
        if verdict == "inconclusive":
            assert "cannot be judged in a 5 s window" in applied.detail
