"""Applying a plan and undoing it, one journaled change at a time.

Order per change: read the value in force -> journal the intent (fsync) -> change the
system -> read it back -> journal the outcome (fsync). If a change fails, everything this
run changed before it is restored (a half-applied plan is harder to reason about than
none). `rollback_run` undoes a run from the journal alone, so it also works after the
fixer was killed: a change without outcome is restored if it did happen.

DROPDOC_FIX_TEST_PAUSE=<point>:<n>[:<seconds>] makes the fixer stop for a while at
`after-write` (change n written, outcome not yet journaled) or `between` (change n fully
journaled, n+1 not started), announcing it on stderr: the functional tests kill it there.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from ..errors import DropdocError, UnknownNetns
from . import journal as journal_mod
from . import sysctl as sysctl_mod
from .changes import Change
from .journal import Journal
from .plan import Plan, PlannedChange

APPLIED, FAILED = "applied", "failed"
RESTORED, ALREADY, SKIPPED, GONE = "restored", "already", "skipped", "gone"

PAUSE_ENV = "DROPDOC_FIX_TEST_PAUSE"


@dataclass
class Applied:
    planned: PlannedChange
    seq: int
    old: Any
    status: str = APPLIED
    error: str = ""
    in_force: Any = None  # read back after writing (the kernel may clamp)
    boottime: float = 0.0  # CLOCK_BOOTTIME when it was applied (process start comparison)
    verdict: str = ""  # verified / pending / inconclusive / not effective / unknown
    detail: str = ""
    restored: str = ""  # after a rollback: restored / already / skipped / gone / failed
    pending: list[str] = field(default_factory=list)

    @property
    def change(self) -> Change:
        return self.planned.change

    def to_dict(self) -> dict[str, Any]:
        out = {"seq": self.seq, "kind": self.change.kind, **self.change.to_record(),
               "findings": self.planned.findings, "old": self.old, "new": self.planned.proposed,
               "in_force": self.in_force, "status": self.status, "verdict": self.verdict,
               "detail": self.detail}
        for name in ("error", "restored"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.pending:
            out["pending"] = self.pending
        return out


@dataclass
class Restore:
    target: str
    netns: str | None
    old: Any
    status: str
    detail: str = ""
    change: Change | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "netns": self.netns, "old": self.old, "status": self.status,
                "detail": self.detail}


class ApplyFailed(DropdocError):
    """A change could not be made; what was applied before it has been restored."""


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _test_pause(point: str, index: int) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return
    parts = spec.split(":")
    try:
        if parts[0] != point or int(parts[1]) != index:
            return
        seconds = min(float(parts[2]) if len(parts) > 2 else 30.0, 120.0)
    except (IndexError, ValueError):
        return
    print(f"dropdoc: test pause at {point} {index} (pid {os.getpid()})", file=sys.stderr, flush=True)
    time.sleep(seconds)


def apply_plan(plan: Plan, journal: Journal, on_change: Callable[[Applied], None] | None = None,
               done: list[Applied] | None = None) -> list[Applied]:
    """Apply every planned change; on a failure restore the earlier ones and raise ApplyFailed.
    `done` (appended to as changes are made) lets a caller interrupted midway restore them."""
    done = [] if done is None else done
    for index, planned in enumerate(plan.actionable, 1):
        change = planned.change
        try:
            old = change.read_current()
            change.validate(old)  # again: the system may have moved since the plan
        except DropdocError as exc:
            _undo_after_failure(done, journal, f"{change.target}: {exc}")
        journal.write("intent", seq=index, change=change.to_record(), old=old, new=planned.proposed,
                      netns=change.netns, finding=planned.findings, reason=planned.why)
        try:
            change.apply()
            _test_pause("after-write", index)
            in_force = change.read_current()
        except DropdocError as exc:
            journal.write("outcome", seq=index, status=FAILED, error=str(exc))
            failed = Applied(planned, index, old, FAILED, str(exc))
            done.append(failed)
            _undo_after_failure(done, journal, f"{change.target}: {exc}")
        applied = Applied(planned, index, old, APPLIED, in_force=in_force, boottime=boottime())
        journal.write("outcome", seq=index, status=APPLIED, in_force=in_force)
        done.append(applied)
        if on_change:
            on_change(applied)
        _test_pause("between", index)
    return done


def _undo_after_failure(done: list[Applied], journal: Journal, message: str) -> NoReturn:
    restores = restore_applied(done, journal, "a later change failed")
    undone = ", ".join(f"{r.target} -> {sysctl_mod.format_value(r.old)} ({r.status})" for r in restores)
    raise ApplyFailed(f"could not apply {message}" + (f"; restored: {undone}" if undone else ""))


def restore_applied(done: list[Applied], journal: Journal, cause: str) -> list[Restore]:
    """Restore the old values of `done` (newest first); marks each Applied."""
    results = []
    for applied in sorted(done, key=lambda a: -a.seq):
        result = restore_one(applied.change, applied.seq, applied.old, applied.planned.proposed, journal, cause)
        applied.restored = result.status
        results.append(result)
    return results


def restore_one(change: Change, seq: int, old: Any, new: Any, journal: Journal, cause: str,
                force: bool = False) -> Restore:
    """Put `old` back if the setting holds `new` (what dropdoc wrote) or force is set."""
    target, netns = change.target, change.netns
    try:
        current = change.read_current()
    except UnknownNetns:
        journal.write("restored", seq=seq, status=GONE, detail=f"network namespace {netns} no longer exists")
        return Restore(target, netns, old, GONE, f"network namespace {netns} no longer exists: "
                       "its values went with it", change)
    except DropdocError as exc:
        journal.write("restored", seq=seq, status=FAILED, detail=str(exc))
        return Restore(target, netns, old, FAILED, f"cannot read it: {exc}", change)
    if Change.same(current, old):
        journal.write("restored", seq=seq, status=ALREADY)
        return Restore(target, netns, old, ALREADY, "already holds the previous value", change)
    if not force and new is not None and not Change.same(current, new):
        detail = (f"now {sysctl_mod.format_value(current)}, neither dropdoc's {sysctl_mod.format_value(new)} "
                  "nor the previous value: changed by someone else since, left alone")
        journal.write("restored", seq=seq, status=SKIPPED, detail=detail)
        return Restore(target, netns, old, SKIPPED, detail, change)
    journal.write("restore", seq=seq, value=old, cause=cause)
    try:
        change.restore(sysctl_mod.normalise(old))
    except DropdocError as exc:
        journal.write("restored", seq=seq, status=FAILED, detail=str(exc))
        return Restore(target, netns, old, FAILED, str(exc), change)
    journal.write("restored", seq=seq, status=RESTORED)
    return Restore(target, netns, old, RESTORED, f"{sysctl_mod.format_value(current)} -> "
                   f"{sysctl_mod.format_value(old)}", change)


@dataclass
class RollbackResult:
    run: str | None
    restores: list[Restore] = field(default_factory=list)
    persist: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return all(r.status in (RESTORED, ALREADY, GONE) for r in self.restores)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "restores": [r.to_dict() for r in self.restores],
                "persist": self.persist, "message": self.message, "ok": self.ok}


def rollback_run(path: str, run_id: str | None = None, force: bool = False) -> RollbackResult:
    """Restore the previous values of run `run_id` (default: the last run that changed something)."""
    records = journal_mod.read_records(path)
    runs = journal_mod.runs(records)
    if run_id is not None:
        run = runs.get(run_id)
        if run is None:
            known = ", ".join(list(runs)[-5:]) or "none"
            raise DropdocError(f"no run {run_id} in {path} (latest: {known})")
    else:
        run = journal_mod.last_run_with_changes(records)
        if run is None:
            return RollbackResult(None, message=f"nothing to roll back: {path} records no change")
    result = RollbackResult(run.run)
    todo = run.pending_restore
    persisted = run.persisted if not run.persist_undone else []
    if not todo and not persisted:
        result.message = f"run {run.run}: every change is already rolled back"
        return result
    journal = Journal(path, run_id=run.run)
    with journal:
        journal.write("rollback-start", pid=os.getpid())
        for item in journal_mod.iter_reversed(todo):
            try:
                change = Change.from_record(item.change, item.new)
            except DropdocError as exc:
                result.restores.append(Restore(str(item.change.get("target")), item.change.get("netns"),
                                               item.old, FAILED, str(exc)))
                continue
            restore = restore_one(change, item.seq, item.old, item.new, journal, "rollback requested", force)
            result.restores.append(restore)
        from .persist import undo_persist  # late: persist imports this module's types

        for record in reversed(persisted):
            result.persist += undo_persist(record, journal)
        journal.write("rollback-end", ok=result.ok)
    restored = sum(r.status == RESTORED for r in result.restores)
    result.message = f"run {run.run}: {restored} setting(s) restored"
    return result

