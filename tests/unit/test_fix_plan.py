"""dropdoc fix: from a diagnosis (the JSON contract) to a plan with current/proposed/why,
app-side actions, and refusals with their reasons. Offline (live=False): nothing is read
from or written to the system."""

from __future__ import annotations

import json

import pytest

from dropdoc.diagnose import diagnosis_from_window
from dropdoc.errors import DropdocError
from dropdoc.fix import why as why_mod
from dropdoc.fix.changes import QdiscLimitChange, RingChange, SysctlChange, TxQueueLenChange
from dropdoc.fix.plan import ALREADY, PLANNED, REFUSED, NotADiagnosis, load_diagnosis, make_plan
from dropdoc.model import SCHEMA
from dropdoc.sources.process_sockets import SocketOwners

from windows import Host, listener, make_window, stats

PAYMENTS = SocketOwners({40001: (4242, "payments")})


def reference_diagnosis(somaxconn=128, backlog=128, drops=286, full=10, samples=50, full_at_end=False,
                        netns="srv") -> dict:
    """The payment service of DESIGN.md through the real rules and enrichers."""
    host = Host(netns=netns)
    host.sysctls["net.core.somaxconn"] = somaxconn
    host.owners = PAYMENTS
    lst = listener(port=8080, backlog=backlog, queue=backlog + 1, inode=40001)
    host.tcp_listeners = [lst]
    before = host.snapshot(0.0)
    host.bump("netstat", "TcpExt.ListenOverflows", drops)
    host.bump("netstat", "TcpExt.ListenDrops", drops)
    host.bump("snmp", "Tcp.PassiveOpens", 1500)
    window = make_window(before, host.snapshot(5.0),
                         [stats(lst, peak=backlog + 1, full=full, samples=samples, full_at_end=full_at_end)])
    return diagnosis_from_window(window).to_dict()


def diagnosis(*findings: dict, netns: str | None = "srv", seconds: float = 5.0) -> dict:
    return {"schema": SCHEMA, "host": {"kernel": "6.18.0", "netns": netns}, "window": {"seconds": seconds},
            "healthy": False, "findings": list(findings)}


def finding(fid: str, *fixes: dict, drops: int = 500, severity: str = "critical", benign: bool = False,
            subjects=(), evidence=()) -> dict:
    return {"id": fid, "layer": "transport", "severity": severity, "drops": drops, "rate_per_s": drops / 5.0,
            "benign": benign, "summary": "", "evidence": list(evidence), "subjects": list(subjects),
            "fixes": list(fixes)}


def sysctl(key: str, current, proposed, note: str = "") -> dict:
    return {"kind": "sysctl", "key": key, "current": current, "proposed": proposed, "netns": "srv",
            "scope": "per network namespace", "note": note}


def only(plan, target):
    matches = [c for c in plan.changes if c.target == target]
    assert len(matches) == 1, [c.target for c in plan.changes]
    return matches[0]


# --- the reference case ---------------------------------------------------------------------

def test_reference_case_plan_has_values_why_and_app_side_actions():
    plan = make_plan(reference_diagnosis(), live=False)
    assert plan.netns == "srv"
    assert [f["id"] for f in plan.findings] == ["tcp.listen_overflow"]
    change = only(plan, "net.core.somaxconn")
    assert change.status == PLANNED
    assert isinstance(change.change, SysctlChange) and change.change.netns == "srv"
    # current as the diagnosis saw it; proposed = next power of two >= 128 + 286 dropped
    assert (change.current, change.proposed, change.current_from) == (128, 512, "diagnosis")
    assert change.findings == ["tcp.listen_overflow"]
    # why: the measured numbers the value comes from
    assert "peaked at 129" in change.why and "backlog of 128 in force" in change.why
    assert "full in 10/50 samples" in change.why
    assert "286 connection attempts were dropped in 5.0 s (57.2/s)" in change.why
    assert "128 + 286 = 414, rounded up to a power of two" in change.why
    assert "pid 4242 (payments)" in change.note and "listen() again" in change.note
    assert change.change.effect == "listen"
    assert change.change.command() == "ip netns exec srv sysctl -w net.core.somaxconn=512"
    texts = [a["text"] for a in plan.actions]
    assert any("pid 4242 (payments)" in t and "backlog of 128 in force" in t and "restart" in t for t in texts)
    assert all(a["finding"] == "tcp.listen_overflow" for a in plan.actions)


def test_sustained_overload_is_planned_with_a_warning():
    plan = make_plan(reference_diagnosis(full=50, samples=50, full_at_end=True), live=False)
    change = only(plan, "net.core.somaxconn")
    assert change.status == PLANNED
    assert "sustained overload" in change.why and "only delays" in change.why


def test_plan_from_the_json_file_equals_the_live_plan(tmp_path):
    data = reference_diagnosis()
    path = tmp_path / "diagnosis.json"
    path.write_text(json.dumps(data))
    from_file = make_plan(load_diagnosis(str(path)), live=False).to_dict()
    from_dict = make_plan(data, live=False).to_dict()
    assert from_file == from_dict
    assert from_file["changes"][0]["proposed"] == 512


def test_plan_from_a_lab_run_json_uses_its_measured_diagnosis(tmp_path):
    data = reference_diagnosis()
    path = tmp_path / "lab.json"
    path.write_text(json.dumps({"scenario": "listen-overflow", "server_netns": "ddlab-x-srv",
                                "diagnosis": data, "fix": {"diagnosis": {"schema": "other"}}}))
    assert make_plan(load_diagnosis(str(path)), live=False).to_dict() == make_plan(data, live=False).to_dict()


def test_app_backlog_cap_gives_app_action_only():
    plan = make_plan(reference_diagnosis(somaxconn=4096, backlog=511, drops=100), live=False)
    assert plan.changes == []
    assert any("asked listen() for a backlog of 511" in a["text"] for a in plan.actions)


# --- global keys -----------------------------------------------------------------------------

def backlog_finding() -> dict:
    return finding("cpu.backlog_drop", sysctl("net.core.netdev_max_backlog", 1000, 2048),
                   subjects=[{"cpu": 1, "drops": 300}])


def test_global_key_refused_for_a_namespace_with_the_reason():
    plan = make_plan(diagnosis(backlog_finding(), netns="srv"), live=False)
    change = only(plan, "net.core.netdev_max_backlog")
    assert change.status == REFUSED
    assert "global" in change.reason and "whole host" in change.reason and "without --netns" in change.reason
    assert plan.actionable == []


def test_global_key_planned_on_the_host_and_says_so():
    plan = make_plan(diagnosis(backlog_finding(), netns=None), live=False)
    change = only(plan, "net.core.netdev_max_backlog")
    assert change.status == PLANNED
    assert change.change.scope() == "global: changes the whole host"
    assert change.change.command() == "sysctl -w net.core.netdev_max_backlog=2048"
    assert "300 of them on CPU 1" in change.why


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("key, proposed, netns, words", [
    ("net.core.somaxconn", 70000, "srv", "0..65535"),
    ("net.core.somaxconn", -1, "srv", "0..65535"),
    ("net.core.somaxconn", "1024", "srv", "outside the safe range"),
    ("net.ipv4.tcp_mem", [300, 200, 100], None, "out of order"),
    ("net.ipv4.udp_mem", [10, 20], None, "three integers"),
    ("net.ipv4.tcp_rmem", [0, 131072, 6291456], "srv", "1.."),
    ("net.ipv4.tcp_mem", [1, 2, 1 << 39], None, "RAM"),
    ("net.ipv4.ip_forward", 1, "srv", "not a sysctl dropdoc manages"),
    ("net.ipv4.conf.eth0.rp_filter", 3, "srv", "0..2"),
])
def test_unsafe_values_are_refused_with_the_reason(key, proposed, netns, words):
    plan = make_plan(diagnosis(finding("x.test", sysctl(key, 0, proposed)), netns=netns), live=False)
    change = only(plan, key)
    assert change.status == REFUSED
    assert words in change.reason


def test_valid_triple_is_planned_on_the_host():
    plan = make_plan(diagnosis(finding("tcp.memory_pressure",
                                       sysctl("net.ipv4.tcp_mem", [100, 200, 300], [200, 400, 600])),
                               netns=None), live=False)
    change = only(plan, "net.ipv4.tcp_mem")
    assert change.status == PLANNED and change.proposed == (200, 400, 600)
    assert change.change.command() == "sysctl -w net.ipv4.tcp_mem='200 400 600'"


def test_rmem_for_a_namespace_is_refused_as_global():
    # read-only inside a child namespace on 6.x: the host's values apply
    plan = make_plan(diagnosis(finding("udp.rcvbuf_full", sysctl("net.core.rmem_default", 212992, 425984))),
                     live=False)
    refused = only(plan, "net.core.rmem_default")
    assert refused.status == REFUSED and "global" in refused.reason


def test_rmem_default_above_rmem_max_is_refused():  # host namespace
    plan = make_plan(diagnosis(finding("udp.rcvbuf_full",
                                       sysctl("net.core.rmem_default", 212992, 1 << 20),
                                       sysctl("net.core.rmem_max", 212992, 1 << 19)), netns=None), live=False)
    refused = only(plan, "net.core.rmem_default")
    assert refused.status == REFUSED
    assert "net.core.rmem_max (524288) would be below net.core.rmem_default (1048576)" in refused.reason
    assert only(plan, "net.core.rmem_max").status == PLANNED


def test_limits_are_applied_before_what_they_bound():
    plan = make_plan(diagnosis(finding("udp.rcvbuf_full",
                                       sysctl("net.core.rmem_default", 212992, 425984),
                                       sysctl("net.core.rmem_max", 212992, 425984)), netns=None), live=False)
    assert [c.target for c in plan.changes] == ["net.core.rmem_max", "net.core.rmem_default"]
    assert all(c.status == PLANNED for c in plan.changes)


# --- merging, skipping -----------------------------------------------------------------------

def test_same_setting_from_two_findings_is_one_change_with_the_larger_value():
    plan = make_plan(diagnosis(finding("tcp.listen_overflow", sysctl("net.core.somaxconn", 128, 512)),
                               finding("tcp.syn_queue_full", sysctl("net.core.somaxconn", 128, 1024))),
                     live=False)
    change = only(plan, "net.core.somaxconn")
    assert change.findings == ["tcp.listen_overflow", "tcp.syn_queue_full"]
    assert change.proposed == change.change.value == 1024


def test_benign_and_informational_findings_are_not_planned():
    plan = make_plan(diagnosis(finding("udp.no_port", sysctl("net.core.somaxconn", 1, 2), benign=True,
                                       severity="info"),
                               finding("cpu.time_squeeze", sysctl("net.core.netdev_budget", 300, 600),
                                       severity="info")), live=False)
    assert plan.changes == [] and plan.findings == []
    assert "udp.no_port" in plan.notes[0] and "cpu.time_squeeze" in plan.notes[0]


def test_value_already_in_force_is_nothing_to_do():
    plan = make_plan(diagnosis(finding("tcp.listen_overflow", sysctl("net.core.somaxconn", 1024, 1024))),
                     live=False)
    change = only(plan, "net.core.somaxconn")
    assert change.status == ALREADY and "already 1024" in change.reason
    assert plan.actionable == []


def test_a_fix_that_lowers_a_value_is_planned():
    plan = make_plan(diagnosis(finding("tcp.listen_overflow", sysctl("net.ipv4.tcp_abort_on_overflow", 1, 0))),
                     live=False)
    change = only(plan, "net.ipv4.tcp_abort_on_overflow")
    assert (change.status, change.direction) == (PLANNED, -1)


def test_already_is_judged_in_the_direction_of_the_fix():
    from dropdoc.fix.plan import _satisfied

    assert _satisfied(4096, 1024, +1)        # raised beyond the proposal meanwhile
    assert not _satisfied(128, 1024, +1)
    assert _satisfied(0, 0, -1) and not _satisfied(1, 0, -1)
    assert _satisfied((4096, 262144, 8388608), (4096, 262144, 6291456), +1)
    assert not _satisfied(4096, 1024, 0)     # direction unknown: only an equal value is "already"


def test_fix_record_with_its_own_why_keeps_it():
    record = sysctl("net.core.somaxconn", 128, 1024) | {"why": "because the enricher says so: 1024"}
    plan = make_plan(diagnosis(finding("tcp.listen_overflow", record)), live=False)
    assert only(plan, "net.core.somaxconn").why == "because the enricher says so: 1024"


def test_incomplete_fix_record_becomes_a_note():
    plan = make_plan(diagnosis(finding("qdisc.drop", {"kind": "qdisc_limit", "interface": "eth0",
                                                      "proposed": 2000})), live=False)
    assert plan.changes == []
    assert "without 'handle'" in plan.actions[0]["text"]


# --- link settings ---------------------------------------------------------------------------

def test_link_records_become_link_changes():
    ring = {"kind": "command", "command": "ethtool -G eth1 rx 4096", "device": "eth1", "setting": "rx ring",
            "current": 512, "proposed": 4096, "text": "ethtool -G eth1 rx 4096   # RX ring 512 -> 4096"}
    channels = {"kind": "command", "command": "ethtool -L eth1 combined 8", "device": "eth1",
                "setting": "combined channels", "current": 4, "proposed": 8, "text": "ethtool -L eth1 combined 8"}
    txq = {"kind": "txqueuelen", "interface": "eth1", "current": 1000, "proposed": 2048}
    limit = {"kind": "qdisc_limit", "interface": "eth1", "handle": "1:", "qdisc": "pfifo", "current": 100,
             "proposed": 1024}
    netem = {"kind": "qdisc_limit", "interface": "eth1", "handle": "2:", "qdisc": "netem", "current": 100,
             "proposed": 1024}
    plan = make_plan(diagnosis(finding("nic.rx_missed", ring, channels), finding("qdisc.drop", txq, limit, netem)),
                     live=False)
    kinds = {type(c.change): c for c in plan.changes}
    assert isinstance(kinds[RingChange].change, RingChange)
    assert kinds[RingChange].change.command() == "ip netns exec srv ethtool -G eth1 rx 4096"
    assert kinds[TxQueueLenChange].change.command() == "ip -n srv link set dev eth1 txqueuelen 2048"
    pfifo = [c for c in plan.changes if isinstance(c.change, QdiscLimitChange) and c.change.qdisc == "pfifo"][0]
    assert pfifo.status == PLANNED
    refused = [c for c in plan.changes if isinstance(c.change, QdiscLimitChange) and c.change.qdisc == "netem"][0]
    assert refused.status == REFUSED and "reset its other options" in refused.reason
    # the channel count is not something dropdoc changes: it stays an action with its text
    assert [a["text"] for a in plan.actions] == ["ethtool -L eth1 combined 8"]


# --- input errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    ("not json", "not JSON"),
    ('{"schema": "other/1", "findings": []}', "not a dropdoc diagnosis"),
    ('[1, 2]', "not a dropdoc diagnosis"),
    (json.dumps({"schema": SCHEMA, "findings": [{"no": "id"}]}), "list of findings"),
    (json.dumps({"schema": SCHEMA, "findings": [{"id": "x", "fixes": "nope"}]}), "fixes of x"),
    (json.dumps({"schema": SCHEMA, "findings": [{"id": "x", "drops": "7"}]}), "must be numbers"),
    (json.dumps({"schema": SCHEMA, "host": {"netns": 7}, "findings": []}), "host.netns"),
])
def test_bad_input_is_one_error(tmp_path, content, words):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(NotADiagnosis, match=words):
        load_diagnosis(str(path))


def test_missing_file_is_one_error(tmp_path):
    with pytest.raises(DropdocError, match="No such file"):
        load_diagnosis(str(tmp_path / "absent.json"))


# --- why texts -------------------------------------------------------------------------------

def test_why_syn_backlog_and_syncookies_name_the_numbers():
    f = finding("tcp.syn_queue_full", drops=40)
    assert "40 drops in 5.0 s (8.0/s) with tcp_max_syn_backlog 2048" in why_mod.explain(
        f, "net.ipv4.tcp_max_syn_backlog", 2048, 4096, 5.0)
    assert "next power of two above 4096" in why_mod.explain(f, "net.ipv4.tcp_max_syn_backlog", 2048, 4096, 5.0)
    assert "with 1 the listener answers" in why_mod.explain(f, "net.ipv4.tcp_syncookies", 0, 1, 5.0)


def test_why_udp_names_the_worst_socket():
    f = finding("udp.rcvbuf_full", drops=5000, subjects=[
        {"socket": "0.0.0.0:5353", "pid": 77, "process": "dns", "drops": 4000, "rx_queue": 212000},
        {"socket": "0.0.0.0:9999", "pid": 78, "process": "x", "drops": 1000, "rx_queue": 0}])
    text = why_mod.explain(f, "net.core.rmem_default", 212992, 425984, 5.0)
    assert "0.0.0.0:5353 (pid 77, dns) alone dropped 4000 with 212000 bytes queued" in text
    assert "twice the current value" in text


def test_why_generic_and_ring():
    f = finding("ip.reassembly_timeout", drops=12)
    text = why_mod.explain(f, "net.ipv4.ipfrag_high_thresh", 4194304, 8388608, 5.0)
    assert "12 drops in 5.0 s (2.4/s) measured with net.ipv4.ipfrag_high_thresh = 4194304" in text
    ring = finding("nic.rx_missed", drops=120, subjects=[{"interface": "eth1", "rx_missed_errors": 120}])
    assert "eth1 missed 120 packets in 5.0 s (24.0/s) with an RX ring of 512 (hardware maximum 4096)" in \
        why_mod.explain_ring(ring, "eth1", 512, 1024, 4096, 5.0)


def test_why_qdisc_limit_names_the_qdisc_and_its_drops():
    limit = {"kind": "qdisc_limit", "interface": "eth1", "handle": "10:", "qdisc": "pfifo", "current": 10,
             "proposed": 2048}
    f = finding("qdisc.drop", limit, drops=1610, subjects=[
        {"interface": "eth1", "qdisc": "pfifo", "handle": "10:", "parent": "1:1", "drops": 1610,
         "sent_packets": 2590, "limit": 10, "limit_unit": "packets"}])
    change = only(make_plan(diagnosis(f, seconds=2.0), live=False), "eth1 qdisc pfifo 10: limit")
    assert change.why.startswith("pfifo 10: on eth1 holds 10 packets and dropped 1610 packets of 4200 offered "
                                 "in 2.0 s (322.0/s); 2048 holds the limit plus every dropped packet "
                                 "(10 + 1610 = 1620, rounded up to a power of two)")
