"""The kernel layer: the per-CPU softirq backlog, softirq budget (time_squeeze), qdiscs."""

from __future__ import annotations

import math
from typing import Any

from ...model import Finding
from ...sources.qdisc import AQM_KINDS, SHAPER_KINDS, Qdisc
from ...window import Window
from . import enricher, evaluator
from .bursts import find_bursts
from .common import next_power_of_two, sysctl, sysctl_fix

HOST_WIDE = ("/proc/net/softnet_stat is host-wide, not per network namespace: these counters "
             "include every namespace and device on this host")

# --- cpu.backlog_drop ---------------------------------------------------------------------

@enricher("softnet")
def softnet(finding: Finding, window: Window) -> None:
    for name, value in sorted(window.deltas.values.items()):
        if name.startswith("softnet.cpu") and name.endswith(".dropped") and value:
            finding.subjects.append({"cpu": int(name.split(".")[1][3:]), "drops": value})
    for subject in finding.subjects:
        subject.update(cpu_load(window, subject["cpu"]))
    current = sysctl(window, "net.core.netdev_max_backlog")
    if isinstance(current, int):
        worst = max((s["drops"] for s in finding.subjects), default=0)
        proposed = backlog_proposal(current, worst)
        finding.fixes.append(sysctl_fix(window, "net.core.netdev_max_backlog", current, proposed, (
            f"global: changes the whole host, not only this namespace; {proposed} holds the {current} packets "
            f"the backlog held plus the {worst} dropped on the worst CPU in the window (a power of two, at least "
            f"twice the value; capped at {BACKLOG_CEILING}: beyond that, spread the load over more CPUs)")))
    else:
        finding.fixes.append(_unseen_global(window, "net.core.netdev_max_backlog"))
    if len(finding.subjects) == 1:
        finding.fixes.append({"kind": "config", "text": (
            f"all drops are on CPU {finding.subjects[0]['cpu']}: spread receive processing with RSS "
            "(more NIC queues) or RPS (/sys/class/net/<dev>/queues/rx-*/rps_cpus)")})
    if window.after.netns:
        finding.explanation = (f"{HOST_WIDE}, not only netns {window.after.netns}; the backlog is fed by "
                               "veth, loopback, non-NAPI drivers and RPS")

def cpu_load(window: Window, cpu: int) -> dict[str, Any]:
    """What a dropping CPU processed over the window, and (from the counters sampled tick
    by tick) its worst burst of drops: how long it lasted and what the CPU processed
    meanwhile - the per-CPU rate `dropdoc fix` sizes the backlog with."""
    prefix = f"softnet.cpu{cpu}"
    out: dict[str, Any] = {"processed": window.deltas.get(f"{prefix}.processed")}
    found = find_bursts(window.intervals, (f"{prefix}.dropped",), {"processed": (f"{prefix}.processed",)})
    if found is not None:
        out.update(found.fields())
        if found.worst is not None:
            out["burst_processed"] = found.worst.companions["processed"]
    return out


BACKLOG_CEILING = 1 << 16  # beyond this a per-CPU queue only adds delay: spread the load instead


def backlog_proposal(current: int, worst_cpu_drops: int) -> int:
    """A backlog that holds what one CPU queued plus what it dropped in the window (the
    backlog is per CPU): at least twice the value in force, a power of two, capped."""
    wanted = max(2 * current, next_power_of_two(current + worst_cpu_drops), 1)
    return min(wanted, max(BACKLOG_CEILING, 2 * current))

# --- cpu.time_squeeze ---------------------------------------------------------------------

def _per_cpu(window: Window, suffix: str) -> dict[int, int]:
    out = {}
    for name, value in window.deltas.values.items():
        if name.startswith("softnet.cpu") and name.endswith(suffix) and value:
            out[int(name.split(".")[1][3:])] = value
    return out


@evaluator("time_squeeze")
def time_squeeze(rule, window: Window) -> Finding | None | str:
    from ..engine import matching, new_finding  # late: the engine imports this package

    deltas = window.deltas
    values = matching(rule.drop_counters, deltas.values)
    known = {k: v for k, v in values.items() if v is not None}
    reset = any(c in values for c in deltas.resets)
    if not known:
        return "counter reset during the window" if reset else "counters not available"
    seconds = window.seconds or 1.0
    squeezes = {int(k.split(".")[1][3:]): v for k, v in known.items() if v}
    worst_rate = max(squeezes.values(), default=0) / seconds
    if worst_rate < rule.warning_per_s:
        # Occasional squeezes are the kernel yielding fairly: nothing to report. A reset CPU
        # may have hidden a sustained squeeze.
        return "counter reset during the window" if reset else None
    total = sum(squeezes.values())
    evidence: list[dict[str, Any]] = [
        {"source": "counters", "counter": f"softnet.cpu{c}.time_squeeze", "delta": v,
         "rate_per_s": round(v / seconds, 3)} for c, v in sorted(squeezes.items())]
    evidence += [{"source": "counters", "counter": name, "delta": value}
                 for name, value in sorted(matching(rule.evidence_counters, deltas.values).items()) if value]
    finding = new_finding(rule, window, 0, evidence)  # a squeeze is not a drop
    finding.severity = "warning"
    finding.summary = rule.summary.format(drops=total, rate=total / seconds)
    processed = _per_cpu(window, ".processed")
    dropped = _per_cpu(window, ".dropped")
    sustained = sorted(c for c, v in squeezes.items() if v / seconds >= rule.warning_per_s)
    for cpu, count in sorted(squeezes.items()):
        subject = {"cpu": cpu, "time_squeeze": count, "squeeze_per_s": round(count / seconds, 1),
                   "processed": processed.get(cpu, 0)}
        if cpu in dropped:
            subject["backlog_drops"] = dropped[cpu]
        finding.subjects.append(subject)
    finding.fixes.extend(_budget_fixes(window))
    if len(sustained) == 1 and len(squeezes) == 1:
        finding.fixes.append({"kind": "config", "text": (
            f"only CPU {sustained[0]} runs out of budget: spread receive processing over more CPUs "
            "(more NIC queues/RSS, IRQ affinity, RPS) before giving one CPU a bigger budget")})
    missed = sum(v for k, v in deltas.values.items()
                 if k.startswith("link.") and k.endswith((".rx_missed_errors", ".rx_fifo_errors")) and v)
    lost = sum(dropped.values()) + missed
    where = f" ({HOST_WIDE})" if window.after.netns else ""
    if lost:
        finding.explanation = (
            f"the squeezes coincide with {lost} receive drops in the same window (softnet backlog "
            f"and NIC ring): the CPU cannot keep up, so packets waiting for the next softirq round "
            f"overflow; a bigger budget drains more per round{where}")
    else:
        finding.explanation = (
            f"sustained: CPU {', '.join(map(str, sustained))} yielded with packets still waiting at "
            f">= {rule.warning_per_s:g}/s on average over the window, so received packets wait for the "
            f"next softirq round or ksoftirqd (latency); nothing was dropped yet{where}")
    return finding


def _unseen_global(window: Window, key: str) -> dict[str, Any]:
    """A global sysctl is not visible inside a network namespace: say where to read it."""
    where = f"inside netns {window.after.netns}" if window.after.netns else "here"
    return {"kind": "command", "text": (
        f"sysctl {key}  # global (host-wide), not readable {where}: read it in the host namespace "
        f"and set at least twice that value there (sysctl -w {key}=<2x>)")}


# The kernel's defaults: 300 packets per softirq round; 2 jiffies (2000 us at HZ=1000, 8000 at
# HZ=250) - the usecs default depends on HZ, so only the packet budget has a fixed floor.
KERNEL_BUDGET = 300


def budget_proposal(current: int) -> int:
    """Twice the budget in force, and at least the kernel's default: a budget below it
    was lowered by hand, and doubling a handful of packets does not end the squeezes."""
    return max(2 * current, KERNEL_BUDGET)


def _budget_fixes(window: Window) -> list[dict[str, Any]]:
    fixes = []
    for key, note in (
            ("net.core.netdev_budget", "packets one softirq round may process over all devices; a longer "
                                       "round delays user threads on that CPU"),
            ("net.core.netdev_budget_usecs", "time limit of one softirq round; raise it together with "
                                             "netdev_budget")):
        current = sysctl(window, key)
        if isinstance(current, int) and current > 0:
            proposed = budget_proposal(current) if key == "net.core.netdev_budget" else 2 * current
            if key == "net.core.netdev_budget" and current < KERNEL_BUDGET:
                note += (f"; {current} is below the kernel's default of {KERNEL_BUDGET} packets per round: "
                         f"back to at least the default")
            fixes.append(sysctl_fix(window, key, current, proposed, note))
        else:
            fixes.append(_unseen_global(window, key))
    return fixes

# --- qdisc.drop ---------------------------------------------------------------------------

PACKET_LIMIT_CEILING = 1 << 16
BYTE_LIMIT_CEILING = 1 << 26
LIMIT_KINDS = frozenset({"pfifo", "bfifo", "pfifo_head_drop", "fq_codel", "fq", "codel"})
FIFO_KINDS = frozenset({"pfifo", "bfifo", "pfifo_fast", "pfifo_head_drop"})
SUSTAINED_FACTOR = 1.05  # offered above rate * this: the shaper is the bottleneck, not a burst


def _delta(window: Window, q: Qdisc, counter: str) -> int | None:
    return window.deltas.values.get(f"{q.counter_prefix}.{counter}")


def _is_child(child: Qdisc, parent: Qdisc) -> bool:
    """child hangs below parent (directly or under one of parent's classes)."""
    if child is parent or child.ifindex != parent.ifindex or child.is_root or child.is_ingress:
        return False
    if parent.handle >> 16 == 0 and not parent.is_root:
        return False  # a qdisc without a handle (mq's per-queue children) has no children
    return child.parent >> 16 == parent.handle >> 16


def _ancestors(q: Qdisc, qdiscs: list[Qdisc]) -> list[Qdisc]:
    chain, current = [], q
    while True:
        parent = next((p for p in qdiscs if _is_child(current, p)), None)
        if parent is None or parent in chain:
            return chain
        chain.append(parent)
        current = parent


def human_rate(bits_per_s: float) -> str:
    """tc's SI units, rounded up: 1234567 -> '2mbit'."""
    for unit, name in ((1e9, "gbit"), (1e6, "mbit"), (1e3, "kbit")):
        if bits_per_s >= unit:
            return f"{math.ceil(bits_per_s / unit)}{name}"
    return f"{math.ceil(bits_per_s)}bit"


def exact_rate(bits_per_s: int) -> str:
    """The same rate in tc's largest exact SI unit: 100000000 -> '100mbit'."""
    for unit, name in ((10**9, "gbit"), (10**6, "mbit"), (10**3, "kbit")):
        if bits_per_s % unit == 0:
            return f"{bits_per_s // unit}{name}"
    return f"{bits_per_s}bit"


def _where(q: Qdisc) -> str:
    return "root" if q.is_root else f"parent {q.parent_str}"


def _tc(window: Window, text: str) -> str:
    ns = window.after.netns
    return f"ip netns exec {ns} {text}" if ns else text


def _proposed_limit(q: Qdisc, drops: int, avg_packet: float | None) -> int | None:
    if q.limit is None or q.limit <= 0:
        return None
    # Room for what was dropped on top of what fitted, at least twice the current limit.
    if q.limit_unit == "bytes":
        extra = int(drops * (avg_packet or 1500))
        return min(max(2 * q.limit, next_power_of_two(q.limit + extra)), BYTE_LIMIT_CEILING)
    return min(max(2 * q.limit, next_power_of_two(q.limit + drops)), PACKET_LIMIT_CEILING)


def _limit_command(window: Window, q: Qdisc, proposed: int) -> str | None:
    dev = q.dev
    if q.kind == "pfifo_fast":  # its queues are txqueuelen long (and follow a change of it)
        return _tc(window, f"ip link set dev {dev} txqueuelen {proposed}")
    head = f"tc qdisc {'change' if q.handle else 'replace'} dev {dev} {_where(q)}"
    if q.handle:
        head += f" handle {q.handle_str}"
    if q.kind == "tbf" and q.rate:
        return _tc(window, f"{head} tbf rate {exact_rate(q.rate * 8)} burst {q.burst or 0} limit {proposed}")
    if q.kind in ("pfifo", "bfifo", "pfifo_head_drop", "fq_codel", "codel", "fq", "sfq", "netem"):
        return _tc(window, f"{head} {q.kind} limit {proposed}")
    return None


def _subject(window: Window, q: Qdisc, before: dict[str, Qdisc], drops: int) -> dict[str, Any]:
    seconds = window.seconds or 1.0
    subject: dict[str, Any] = {"interface": q.dev, "qdisc": q.kind, "handle": q.handle_str,
                               "parent": q.parent_str, "drops": drops}
    for name in ("overlimits", "requeues"):
        value = _delta(window, q, name)
        if value is not None:
            subject[name] = value
    sent = _delta(window, q, "packets")
    old = before.get(q.counter_prefix)
    sent_bytes = (q.bytes - old.bytes if old is not None and old.bytes is not None and q.bytes is not None
                  and q.bytes >= old.bytes else None)
    if sent is not None:
        subject["sent_packets"] = sent
    if sent_bytes is not None:
        subject["sent_bytes"] = sent_bytes
    if q.limit is not None:
        subject["limit"] = q.limit
        subject["limit_unit"] = q.limit_unit
    subject["backlog_bytes"], subject["backlog_packets"] = q.backlog, q.qlen
    if q.txqueuelen is not None:
        subject["txqueuelen"] = q.txqueuelen
    if q.rate:
        subject["rate"] = human_rate(q.rate * 8)
    avg = sent_bytes / sent if sent and sent_bytes is not None else None
    if sent_bytes is not None and avg:
        subject["offered_bit_per_s"] = round((sent_bytes + drops * avg) * 8 / seconds)
    return subject


@enricher("qdisc")
def qdisc_drops(finding: Finding, window: Window) -> None:
    qdiscs: list[Qdisc] = window.after.data("qdisc") or []
    before = {q.counter_prefix: q for q in (window.before.data("qdisc") or [])}
    dropping = [q for q in qdiscs if (_delta(window, q, "drops") or 0) > 0]
    # The deepest qdisc that dropped: its ancestors only count its drops again.
    leaves = [q for q in dropping if not any(_is_child(c, q) for c in dropping)]
    explanations: list[str] = []
    all_aqm = bool(leaves)
    for q in sorted(leaves, key=lambda q: -(_delta(window, q, "drops") or 0)):
        drops = _delta(window, q, "drops") or 0
        subject = _subject(window, q, before, drops)
        finding.subjects.append(subject)
        finding.evidence.append({"source": "qdisc", "interface": q.dev, "qdisc": q.kind,
                                 "handle": q.handle_str, "drops": drops,
                                 "overlimits": subject.get("overlimits"),
                                 "limit": f"{q.limit} {q.limit_unit}" if q.limit is not None else None})
        aqm_only = _aqm_only(window, q, drops)
        all_aqm = all_aqm and aqm_only
        if q.is_ingress:
            all_aqm = False
            finding.fixes.append({"kind": "command", "text": _tc(window, (
                f"tc -s filter show dev {q.dev} ingress  # {drops} packets dropped on ingress of {q.dev} "
                f"by a tc filter action ({q.kind} {q.handle_str}): the filter that drops is the cause"))})
            continue
        if aqm_only:
            explanations.append(f"{q.kind} {q.handle_str} on {q.dev} dropped {drops} packets by its AQM "
                                "(queue delay above target), none because its limit was full")
            continue
        shaper = next((a for a in [q, *_ancestors(q, qdiscs)]
                       if a.kind in SHAPER_KINDS and (_delta(window, a, "overlimits") or 0) > 0), None)
        sustained = False
        if shaper is not None:
            sustained = _shaper_fix(finding, window, q, shaper, subject, explanations)
        if not sustained:
            _limit_fix(finding, window, q, drops, subject)
    if all_aqm:
        finding.benign, finding.severity = True, "info"
    explanations.append("qdisc drops happen on the sending side: a local UDP sender gets ENOBUFS "
                        "(counted as Udp SndbufErrors and Ip OutDiscards; the application sees the "
                        "error only with IP_RECVERR), TCP slows down (latency) instead of losing data, "
                        "forwarded packets are lost")
    finding.explanation = "; ".join(explanations)


def _aqm_only(window: Window, q: Qdisc, drops: int) -> bool:
    """True when every drop was the AQM's choice (fq_codel: none hit the limit or memory)."""
    if q.kind not in AQM_KINDS:
        return False
    over = [_delta(window, q, name) for name in ("drop_overlimit", "drop_overmemory") if name in q.xstats]
    return bool(over) and all(v == 0 for v in over) and drops > 0


def _shaper_fix(finding: Finding, window: Window, q: Qdisc, shaper: Qdisc, subject: dict[str, Any],
                explanations: list[str]) -> bool:
    """Say that the shaping rate is the cap; True when traffic exceeded it (sustained)."""
    over = _delta(window, shaper, "overlimits")
    offered = subject.get("offered_bit_per_s")
    dev = shaper.dev
    if shaper.kind == "tbf" and shaper.rate:
        rate_bits = shaper.rate * 8
        cap = (f"the shaping rate is the cap: tbf {shaper.handle_str} on {dev} sends at most "
               f"{human_rate(rate_bits)} ({over} overlimits: packets held back by it)")
        sustained = offered is not None and offered > rate_bits * SUSTAINED_FACTOR
        if not sustained:
            seen = f" (~{human_rate(offered)} offered)" if offered is not None else ""
            explanations.append(f"{cap}; averaged over the window the traffic stayed below it{seen}, so "
                                f"the drops came from bursts above its {shaper.limit}-byte queue limit")
            return False
        explanations.append(f"{cap} and traffic was offered at ~{human_rate(offered)}: a bigger queue "
                            "limit only delays these drops and adds queueing delay")
        finding.fixes.append({"kind": "command", "text": _tc(window, (
            f"tc qdisc change dev {dev} {_where(shaper)} handle {shaper.handle_str} tbf rate "
            f"{human_rate(offered)} burst {shaper.burst or 0} limit {shaper.limit}"
            f"  # carries what was offered; raise the rate only if the {human_rate(rate_bits)} cap is "
            "not intended, otherwise make the senders pace below it"))})
        return True
    explanations.append(f"the shaping rate is the cap: {shaper.kind} {shaper.handle_str} on {dev} is shaping "
                        f"({over} overlimits) at the rates of its classes")
    finding.fixes.append({"kind": "command", "text": _tc(window, (
        f"tc -s class show dev {dev}  # the {shaper.kind} class feeding {q.kind} {q.handle_str} "
        f"(parent {q.parent_str}) caps the rate: raise its rate/ceil if that cap is not intended"))})
    return False


def _limit_fix(finding: Finding, window: Window, q: Qdisc, drops: int, subject: dict[str, Any]) -> None:
    sent, sent_bytes = subject.get("sent_packets"), subject.get("sent_bytes")
    avg = sent_bytes / sent if sent and sent_bytes is not None else None
    proposed = _proposed_limit(q, drops, avg)
    command = _limit_command(window, q, proposed) if proposed else None
    if command is None:
        finding.fixes.append({"kind": "command", "text": _tc(window, (
            f"tc -s -d qdisc show dev {q.dev}  # {q.kind} {q.handle_str} dropped {drops} packets: "
            "raise its queue limit, or the device's txqueuelen if the qdisc takes its length from it"))})
        return
    unit = q.limit_unit or "packets"
    delay = f" (up to {proposed / q.rate * 1000:.0f} ms at {human_rate(q.rate * 8)})" if q.rate else ""
    note = (f"{q.kind} {q.handle_str} on {q.dev} holds {q.limit} {unit} and dropped {drops}: {proposed} {unit} "
            f"absorbs a burst of that size; a longer queue adds latency{delay}"
            + (" (prefer fq_codel over a bigger FIFO)" if q.kind in FIFO_KINDS else ""))
    fix: dict[str, Any] = {"kind": "command", "text": f"{command}  # {note}"}
    if q.kind == "pfifo_fast":
        subject["capped_by"] = "txqueuelen"
        fix = {"kind": "txqueuelen", "interface": q.dev, "current": q.txqueuelen, "proposed": proposed,
               "netns": window.after.netns, "note": note, "text": f"{command}  # {note}"}
    elif q.handle and q.kind in LIMIT_KINDS:
        # `tc qdisc change` of these kinds changes only the limit (dropdoc fix can apply it)
        fix = {"kind": "qdisc_limit", "interface": q.dev, "handle": q.handle_str, "qdisc": q.kind,
               "current": q.limit, "proposed": proposed, "unit": unit, "netns": window.after.netns,
               "note": note, "text": f"{command}  # {note}"}
    finding.fixes.append(fix)
