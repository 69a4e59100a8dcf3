"""plan -> apply -> verify by re-measuring -> keep/persist or roll back; one journaled run.

`execute()` is what `dropdoc fix --apply` and `dropdoc lab run --fix` both call; they
differ only in how the after-window is measured (the lab restarts its servers first and
replays the same load).

Exit codes: 0 nothing to do / fixed and verified, 1 applied but pending (restart needed,
or not verifiable because the traffic fell), 2 verification failed and rolled back,
3 could not measure/apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DropdocError
from ..model import Diagnosis
from . import sysctl as sysctl_mod
from .apply import Applied, ApplyFailed, Restore, apply_plan, restore_applied
from .journal import Journal
from .persist import PersistResult, persist
from .plan import Plan
from .verify import INCONCLUSIVE, NOT_EFFECTIVE, PENDING, UNKNOWN, Probes, Verification, verify

EXIT_OK, EXIT_PENDING, EXIT_ROLLED_BACK, EXIT_FAILED = 0, 1, 2, 3
SCHEMA = "dropdoc.fix/1"


@dataclass
class FixReport:
    plan: Plan
    run_id: str | None = None
    journal_path: str | None = None
    dry_run: bool = True
    applied: list[Applied] = field(default_factory=list)
    verification: Verification | None = None
    restores: list[Restore] = field(default_factory=list)
    persisted: PersistResult | None = None
    after: Diagnosis | None = None
    error: str = ""
    messages: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "dry_run": self.dry_run, "run": self.run_id,
                               "journal": self.journal_path, "plan": self.plan.to_dict(),
                               "applied": [a.to_dict() for a in self.applied],
                               "rolled_back": [r.to_dict() for r in self.restores],
                               "messages": self.messages, "exit_code": self.exit_code}
        if self.verification is not None:
            out["verification"] = [c.to_dict() for c in self.verification.checks]
        if self.persisted is not None:
            out["persisted"] = self.persisted.to_dict()
        if self.error:
            out["error"] = self.error
        return out


def finding_labels(plan: Plan) -> dict[str, str]:
    return {f["id"]: f"{f['id']} ({f.get('drops')} drops, {float(f.get('rate_per_s') or 0):.1f}/s)"
            for f in plan.findings}


def exit_code_for(applied: list[Applied]) -> int:
    verdicts = {a.verdict for a in applied}
    if UNKNOWN in verdicts:
        return EXIT_FAILED
    if NOT_EFFECTIVE in verdicts:
        return EXIT_ROLLED_BACK
    if verdicts & {PENDING, INCONCLUSIVE}:
        return EXIT_PENDING
    return EXIT_OK


def execute(plan: Plan, journal: Journal, remeasure: Callable[[], Diagnosis],
            before_counters: dict[str, Any] | None = None, persist_path: str | None = None,
            probes: Probes | None = None, on_phase: Callable[[str], None] | None = None) -> FixReport:
    phase = on_phase or (lambda text: None)
    report = FixReport(plan, journal.run_id, journal.path, dry_run=False)
    if not plan.actionable:
        report.messages.append("nothing to do: no change to make")
        return report
    with journal:
        journal.write("run-start", netns=plan.netns, source=plan.source,
                      findings=[f["id"] for f in plan.findings],
                      changes=[c.change.to_record() | {"new": c.proposed} for c in plan.actionable])
        try:
            apply_plan(plan, journal, on_change=lambda a: phase(
                f"applied {a.change.target}: {sysctl_mod.format_value(a.old)} -> "
                f"{sysctl_mod.format_value(a.in_force)}"), done=report.applied)
        except ApplyFailed as exc:
            report.error, report.exit_code = str(exc), EXIT_FAILED
            journal.write("run-end", status="apply-failed", error=str(exc))
            return report
        except BaseException:  # Ctrl-C / SIGTERM between two changes: leave nothing half-done
            report.restores = restore_applied([a for a in report.applied if a.status == "applied"], journal,
                                              "interrupted while applying")
            journal.write("run-end", status="interrupted")
            raise
        try:
            phase(f"re-measuring {plan.window_seconds or 0:g} s")
            report.after = remeasure()
        except DropdocError as exc:
            report.restores = restore_applied(report.applied, journal, "could not re-measure")
            report.error, report.exit_code = f"could not re-measure, rolled back: {exc}", EXIT_FAILED
            journal.write("run-end", status="not-measured", error=str(exc))
            return report
        except BaseException:
            report.restores = restore_applied(report.applied, journal, "interrupted before verification")
            journal.write("run-end", status="interrupted")
            raise
        report.verification = verify(plan, report.applied, report.after, before_counters, probes)
        if report.verification.roll_back:
            report.restores = restore_applied(report.verification.roll_back, journal, "verification failed")
        report.exit_code = exit_code_for(report.applied)
        if persist_path is not None:
            if report.verification.roll_back:
                report.messages.append("not persisted: part of the plan failed verification and was rolled back")
            else:
                try:
                    report.persisted = persist(report.verification.keep, persist_path, journal,
                                               finding_labels(plan))
                except DropdocError as exc:
                    report.messages.append(f"not persisted: {exc}")
                    report.exit_code = max(report.exit_code, EXIT_FAILED)
        journal.write("run-end", status={EXIT_OK: "verified", EXIT_PENDING: "pending",
                                         EXIT_ROLLED_BACK: "rolled-back", EXIT_FAILED: "not-verified"}
                      [report.exit_code])
    return report
