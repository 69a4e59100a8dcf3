"""Did it work? Compare the drop rate of every planned finding before and after, and know
when a change cannot show yet.

- A new net.core.somaxconn only applies when the application calls listen() again. The
  backlog in force of the listening sockets (sock_diag, inside the namespace) tells: a
  socket of the finding that still has the old somaxconn as its backlog makes the change
  "applied, pending restart of pid N"; one below it asked listen() for less itself (the
  app's own setting must change). Either way: not judged, not rolled back. A backlog above
  the old value means the application listened again: the change is judged by the drops.
- rmem/wmem defaults and maxima apply to sockets created (or SO_RCVBUF requests made)
  afterwards: when the drops did not go down and the processes of the finding still run
  from before the change, that is pending a restart too.
- Drops that fell while the traffic fell as well (IP packets in + out of the namespace below
  a quarter of before) prove nothing: "inconclusive", kept, exit 1.
- Otherwise a change none of whose findings went down by at least half is rolled back.
- A longer reassembly timeout (ipfrag_time) postpones the drops it does not prevent: in a
  window shorter than the new timeout, fewer drops prove nothing - "inconclusive", kept.
- A finding that counts no drops (cpu.time_squeeze: a squeeze delays, it drops nothing)
  reports a condition above its rule's threshold: fixed when it is no longer reported,
  not improved while it still is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DropdocError
from ..model import Diagnosis
from .. import netns as netns_mod
from ..sources.process_sockets import SocketOwners, scan
from ..sources.tcp_listeners import Listener, dump_listeners
from .apply import Applied
from .changes import NEW_SOCKETS, ON_LISTEN
from .plan import Plan

REQUIRED_REDUCTION = 0.5  # after <= before * this, or the change did not help
LOW_LOAD = 0.25  # traffic after < this share of before: the drops may have fallen with it
MIN_TRAFFIC = 100  # packets before the change below which traffic is not compared
# IP packets in and out of the namespace: receive-side and send-side findings alike.
TRAFFIC_COUNTERS = ("Ip.InReceives", "Ip.OutRequests", "Ip6.InReceives", "Ip6.OutRequests")

FIXED, IMPROVED, NOT_IMPROVED, INCONCLUSIVE, UNKNOWN = "fixed", "improved", "not improved", "inconclusive", "unknown"
VERIFIED, PENDING, NOT_EFFECTIVE = "verified", "pending", "not effective"


@dataclass
class FindingCheck:
    id: str
    before_drops: int | None
    before_rate: float | None
    after_drops: int | None
    after_rate: float | None
    verdict: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "before": {"drops": self.before_drops, "rate_per_s": self.before_rate},
                "after": {"drops": self.after_drops, "rate_per_s": self.after_rate},
                "verdict": self.verdict, "detail": self.detail}


@dataclass
class Verification:
    checks: list[FindingCheck] = field(default_factory=list)
    keep: list[Applied] = field(default_factory=list)
    roll_back: list[Applied] = field(default_factory=list)

    def check(self, finding_id: str) -> FindingCheck | None:
        return next((c for c in self.checks if c.id == finding_id), None)


# --- probes of the system (injectable for unit tests) --------------------------------------

def listeners_in(netns: str | None) -> list[Listener]:
    with netns_mod.entered(netns):
        return dump_listeners()


def socket_owners() -> SocketOwners:
    return scan("/proc")


def started_before(pid: int, boottime: float) -> bool | None:
    """True if process pid started before CLOCK_BOOTTIME `boottime`; None if unknown/gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return start < boottime


@dataclass
class Probes:
    listeners: Callable[[str | None], list[Listener]] = listeners_in
    owners: Callable[[], SocketOwners] = socket_owners
    started_before: Callable[[int, float], bool | None] = started_before


# --- verdicts -------------------------------------------------------------------------------

def _traffic(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int, list[str]] | None:
    """Traffic before and after over the counters known on both sides."""
    names = [n for n in TRAFFIC_COUNTERS if isinstance(before.get(n), int) and isinstance(after.get(n), int)]
    if not names:
        return None
    return sum(before[n] for n in names), sum(after[n] for n in names), names


def _evidence_counters(finding: dict[str, Any]) -> dict[str, int]:
    return {e["counter"]: e["delta"] for e in finding.get("evidence", [])
            if isinstance(e, dict) and "counter" in e and isinstance(e.get("delta"), int)}


def check_finding(finding: dict[str, Any], after: Diagnosis,
                  before_counters: dict[str, Any] | None) -> FindingCheck:
    before_drops, before_rate = finding.get("drops"), finding.get("rate_per_s")
    fid = finding["id"]
    if not after.measured:
        return FindingCheck(fid, before_drops, before_rate, None, None, UNKNOWN,
                            "the re-measurement could not read the core counters")
    if fid in after.not_evaluated:
        return FindingCheck(fid, before_drops, before_rate, None, None, UNKNOWN,
                            f"not evaluated after the change: {after.not_evaluated[fid]}")
    found = after.finding(fid)
    after_drops = found.drops if found else 0
    after_rate = found.rate_per_s if found else 0.0
    condition = before_drops == 0 and (before_rate or 0) == 0  # e.g. cpu.time_squeeze: delays, drops nothing
    if condition:
        # A finding that counts no drops reports a condition above its rule's threshold:
        # judged by whether it is still reported.
        if found is not None and found.harmful:
            return FindingCheck(fid, before_drops, before_rate, after_drops, after_rate, NOT_IMPROVED,
                                f"still reported after the change: {found.summary}")
        detail = "reported before (a condition, no drops), no longer reported after the change"
    elif before_rate is None or before_rate <= 0:
        return FindingCheck(fid, before_drops, before_rate, after_drops, after_rate, UNKNOWN,
                            "no drop rate before the change to compare with")
    elif after_rate > before_rate * REQUIRED_REDUCTION:
        return FindingCheck(fid, before_drops, before_rate, after_drops, after_rate, NOT_IMPROVED,
                            f"{before_rate:.1f}/s before, {after_rate:.1f}/s after: not down by half")
    else:
        detail = f"{before_rate:.1f}/s before, {after_rate:.1f}/s after"
    traffic = _traffic({**_evidence_counters(finding), **(before_counters or {})}, after.counter_deltas)
    if traffic and traffic[0] >= MIN_TRAFFIC and traffic[1] < traffic[0] * LOW_LOAD:
        return FindingCheck(fid, before_drops, before_rate, after_drops, after_rate, INCONCLUSIVE,
                            f"the traffic fell too ({' + '.join(traffic[2])}: {traffic[0]} before, "
                            f"{traffic[1]} after): re-check under comparable load")
    verdict = FIXED if after_drops == 0 else IMPROVED
    return FindingCheck(fid, before_drops, before_rate, after_drops, after_rate, verdict, detail)


def _who(pid: int | None, process: str | None) -> str:
    if pid is None:
        return "its owner (unknown: run as root)"
    return f"pid {pid}" + (f" ({process})" if process else "")


def listen_pending(applied: Applied, probes: Probes) -> list[str]:
    """Listening sockets of the finding whose backlog in force is still below the new somaxconn."""
    new = applied.in_force if isinstance(applied.in_force, int) else applied.planned.proposed
    old = applied.old
    if not isinstance(new, int) or not isinstance(old, int) or new <= old:
        return []
    try:
        listeners = probes.listeners(applied.change.netns)
    except DropdocError as exc:
        return [f"cannot see the listening sockets to tell whether the new somaxconn is in force ({exc})"]
    subjects = {s["socket"]: s for s in applied.planned.subjects if isinstance(s.get("socket"), str)}
    owners: SocketOwners | None = None
    reasons = []
    for listener in listeners:
        subject = subjects.get(listener.endpoint)
        if subjects and subject is None:
            continue
        backlog = listener.backlog
        if backlog is None or backlog >= new:
            continue
        if not subjects and backlog != old:
            continue  # not a socket capped by the old somaxconn, not named by the finding
        pid, process = (subject or {}).get("pid"), (subject or {}).get("process")
        if pid is None:
            owners = owners if owners is not None else _safe_owners(probes)
            owner = owners.owner(listener.inode) if owners else None
            pid, process = owner if owner else (None, None)
        if backlog == old:
            reasons.append(f"pending restart of {_who(pid, process)}: {listener.endpoint} still listens with "
                           f"the backlog {backlog} it got before; somaxconn {new} applies when it calls "
                           "listen() again")
        elif backlog < old:
            reasons.append(f"{_who(pid, process)} asked listen() for {backlog} itself on {listener.endpoint}: "
                           f"raise its own backlog setting (to {new}) and restart it")
        # backlog > old: it listened again since; its own request caps it now, the sysctl is in force
    return reasons


def _safe_owners(probes: Probes) -> SocketOwners | None:
    try:
        return probes.owners()
    except DropdocError:
        return None


def sockets_pending(applied: Applied, probes: Probes) -> list[str]:
    """Processes of the finding that still run from before the change (new-socket settings)."""
    reasons = []
    seen = set()
    for subject in applied.planned.subjects:
        pid = subject.get("pid")
        if not isinstance(pid, int) or pid in seen:
            continue
        seen.add(pid)
        if probes.started_before(pid, applied.boottime):
            reasons.append(f"pending restart of {_who(pid, subject.get('process'))}: "
                           f"{applied.change.target} applies to sockets it creates after the change")
    return reasons


# Timeouts after which the kernel gives up and counts the drop: a longer one can only be
# judged over a window longer than it (within a shorter one, drops are postponed, not gone).
TIMEOUT_KEYS = ("net.ipv4.ipfrag_time", "net.ipv6.ip6frag_time")


def _window_shorter_than_timeout(applied: Applied, seconds: float | None) -> str:
    change = applied.change
    key = getattr(change, "key", None)
    new = applied.in_force if isinstance(applied.in_force, int) else applied.planned.proposed
    if key not in TIMEOUT_KEYS or not isinstance(new, int) or seconds is None or seconds > new:
        return ""
    return (f"{key} {new} s cannot be judged in a {seconds:g} s window: what still fails to reassemble "
            f"times out only after {new} s, past the re-measurement; re-check over a window longer than {new} s")


def verify(plan: Plan, applied: list[Applied], after: Diagnosis,
           before_counters: dict[str, Any] | None = None, probes: Probes | None = None) -> Verification:
    """Verdict per finding and per change; decides what to keep and what to roll back."""
    probes = probes or Probes()
    result = Verification([check_finding(f, after, before_counters) for f in plan.findings
                           if any(f["id"] in a.planned.findings for a in applied)])
    for item in applied:
        checks = [result.check(fid) for fid in item.planned.findings]
        verdicts = {c.verdict for c in checks if c}
        if item.change.effect == ON_LISTEN:
            item.pending = listen_pending(item, probes)
        elif item.change.effect == NEW_SOCKETS and not verdicts & {FIXED, IMPROVED}:
            item.pending = sockets_pending(item, probes)
        too_short = _window_shorter_than_timeout(item, plan.window_seconds)
        if item.pending:
            item.verdict, item.detail = PENDING, "; ".join(item.pending)
            result.keep.append(item)
        elif verdicts & {FIXED, IMPROVED} and too_short:
            item.verdict, item.detail = INCONCLUSIVE, too_short
            for check in checks:
                if check and check.verdict in (FIXED, IMPROVED):
                    check.verdict, check.detail = INCONCLUSIVE, f"{check.detail}; {too_short}"
            result.keep.append(item)
        elif verdicts & {FIXED, IMPROVED}:
            item.verdict = VERIFIED
            item.detail = "; ".join(f"{c.id}: {c.detail}" for c in checks if c and c.verdict in (FIXED, IMPROVED))
            result.keep.append(item)
        elif INCONCLUSIVE in verdicts:
            item.verdict = INCONCLUSIVE
            item.detail = "; ".join(f"{c.id}: {c.detail}" for c in checks if c and c.verdict == INCONCLUSIVE)
            result.keep.append(item)
        elif UNKNOWN in verdicts or not verdicts:
            item.verdict = UNKNOWN
            item.detail = "; ".join(f"{c.id}: {c.detail}" for c in checks if c) or "no finding to check"
            result.roll_back.append(item)
        else:
            item.verdict = NOT_EFFECTIVE
            item.detail = "; ".join(f"{c.id}: {c.detail}" for c in checks if c)
            result.roll_back.append(item)
    return result
