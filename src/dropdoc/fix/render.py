"""Plain-text rendering of a fix plan, its outcome and a rollback (one idea per line)."""

from __future__ import annotations

from .apply import RollbackResult
from .fixer import FixReport
from .plan import ALREADY, PLANNED, Plan
from .sim_support import predicted_line
from .sysctl import format_value
from .verify import FIXED, IMPROVED, PENDING, VERIFIED

EFFECT_TEXT = {"listen": "applies when the application calls listen() again",
               "new-sockets": "applies to sockets created afterwards", "immediate": "applies at once"}


def plan_lines(plan: Plan) -> list[str]:
    where = f"network namespace {plan.netns}" if plan.netns else "the host network namespace"
    window = f", {plan.window_seconds:.1f} s window" if plan.window_seconds else ""
    lines = [f"dropdoc fix plan for {where} (from {plan.source}{window})"]
    if not plan.findings:
        lines.append("no harmful finding: nothing to fix")
    for finding in plan.findings:
        lines.append(f"  finding {finding['id']}: {finding.get('severity')}, {finding.get('drops')} drops, "
                     f"{float(finding.get('rate_per_s') or 0):.1f}/s")
    if plan.changes:
        lines.append("changes:")
    number = 0
    for planned in plan.changes:
        if planned.status == PLANNED:
            number += 1
            mark = f"[{number}]"
        else:
            mark = "[-]"
        current = "?" if planned.current is None else format_value(planned.current)
        head = f"  {mark} {planned.target}: {current} -> {format_value(planned.proposed)}"
        if planned.status != PLANNED:
            label = "NOTHING TO DO" if planned.status == ALREADY else planned.status.upper()
            head += f"   {label}: {planned.reason}"
        lines.append(head)
        lines.append(f"      for {', '.join(planned.findings)}; {planned.change.scope()}; "
                     f"{EFFECT_TEXT.get(planned.change.effect, '')}"
                     + (" (current value from the diagnosis)" if planned.current_from == "diagnosis" else ""))
        lines.append(f"      why: {planned.why}")
        if planned.simulation:
            lines.append(f"      simulator: {planned.simulation.get('text', '')}")
            predicted = predicted_line(planned.simulation)
            if predicted:
                lines.append(f"      {predicted}")
        if planned.note:
            lines.append(f"      note: {planned.note}")
        if planned.status == PLANNED:
            lines.append(f"      command: {planned.change.command()}")
    if plan.actions:
        lines.append("for the application/administrator (dropdoc does not change these):")
        for action in plan.actions:
            lines.append(f"  - {action['finding']} ({action['kind']}): {action['text']}")
            if action.get("simulation"):  # the simulator's view of the app setting (sim_support)
                lines.append(f"      simulator: {action['simulation'].get('text', '')}")
                predicted = predicted_line(action["simulation"])
                if predicted:
                    lines.append(f"      {predicted}")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return lines


def report_lines(report: FixReport) -> list[str]:
    lines = plan_lines(report.plan)
    if report.dry_run:
        if report.plan.actionable:
            lines.append(f"dry run: nothing changed. Apply the {len(report.plan.actionable)} change(s) with "
                         "--apply (as root); they are verified by re-measuring and rolled back if the drops "
                         "do not go down.")
        return lines + [f"note: {m}" for m in report.messages]
    for applied in report.applied:
        lines.append(f"applied {applied.change.target} in {applied.change.scope()}: "
                     f"{format_value(applied.old)} -> {format_value(applied.in_force)}"
                     + (f" (FAILED: {applied.error})" if applied.error else ""))
    if report.verification is not None:
        seconds = report.after.seconds if report.after else 0
        lines.append(f"verification (re-measured {seconds:.1f} s):")
        for check in report.verification.checks:
            before = "?" if check.before_rate is None else f"{check.before_rate:.1f}/s"
            after = "?" if check.after_rate is None else f"{check.after_rate:.1f}/s"
            lines.append(f"  {check.id}: {before} -> {after} ({check.before_drops} -> {check.after_drops} drops): "
                         f"{check.verdict.upper()}" + (f" - {check.detail}" if check.verdict not in
                                                      (FIXED, IMPROVED) else ""))
        for applied in report.applied:
            if applied.verdict == PENDING:
                lines.append(f"  {applied.change.target}: applied, {applied.detail}")
            elif applied.verdict == VERIFIED:
                lines.append(f"  {applied.change.target}: verified, kept")
            else:
                lines.append(f"  {applied.change.target}: {applied.verdict}: {applied.detail}")
    for restore in report.restores:
        lines.append(f"rolled back {restore.target}"
                     + (f" in network namespace {restore.netns}" if restore.netns else "")
                     + f": {restore.status} ({restore.detail})")
    if report.persisted is not None:
        for entry in report.persisted.written:
            lines.append(f"persisted {entry.key} = {entry.value} in {report.persisted.path}")
        for skipped in report.persisted.skipped:
            lines.append(f"not persisted: {skipped}")
    lines += report.messages
    if report.error:
        lines.append(f"error: {report.error}")
    if report.run_id and report.applied:
        where = report.journal_path or "memory"
        lines.append(f"journal: {where}, run {report.run_id} (undo: dropdoc fix --rollback --run {report.run_id}"
                     + (f" --journal {report.journal_path}" if report.journal_path else "") + ")")
    lines.append(VERDICT[report.exit_code])
    return lines


VERDICT = {0: "result: fixed and verified (or nothing to do)",
           1: "result: applied, pending (restart the application, or re-check under comparable load)",
           2: "result: verification failed: the change(s) that did not help were rolled back",
           3: "result: could not measure or apply; nothing is left half-changed"}


def rollback_lines(result: RollbackResult) -> list[str]:
    lines = []
    for restore in result.restores:
        where = f" in network namespace {restore.netns}" if restore.netns else ""
        lines.append(f"{restore.target}{where}: {restore.status} ({restore.detail})")
    lines += result.persist
    if result.message:
        lines.append(result.message)
    return lines
