"""Rule cases of the kernel layer: qdisc.drop, cpu.time_squeeze (and cpu.backlog_drop's
host-wide note). Windows are built by hand (tests/unit/windows.py) plus qdisc data."""

from __future__ import annotations

import dataclasses

import pytest

from dropdoc import rules
from dropdoc.model import Diagnosis, EXIT_CRITICAL, EXIT_HEALTHY, EXIT_WARNING
from dropdoc.rules.engine import load_rules
from dropdoc.sources import SourceResult
from dropdoc.sources.qdisc import TC_H_INGRESS, Qdisc

from windows import Host, KernelHost, base_qdiscs, make_window, qdisc, quiet_window


# Only this area's rules: the other areas' rules have their own test files.
KERNEL_IDS = ("cpu.backlog_drop", "cpu.time_squeeze", "qdisc.drop")
KERNEL_RULES = tuple(r for r in load_rules() if r.id in KERNEL_IDS)


def test_the_area_has_its_three_rules():
    assert sorted(r.id for r in KERNEL_RULES) == sorted(KERNEL_IDS)


def evaluate(window):
    findings, not_evaluated = rules.evaluate(window, KERNEL_RULES)
    return {f.id: f for f in findings}, [f.id for f in findings], not_evaluated


def exit_code(window) -> int:
    findings, not_evaluated = rules.evaluate(window, KERNEL_RULES)
    return Diagnosis("6.8", "srv", "h", window.seconds, {"snmp": "ok"}, findings=findings,
                     not_evaluated=not_evaluated).exit_code()


def fixes_of(finding, kind):
    return [f for f in finding.fixes if f["kind"] == kind]


def sysctl_fix(finding, key):
    matches = [f for f in finding.fixes if f["kind"] == "sysctl" and f["key"] == key]
    assert len(matches) <= 1
    return matches[0] if matches else None


q = qdisc  # windows.qdisc: a Qdisc as sources/qdisc.py parses it, with busy-server defaults


def lo() -> Qdisc:
    return base_qdiscs()[0]


def bumped(qd: Qdisc, **by: int) -> Qdisc:
    return dataclasses.replace(qd, **{k: getattr(qd, k) + v for k, v in by.items()})


def qdisc_window(before: list[Qdisc], after: list[Qdisc], host: Host | None = None, seconds: float = 5.0,
                 during=None):
    host = host or Host()
    first = host.snapshot(0.0)
    if during:
        during(host)
    second = host.snapshot(seconds)
    first.results["qdisc"] = SourceResult("ok", before)
    second.results["qdisc"] = SourceResult("ok", after)
    return make_window(first, second)


def squeeze_window(host: Host | None = None, seconds: float = 5.0, **per_cpu):
    """per_cpu: cpu<N>=dict(time_squeeze=..., dropped=..., processed=...) bumps over the window."""
    host = host or Host()
    before = host.snapshot(0.0)
    for key, values in per_cpu.items():
        cpu = int(key[3:])
        current = next(c for c in host.softnet if c.cpu == cpu)
        host.set_cpu(cpu, **{k: getattr(current, k) + v for k, v in values.items()})
    after = host.snapshot(seconds)
    for snap in (before, after):
        snap.results["qdisc"] = SourceResult("ok", [lo()])
    return make_window(before, after)


# --- the area on a KernelHost (windows.py) -------------------------------------------------

def test_quiet_window_fires_nothing_and_evaluates_every_rule():
    _, ids, not_evaluated = evaluate(quiet_window(KernelHost()))
    assert ids == [] and not_evaluated == {}


def test_kernel_host_positive_cases_fire_only_their_rule():
    host = KernelHost()
    before = host.snapshot(0.0)
    host.qdisc = [base_qdiscs()[0], bumped(base_qdiscs()[1], drops=250, packets=9_000)]
    window = make_window(before, host.snapshot(5.0))
    assert evaluate(window)[1] == ["qdisc.drop"]
    host = KernelHost()
    before = host.snapshot(0.0)
    host.set_cpu(3, time_squeeze=200)
    assert evaluate(make_window(before, host.snapshot(5.0)))[1] == ["cpu.time_squeeze"]


def test_without_the_qdisc_source_qdisc_drop_is_not_evaluated():
    # windows.Host has no qdisc source: "not evaluated", never "no drops"
    _, _, not_evaluated = evaluate(quiet_window(Host()))
    assert not_evaluated == {"qdisc.drop": "counters not available"}
    broken = KernelHost(broken={"qdisc": ("unavailable", "rtnetlink qdisc dump: no such namespace")})
    assert evaluate(quiet_window(broken))[2] == {"qdisc.drop": "counters not available"}


# --- qdisc.drop: a FIFO full (the limit is the fix) ----------------------------------------

def test_pfifo_fast_drops_propose_txqueuelen():
    fast = q(limit=1000, limit_unit="packets")
    window = qdisc_window([lo(), fast], [lo(), bumped(fast, drops=300, packets=50_000, bytes=50_000_000)],
                          during=lambda h: h.bump("snmp", "Udp.SndbufErrors", 300))
    by_id, ids, not_evaluated = evaluate(window)
    assert ids == ["qdisc.drop"]
    assert "qdisc.drop" not in not_evaluated
    f = by_id["qdisc.drop"]
    assert (f.layer, f.severity, f.drops, f.benign) == ("kernel", "critical", 300, False)
    assert f.rate_per_s == pytest.approx(60.0)
    subject = f.subjects[0]
    assert subject["interface"] == "eth0" and subject["qdisc"] == "pfifo_fast"
    assert (subject["handle"], subject["parent"]) == ("0:", "root")
    assert (subject["drops"], subject["sent_packets"], subject["limit"]) == (300, 50_000, 1000)
    assert subject["capped_by"] == "txqueuelen"
    assert fixes_of(f, "command") == []
    (fix,) = fixes_of(f, "txqueuelen")
    # 1000 + 300 dropped -> 2048 (at least twice the limit)
    assert (fix["interface"], fix["current"], fix["proposed"], fix["netns"]) == ("eth0", 1000, 2048, "srv")
    assert fix["text"].startswith("ip netns exec srv ip link set dev eth0 txqueuelen 2048")
    assert any(e.get("counter") == "Udp.SndbufErrors" and e["delta"] == 300 for e in f.evidence)
    assert "ENOBUFS" in f.explanation and "sending side" in f.explanation


def test_pfifo_leaf_under_htb_is_named_and_gets_a_limit_fix():
    htb = q("eth1", "htb", handle=0x10000, ifindex=3, drops=0, overlimits=0)
    leaf = q("eth1", "pfifo", handle=0x100000, parent=0x10010, ifindex=3, limit=5, limit_unit="packets", drops=0)
    other = q("eth1", "pfifo", handle=0x200000, parent=0x10020, ifindex=3, limit=5, limit_unit="packets", drops=0)
    window = qdisc_window([lo(), htb, leaf, other],
                          [lo(), bumped(htb, drops=293, packets=11, bytes=7602),
                           bumped(leaf, drops=293, packets=11, bytes=7602), bumped(other, packets=4, bytes=400)],
                          host=Host(netns=None))
    f = evaluate(window)[0]["qdisc.drop"]
    assert f.drops == 293  # the root's count: the leaf's drops are not counted twice
    assert [(s["qdisc"], s["handle"], s["parent"]) for s in f.subjects] == [("pfifo", "10:", "1:10")]
    assert fixes_of(f, "command") == []  # no shaping (htb overlimits did not move): no class advice
    (fix,) = fixes_of(f, "qdisc_limit")
    # limit 5 + 293 dropped -> 512
    assert (fix["interface"], fix["handle"], fix["qdisc"]) == ("eth1", "10:", "pfifo")
    assert (fix["current"], fix["proposed"], fix["unit"], fix["netns"]) == (5, 512, "packets", None)
    assert fix["text"].startswith("tc qdisc change dev eth1 parent 1:10 handle 10: pfifo limit 512")


def test_htb_shaping_says_the_class_rate_is_the_cap():
    htb = q("eth1", "htb", handle=0x10000, ifindex=3, drops=0, overlimits=0)
    leaf = q("eth1", "pfifo", handle=0x100000, parent=0x10010, ifindex=3, limit=5, limit_unit="packets", drops=0)
    window = qdisc_window([lo(), htb, leaf],
                          [lo(), bumped(htb, drops=293, overlimits=600), bumped(leaf, drops=293)])
    f = evaluate(window)[0]["qdisc.drop"]
    texts = [fix["text"] for fix in fixes_of(f, "command")]
    assert any("tc -s class show dev eth1" in t and "caps the rate" in t for t in texts)
    assert "htb 1: on eth1 is shaping (600 overlimits)" in f.explanation


# --- qdisc.drop: a shaper (the rate is the cap) --------------------------------------------

def tbf(**kw) -> Qdisc:
    return q("eth0", "tbf", handle=0x10000, limit=8192, limit_unit="bytes", rate=125_000, burst=4096,
             drops=0, overlimits=0, **kw)


def test_tbf_over_its_rate_is_the_cap_not_the_limit():
    before = tbf()
    # 5 s at 1 Mbit/s ~ 625 kB sent, 4000 x 1000-byte packets dropped: offered ~7.4 Mbit/s
    after = bumped(before, drops=4000, overlimits=4500, packets=625, bytes=625_000)
    f = evaluate(qdisc_window([lo(), before], [lo(), after]))[0]["qdisc.drop"]
    subject = f.subjects[0]
    assert (subject["qdisc"], subject["rate"], subject["overlimits"]) == ("tbf", "1mbit", 4500)
    assert subject["offered_bit_per_s"] == pytest.approx((625_000 + 4000 * 1000) * 8 / 5)
    assert "the shaping rate is the cap: tbf 1: on eth0 sends at most 1mbit (4500 overlimits" in f.explanation
    assert "offered at ~8mbit: a bigger queue limit only delays these drops" in f.explanation
    (fix,) = fixes_of(f, "command")  # only the rate: a bigger limit would not help
    assert fixes_of(f, "qdisc_limit") == []
    assert "tbf rate 8mbit burst 4096 limit 8192" in fix["text"]
    assert "raise the rate only if the 1mbit cap is not intended" in fix["text"]


def test_tbf_bursts_under_its_rate_get_a_limit_fix_too():
    before = tbf()
    # 500 kB sent in 5 s (0.8 Mbit/s average) but 20 drops: bursts above the 8 kB limit
    after = bumped(before, drops=20, overlimits=300, packets=500, bytes=500_000)
    f = evaluate(qdisc_window([lo(), before], [lo(), after]))[0]["qdisc.drop"]
    assert "the shaping rate is the cap: tbf 1: on eth0 sends at most 1mbit" in f.explanation
    assert "stayed below it (~832kbit offered)" in f.explanation
    assert "bursts above its 8192-byte queue limit" in f.explanation
    (fix,) = fixes_of(f, "command")  # the limit only: the rate was not exceeded on average
    # 8192 + 20 x 1000 bytes -> 32768; tbf change needs rate and burst repeated
    assert "tc qdisc change dev eth0 root handle 1: tbf rate 1mbit burst 4096 limit 32768" in fix["text"]
    assert "up to 262 ms at 1mbit" in fix["text"]


# --- qdisc.drop: AQM, ingress, resets -----------------------------------------------------

def fq_codel(parent: int, **kw) -> Qdisc:
    return q("eth0", "fq_codel", handle=0, parent=parent, limit=10240, limit_unit="packets",
             xstats={"drop_overlimit": 0, "ecn_mark": 0, "drop_overmemory": 0}, **kw)


def test_fq_codel_aqm_drops_are_benign():
    mq = q("eth0", "mq", drops=100)
    q1 = fq_codel(1, drops=100)
    window = qdisc_window([lo(), mq, q1], [lo(), bumped(mq, drops=40), bumped(q1, drops=40)])
    f = evaluate(window)[0]["qdisc.drop"]
    assert f.drops == 40
    assert (f.benign, f.severity) == (True, "info")
    assert [s["parent"] for s in f.subjects] == [":1"]  # the mq child, not mq itself
    assert "AQM" in f.explanation
    assert fixes_of(f, "command") == []
    assert exit_code(window) == EXIT_HEALTHY


def test_fq_codel_limit_drops_are_not_benign():
    mq = q("eth0", "mq", drops=100)
    q1 = fq_codel(1, drops=100)
    q1_after = dataclasses.replace(bumped(q1, drops=400), xstats={**q1.xstats, "drop_overlimit": 350})
    window = qdisc_window([lo(), mq, q1], [lo(), bumped(mq, drops=400), q1_after])
    f = evaluate(window)[0]["qdisc.drop"]
    assert (f.benign, f.severity) == (False, "critical")
    (fix,) = fixes_of(f, "command")
    assert "tc qdisc replace dev eth0 parent :1 fq_codel limit 20480" in fix["text"]


def test_ingress_drops_point_at_the_filter():
    ingress = q("eth0", "ingress", handle=0xFFFF0000, parent=TC_H_INGRESS, drops=0)
    window = qdisc_window([lo(), ingress], [lo(), bumped(ingress, drops=12)])
    f = evaluate(window)[0]["qdisc.drop"]
    assert f.drops == 12 and f.severity == "critical"
    (fix,) = fixes_of(f, "command")
    assert "tc -s filter show dev eth0 ingress" in fix["text"]


def test_no_drops_no_finding():
    fast = q(limit=1000, limit_unit="packets")
    _, ids, not_evaluated = evaluate(qdisc_window([lo(), fast], [lo(), bumped(fast, packets=10_000)]))
    assert "qdisc.drop" not in ids and "qdisc.drop" not in not_evaluated


def test_recreated_qdisc_is_a_reset_not_a_drop_count():
    fast = q(drops=5000, limit=1000, limit_unit="packets")
    window = qdisc_window([lo(), fast], [lo(), dataclasses.replace(fast, drops=7, packets=10)])
    by_id, _, not_evaluated = evaluate(window)
    assert "qdisc.drop" not in by_id
    assert not_evaluated["qdisc.drop"] == "counter reset during the window"
    assert "qdisc.eth0.pfifo_fast.0:/root.drops" in window.deltas.resets


def test_replaced_by_another_kind_is_unknown_not_zero():
    fast = q(drops=5000)
    new = q("eth0", "tbf", handle=0x10000, drops=3, limit=8192, limit_unit="bytes", rate=125_000)
    window = qdisc_window([lo(), fast], [lo(), new])
    assert window.deltas.get("qdisc.eth0.tbf.1:/root.drops") is None
    assert window.deltas.get("qdisc.eth0.pfifo_fast.0:/root.drops") is None
    assert "qdisc.drop" not in evaluate(window)[0]


def test_u32_drop_counter_wraps():
    fast = q(drops=0xFFFF_FF00, limit=1000, limit_unit="packets")
    window = qdisc_window([lo(), fast], [lo(), dataclasses.replace(fast, drops=0x40)])
    assert evaluate(window)[0]["qdisc.drop"].drops == 0x140


def test_qdisc_source_failed_is_not_evaluated():
    host = Host()
    before, after = host.snapshot(0.0), host.snapshot(5.0)
    before.results["qdisc"] = SourceResult("ok", [lo()])
    after.results["qdisc"] = SourceResult("failed", error="ParseError: TCA_STATS_QUEUE")
    _, _, not_evaluated = evaluate(make_window(before, after))
    assert not_evaluated["qdisc.drop"] == "counters not available"


def test_qdisc_drop_ranks_by_rate_like_any_drop():
    fast = q(limit=1000, limit_unit="packets")
    window = qdisc_window([lo(), fast], [lo(), bumped(fast, drops=10_000)],
                          during=lambda h: h.set_cpu(2, dropped=300))
    _, ids, _ = evaluate(window)
    assert ids[:2] == ["qdisc.drop", "cpu.backlog_drop"]


# --- cpu.time_squeeze ---------------------------------------------------------------------

def test_sustained_squeeze_without_drops_is_a_warning_with_budget_fixes():
    window = squeeze_window(cpu1=dict(time_squeeze=500, processed=2_000_000))
    by_id, ids, _ = evaluate(window)
    assert ids == ["cpu.time_squeeze"]
    f = by_id["cpu.time_squeeze"]
    assert (f.layer, f.severity, f.benign) == ("kernel", "warning", False)
    assert (f.drops, f.rate_per_s) == (0, 0.0)  # a squeeze delays, it drops nothing
    assert "500 times" in f.summary and "100.0/s" in f.summary
    assert f.subjects == [{"cpu": 1, "time_squeeze": 500, "squeeze_per_s": 100.0, "processed": 2_000_000}]
    budget = sysctl_fix(f, "net.core.netdev_budget")
    assert (budget["current"], budget["proposed"]) == (300, 600)
    assert budget["scope"].startswith("global")
    usecs = sysctl_fix(f, "net.core.netdev_budget_usecs")
    assert (usecs["current"], usecs["proposed"]) == (2000, 4000)
    (spread,) = fixes_of(f, "config")
    assert "CPU 1" in spread["text"]
    assert "nothing was dropped yet" in f.explanation and "host-wide" in f.explanation
    assert exit_code(window) == EXIT_WARNING


def test_squeeze_below_threshold_is_not_reported():
    # 45 in 5 s = 9/s on the worst CPU: below the 10/s sustained threshold
    _, ids, not_evaluated = evaluate(squeeze_window(cpu0=dict(time_squeeze=45), cpu3=dict(time_squeeze=40)))
    assert ids == [] and not_evaluated == {}


def test_squeeze_threshold_is_per_cpu_not_host_wide():
    # 4 CPUs x 40 = 160 squeezes (32/s host-wide) but no CPU reaches 10/s
    window = squeeze_window(**{f"cpu{i}": dict(time_squeeze=40) for i in range(4)})
    assert evaluate(window)[1] == []
    window = squeeze_window(cpu0=dict(time_squeeze=50), cpu1=dict(time_squeeze=5))
    f = evaluate(window)[0]["cpu.time_squeeze"]
    assert [s["cpu"] for s in f.subjects] == [0, 1]
    assert fixes_of(f, "config") == []  # two CPUs squeezed: not a one-CPU steering problem


def test_squeeze_with_backlog_drops_ranks_below_the_drops():
    window = squeeze_window(cpu2=dict(time_squeeze=900, dropped=300))
    by_id, ids, _ = evaluate(window)
    assert ids == ["cpu.backlog_drop", "cpu.time_squeeze"]
    f = by_id["cpu.time_squeeze"]
    assert f.subjects[0]["backlog_drops"] == 300
    assert "coincide with 300 receive drops" in f.explanation
    assert any(e.get("counter") == "softnet.cpu2.dropped" for e in f.evidence)
    assert exit_code(window) == EXIT_CRITICAL


def test_squeeze_counter_reset_is_not_evaluated():
    host = Host()
    host.set_cpu(0, time_squeeze=100_000)
    before = host.snapshot(0.0)
    host.set_cpu(0, time_squeeze=3)
    window = make_window(before, host.snapshot(5.0))
    by_id, _, not_evaluated = evaluate(window)
    assert "cpu.time_squeeze" not in by_id
    assert not_evaluated["cpu.time_squeeze"] == "counter reset during the window"


def test_squeeze_without_softnet_is_not_evaluated():
    host = Host(broken={"softnet": ("unavailable", "/proc/net/softnet_stat: no such file")})
    _, _, not_evaluated = evaluate(make_window(host.snapshot(0.0), host.snapshot(5.0)))
    assert not_evaluated["cpu.time_squeeze"] == "counters not available"


# --- cpu.backlog_drop: the host-wide note --------------------------------------------------

def test_backlog_drop_in_a_namespace_says_softnet_is_host_wide():
    f = evaluate(squeeze_window(cpu2=dict(dropped=300)))[0]["cpu.backlog_drop"]
    assert "host-wide" in f.explanation and "netns srv" in f.explanation
    f = evaluate(squeeze_window(host=Host(netns=None), cpu2=dict(dropped=300)))[0]["cpu.backlog_drop"]
    assert f.explanation is None


def test_global_sysctls_unreadable_in_a_namespace_give_a_host_command():
    # a child netns has no /proc/sys/net/core/netdev_* files: the sysctls source gives None
    host = Host()
    for key in ("net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs"):
        host.sysctls[key] = None
    window = squeeze_window(host=host, cpu2=dict(time_squeeze=900, dropped=300))
    by_id, _, _ = evaluate(window)
    for finding_id, keys in (("cpu.backlog_drop", ["net.core.netdev_max_backlog"]),
                             ("cpu.time_squeeze", ["net.core.netdev_budget", "net.core.netdev_budget_usecs"])):
        f = by_id[finding_id]
        assert [fix for fix in f.fixes if fix["kind"] == "sysctl"] == []
        texts = [fix["text"] for fix in fixes_of(f, "command")]
        for key in keys:
            (text,) = [t for t in texts if t.startswith(f"sysctl {key} ")]
            assert "not readable inside netns srv" in text and "host namespace" in text


# --- proposals derived from what was measured (the lab's cpu-backlog / time-squeeze --fix) ------

def test_backlog_proposal_holds_what_the_worst_cpu_dropped():
    # the lab's cpu-backlog: netdev_max_backlog 1, ~10000 dropped on the RPS CPU in 3 s;
    # doubling (1 -> 2) left thousands of drops; 1 + 9980 -> 16384 brought them to 0
    host = Host()
    host.sysctls["net.core.netdev_max_backlog"] = 1
    f = evaluate(squeeze_window(host=host, seconds=3.0, cpu1=dict(dropped=9980), cpu0=dict(dropped=20)))[0][
        "cpu.backlog_drop"]
    fix = sysctl_fix(f, "net.core.netdev_max_backlog")
    assert (fix["current"], fix["proposed"]) == (1, 16384)
    assert "the 1 packets the backlog held plus the 9980 dropped on the worst CPU" in fix["note"]


def test_backlog_proposal_is_at_least_double_and_capped():
    from dropdoc.rules.enrichers.kernel import BACKLOG_CEILING, backlog_proposal

    assert backlog_proposal(1000, 300) == 2048  # 2 x 1000 rounds up to 2048 already
    assert backlog_proposal(1000, 10_000_000) == BACKLOG_CEILING
    assert backlog_proposal(100_000, 5) == 200_000  # already above the cap: still twice


def test_budget_below_the_kernel_default_goes_back_to_it():
    # the lab's time-squeeze: netdev_budget 4; doubling to 8 still squeezed ~26/s, 300 did not
    host = Host()
    host.sysctls["net.core.netdev_budget"] = 4
    f = evaluate(squeeze_window(host=host, cpu1=dict(time_squeeze=13000, processed=80000)))[0]["cpu.time_squeeze"]
    budget = sysctl_fix(f, "net.core.netdev_budget")
    assert (budget["current"], budget["proposed"]) == (4, 300)
    assert "below the kernel's default of 300" in budget["note"]
