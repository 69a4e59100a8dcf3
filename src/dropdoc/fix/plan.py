"""From a diagnosis to a plan: which settings to change, from what to what, and why.

Input is the diagnosis as the JSON contract carries it (`Diagnosis.to_dict()` live, or
the file written by `dropdoc diagnose --format json`), so both paths plan the same way.
Only harmful findings (warning/critical, not benign) are planned. Each fix record becomes:

- a change dropdoc can make (kind sysctl, txqueuelen, qdisc_limit, ring - or a `command`
  record with setting "rx ring"/"tx ring", device and proposed) with the value in
  force read live from the target namespace, validated against kernel limits and against
  the other values it relates to, and refused with the reason when unsafe;
- or an action for the application/administrator (kind app, config, command, ...).

A global sysctl is only planned when the host namespace is the target, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DropdocError, NeedsPrivilege, SourceUnavailable
from ..model import SCHEMA
from . import sim_support
from . import sysctl as sysctl_mod
from . import why as why_mod
from .changes import (Change, ChangeFailed, QdiscLimitChange, RingChange, SysctlChange,
                      TxQueueLenChange)
from .sysctl import UnsafeChange

PLANNED, REFUSED, ALREADY, UNREADABLE = "planned", "refused", "already", "unreadable"
APPLIABLE_KINDS = ("sysctl", "txqueuelen", "qdisc_limit", "ring")


class NotADiagnosis(DropdocError):
    """The input is not a dropdoc diagnosis."""


@dataclass
class PlannedChange:
    change: Change
    findings: list[str]
    proposed: Any
    current: Any = None
    current_from: str = "live"  # live | diagnosis
    why: str = ""
    note: str = ""
    status: str = PLANNED
    reason: str = ""  # why refused / already / unreadable
    subjects: list[dict[str, Any]] = field(default_factory=list)
    direction: int = 0  # +1 the fix raises the value the diagnosis saw, -1 lowers it, 0 unknown
    # The simulator's justification and predicted drops/s before -> after (fix/sim_support.py).
    simulation: dict[str, Any] | None = None

    @property
    def target(self) -> str:
        return self.change.target

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.change.kind, **self.change.to_record(), "findings": self.findings,
                "current": self.current, "current_from": self.current_from, "proposed": self.proposed,
                "scope": self.change.scope(), "effect": self.change.effect, "command": self.change.command(),
                "why": self.why, "note": self.note, "status": self.status, "reason": self.reason,
                "simulation": self.simulation}


@dataclass
class Plan:
    netns: str | None
    source: str
    window_seconds: float | None
    findings: list[dict[str, Any]]  # the planned findings, as in the diagnosis
    changes: list[PlannedChange] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # {"finding", "kind", "text"}
    notes: list[str] = field(default_factory=list)

    @property
    def actionable(self) -> list[PlannedChange]:
        return [c for c in self.changes if c.status == PLANNED]

    def finding(self, finding_id: str) -> dict[str, Any] | None:
        return next((f for f in self.findings if f.get("id") == finding_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"netns": self.netns, "source": self.source, "window_seconds": self.window_seconds,
                "findings": [{k: f.get(k) for k in ("id", "severity", "drops", "rate_per_s", "explanation")}
                             for f in self.findings],
                "changes": [c.to_dict() for c in self.changes], "actions": self.actions, "notes": self.notes}


# --- input ----------------------------------------------------------------------------------

def load_diagnosis(path: str) -> dict[str, Any]:
    """The JSON of `dropdoc diagnose --format json` (or of `dropdoc lab run --format json`:
    its measured diagnosis, before any fix); NotADiagnosis otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise NotADiagnosis(f"{path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotADiagnosis(f"{path}: not JSON ({getattr(exc, 'msg', exc)})") from None
    if isinstance(data, dict) and "scenario" in data and isinstance(data.get("diagnosis"), dict):
        data = data["diagnosis"]  # a lab run: plan from what it measured before fixing
    check_diagnosis(data, path)
    return data


def check_diagnosis(data: Any, what: str = "diagnosis") -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise NotADiagnosis(f"{what}: not a dropdoc diagnosis (schema {found!r}, expected {SCHEMA})")
    findings = data.get("findings")
    if not isinstance(findings, list) or not all(isinstance(f, dict) and isinstance(f.get("id"), str)
                                                  for f in findings):
        raise NotADiagnosis(f"{what}: 'findings' must be a list of findings with an id")
    host, window = data.get("host", {}), data.get("window", {})
    if not isinstance(host, dict) or not isinstance(host.get("netns"), (str, type(None))):
        raise NotADiagnosis(f"{what}: 'host.netns' must be a namespace name or null")
    if not isinstance(window, dict) or not _number(window.get("seconds"), optional=True):
        raise NotADiagnosis(f"{what}: 'window.seconds' must be a number")
    for finding in findings:
        name = finding["id"]
        for key in ("fixes", "subjects", "evidence"):
            items = finding.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise NotADiagnosis(f"{what}: {key} of {name} must be a list of objects")
        if not _number(finding.get("drops"), optional=True, integer=True) or \
                not _number(finding.get("rate_per_s"), optional=True):
            raise NotADiagnosis(f"{what}: drops/rate_per_s of {name} must be numbers")


def _number(value: Any, optional: bool = False, integer: bool = False) -> bool:
    if value is None:
        return optional
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def harmful(finding: dict[str, Any]) -> bool:
    return not finding.get("benign") and finding.get("severity") in ("critical", "warning")


# --- building -------------------------------------------------------------------------------

RING_SETTINGS = {"rx ring": "rx", "tx ring": "tx"}


def appliable(fix: dict[str, Any]) -> bool:
    """A fix record dropdoc can carry out itself: the kinds above, and the link enrichers'
    ring commands, which come with structured fields (device, setting, proposed)."""
    if fix.get("kind") in APPLIABLE_KINDS:
        return True
    return (fix.get("kind") == "command" and fix.get("setting") in RING_SETTINGS
            and isinstance(fix.get("device"), str) and isinstance(fix.get("proposed"), int))


def _change_for(fix: dict[str, Any], netns: str | None) -> Change | str:
    """The Change a fix record asks for, or the reason it cannot be one."""
    kind = fix.get("kind")
    if kind == "command" and fix.get("setting") in RING_SETTINGS:
        return RingChange(netns, fix["proposed"], interface=fix["device"], ring=RING_SETTINGS[fix["setting"]])
    try:
        if kind == "sysctl":
            return SysctlChange(netns, sysctl_mod.normalise(fix["proposed"]), key=str(fix["key"]))
        if kind == "txqueuelen":
            return TxQueueLenChange(netns, fix["proposed"], interface=str(fix["interface"]))
        if kind == "qdisc_limit":
            return QdiscLimitChange(netns, fix["proposed"], interface=str(fix["interface"]),
                                    handle=str(fix["handle"]), qdisc=str(fix["qdisc"]))
        if kind == "ring":
            return RingChange(netns, fix["proposed"], interface=str(fix["interface"]),
                              ring=str(fix.get("ring", "rx")))
    except KeyError as exc:
        return f"{kind} fix without {exc.args[0]!r}"
    return f"unknown kind {kind!r}"


def _action_text(fix: dict[str, Any]) -> str:
    if "text" in fix:
        return str(fix["text"])
    return json.dumps(fix, sort_keys=True)


def _derived_rings(finding: dict[str, Any], netns: str | None, seconds: float | None,
                   live: bool) -> list[tuple[RingChange, str, int, int]]:
    """nic.rx_missed names interfaces; when no fix record sizes their ring, derive it from
    the ring in force and the hardware maximum (ethtool -g)."""
    derived = []
    if not live:
        return derived
    for subject in finding.get("subjects", []):
        interface = subject.get("interface")
        if not isinstance(interface, str):
            continue
        probe = RingChange(netns, 0, interface=interface, ring="rx")
        try:
            rings = probe.rings()
        except DropdocError:
            continue
        current, maximum = rings["current"].get("rx"), rings["max"].get("rx")
        if not current or not maximum:
            continue
        proposed = min(maximum, why_mod._pow2(2 * current))
        probe.value = proposed
        derived.append((probe, why_mod.explain_ring(finding, interface, current, proposed, maximum, seconds),
                        current, maximum))
    return derived


def host_only(key: str, netns: str | None, live: bool = True) -> bool:
    """A sysctl that namespace `netns` cannot set for itself: global, or (live) absent or
    read-only there while the host namespace can write it."""
    if netns is None:
        return False
    if sysctl_mod.is_global(key):
        return True
    if not live:
        return False
    try:
        return sysctl_mod.presence(key, netns) != "writable" and sysctl_mod.presence(key, None) == "writable"
    except DropdocError:
        return False


HOST_NOTE = "global: written in the host namespace by {by}"


def make_plan(diagnosis: dict[str, Any], source: str = "diagnosis", live: bool = True,
              netns: str | None = None, use_diagnosis_netns: bool = True,
              host_sysctl: Callable[[str, Any], Any] | None = None, host_sysctl_by: str = "the caller") -> Plan:
    """Plan the fixes of `diagnosis` for its namespace (host.netns).

    live=False plans without touching the system (current values as the diagnosis saw
    them, no namespace checks): for tests and for reading a diagnosis elsewhere.

    host_sysctl: for a named namespace, sysctls only the host namespace can set (global
    keys) are planned for the host and written through this callable `(key, value)`
    instead of being refused - the lab passes LabNet.set_host_sysctl, which restores them
    on teardown. Without it (`dropdoc fix`), they stay refused for a named namespace."""
    check_diagnosis(diagnosis)
    if use_diagnosis_netns:
        netns = (diagnosis.get("host") or {}).get("netns")
    seconds = (diagnosis.get("window") or {}).get("seconds")
    findings = [f for f in diagnosis["findings"] if harmful(f)]
    plan = Plan(netns, source, seconds, findings)
    skipped = [f["id"] for f in diagnosis["findings"] if not harmful(f)]
    if skipped:
        plan.notes.append("not planned (benign or informational): " + ", ".join(skipped))
    by_identity: dict[tuple, PlannedChange] = {}

    def add(change: Change, finding: dict[str, Any], proposed: Any, why: str, note: str,
            current_seen: Any) -> None:
        key = change.identity()
        existing = by_identity.get(key)
        if existing is not None:
            if finding["id"] not in existing.findings:
                existing.findings.append(finding["id"])
                existing.subjects += finding.get("subjects", [])
            if _larger(proposed, existing.proposed):
                existing.proposed = existing.change.value = proposed
                existing.why = why
            return
        planned = PlannedChange(change, [finding["id"]], proposed, current=current_seen,
                                current_from="diagnosis", why=why, note=note,
                                subjects=list(finding.get("subjects", [])),
                                direction=_direction(current_seen, proposed))
        by_identity[key] = planned
        plan.changes.append(planned)

    for finding in findings:
        kinds_seen = set()
        for fix in finding.get("fixes", []):
            if not isinstance(fix, dict):
                continue
            kind = fix.get("kind")
            if not appliable(fix):
                plan.actions.append({"finding": finding["id"], "kind": kind or "note", "text": _action_text(fix)})
                continue
            change = _change_for(fix, netns)
            kinds_seen.add(change.kind if isinstance(change, Change) else kind)
            if isinstance(change, str):
                plan.actions.append({"finding": finding["id"], "kind": "note",
                                     "text": f"cannot act on a fix record: {change}"})
                continue
            note = str(fix.get("note") or "")
            if host_sysctl is not None and isinstance(change, SysctlChange) and host_only(change.key, netns, live):
                change = SysctlChange(None, change.value, key=change.key, writer=host_sysctl)
                note = "; ".join(filter(None, (HOST_NOTE.format(by=host_sysctl_by), note)))
            proposed = change.value
            why = why_mod.explain(finding, change.target, fix.get("current"), proposed, seconds,
                                  given=fix.get("why"), kind=change.kind, fields=change.fields())
            add(change, finding, proposed, why, note, fix.get("current"))
        if finding["id"] == "nic.rx_missed" and "ring" not in kinds_seen:
            for probe, why, current, _maximum in _derived_rings(finding, netns, seconds, live):
                add(probe, finding, probe.value, why, "the NIC may briefly reset its queues", current)

    sim_support.attach(plan)  # advisory: a missing or failing simulator leaves one note
    _settle(plan, live)
    return plan


def _larger(a: Any, b: Any) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a > b
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return a > b
    return False


def _direction(seen: Any, proposed: Any) -> int:
    """+1 when the fix raises the value the diagnosis saw, -1 when it lowers it, 0 unknown."""
    if isinstance(seen, list):
        seen = tuple(seen)
    pairs = list(zip(seen, proposed)) if isinstance(seen, tuple) and isinstance(proposed, tuple) and \
        len(seen) == len(proposed) else [(seen, proposed)]
    if not all(isinstance(a, int) and isinstance(b, int) for a, b in pairs):
        return 0
    if all(b >= a for a, b in pairs) and any(b > a for a, b in pairs):
        return 1
    if all(b <= a for a, b in pairs) and any(b < a for a, b in pairs):
        return -1
    return 0


def _satisfied(current: Any, proposed: Any, direction: int) -> bool:
    """True when the value in force already is what the fix asks for (or beyond, in its direction)."""
    if Change.same(current, proposed):
        return True
    if direction == 0:
        return False
    pairs = list(zip(current, proposed)) if isinstance(current, tuple) and isinstance(proposed, tuple) and \
        len(current) == len(proposed) else [(current, proposed)]
    if not all(isinstance(a, int) and isinstance(b, int) for a, b in pairs):
        return False
    return all((a >= b) if direction > 0 else (a <= b) for a, b in pairs)


def _settle(plan: Plan, live: bool) -> None:
    """Validate what needs no system, read the values in force, validate what needs the
    system, check relations, order."""
    for planned in plan.changes:
        try:
            _settle_one(plan, planned, live)
        except UnsafeChange as exc:
            planned.status, planned.reason = REFUSED, str(exc)
            change = planned.change
            if isinstance(change, SysctlChange) and change.netns and sysctl_mod.is_global(change.key):
                planned.reason += ("; to change it host-wide, run `dropdoc fix` on the host namespace "
                                   "(without --netns)")
    _relations(plan, live)
    _order(plan)


def _settle_one(plan: Plan, planned: PlannedChange, live: bool) -> None:
    change = planned.change
    if isinstance(change, SysctlChange):
        sysctl_mod.validate(change.key, change.value, change.netns)
    elif not change.validate_reads_system:
        change.validate(planned.current)
    if not live:
        _check_already(planned)
        return
    try:
        planned.current = change.read_current()
        planned.current_from = "live"
    except NeedsPrivilege as exc:
        plan.notes.append(f"{change.target}: value from the diagnosis ({exc})")
        _check_already(planned)
        return
    except (SourceUnavailable, ChangeFailed) as exc:
        planned.status, planned.reason = UNREADABLE, f"cannot read the value in force: {exc}"
        return
    if change.validate_reads_system:
        try:
            change.validate(planned.current)
        except NeedsPrivilege:
            pass
        except (SourceUnavailable, ChangeFailed) as exc:
            planned.status, planned.reason = REFUSED, f"cannot validate: {exc}"
            return
    _check_already(planned)


def _check_already(planned: PlannedChange) -> None:
    if planned.current is not None and _satisfied(planned.current, planned.proposed, planned.direction):
        planned.status = ALREADY
        planned.reason = (f"already {sysctl_mod.format_value(planned.current)} "
                          f"(proposed {sysctl_mod.format_value(planned.proposed)})")


def _relations(plan: Plan, live: bool) -> None:
    sysctls = [c for c in plan.changes if isinstance(c.change, SysctlChange) and c.status == PLANNED]
    if not sysctls:
        return
    proposed = {c.change.key: c.proposed for c in sysctls}
    netns = plan.netns

    def in_force(key: str) -> Any:
        if not live:
            return None
        try:
            return sysctl_mod.read_sysctl(key, netns)
        except DropdocError:
            return None
    problems = sysctl_mod.check_relations(proposed, in_force)
    for planned in sysctls:
        if planned.change.key in problems:
            planned.status, planned.reason = REFUSED, problems[planned.change.key]


def _order(plan: Plan) -> None:
    sysctl_keys = [c.change.key for c in plan.changes if isinstance(c.change, SysctlChange)]
    rank = {key: index for index, key in enumerate(sysctl_mod.order_changes(sysctl_keys))}
    positions = {id(planned): (0, rank[planned.change.key]) if isinstance(planned.change, SysctlChange)
                 else (1, index) for index, planned in enumerate(plan.changes)}
    plan.changes.sort(key=lambda planned: positions[id(planned)])

