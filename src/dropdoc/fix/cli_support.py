"""`dropdoc fix` behind the thin click layer: refusals, measuring, plan, apply, output."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, ContextManager

import click

from ..render import json_out
from .fixer import EXIT_FAILED, EXIT_OK, FixReport, execute
from .journal import Journal
from .plan import load_diagnosis, make_plan
from .render import report_lines, rollback_lines


def _refuse(message: str) -> int:
    click.echo(f"dropdoc: {message}", err=True)
    return EXIT_FAILED


def _emit(fmt: str, data: dict[str, Any], lines: list[str]) -> None:
    if fmt == "json":
        click.echo(json_out.dumps(data))
    else:
        click.echo("\n".join(lines))


def run(*, netns: str | None, duration: float, source: str | None, do_apply: bool, yes: bool, persist: bool,
        persist_file: str, journal_path: str, rollback: bool, run_id: str | None, fmt: str,
        progress: Callable[[str, float], ContextManager]) -> int:
    # Wrong combinations exit 3 (not click's 2, which means "verification failed" here).
    if run_id and not rollback:
        return _refuse("--run selects the run to undo: use it with --rollback")
    if persist and not do_apply:
        return _refuse("--persist writes what --apply changed and verified: use both")
    if rollback:
        if do_apply or source or netns:
            return _refuse("--rollback restores a run from the journal; it takes no diagnosis")
        if os.geteuid() != 0:
            return _refuse("fix --rollback changes kernel settings: run as root")
        from .apply import rollback_run

        result = rollback_run(journal_path, run_id)
        _emit(fmt, result.to_dict(), rollback_lines(result))
        return EXIT_OK if result.ok else EXIT_FAILED
    if do_apply:
        if os.geteuid() != 0:
            return _refuse("fix --apply changes kernel settings: run as root (nothing changed)")
        if not yes and not sys.stdin.isatty():
            return _refuse("fix --apply asks for confirmation on a terminal; add --yes to apply from a "
                           "script (nothing changed)")

    before_counters = None
    if source:
        diagnosis = load_diagnosis(source)
        file_netns = (diagnosis.get("host") or {}).get("netns")
        if netns is not None and netns != file_netns:
            return _refuse(f"--netns {netns} differs from the diagnosis' namespace "
                           f"({file_netns or 'host'}): a plan applies where it was measured")
        label = source
    else:
        from ..diagnose import diagnose

        with progress(f"measuring {duration:g} s", duration) as tick:
            measured = diagnose(netns, duration, on_tick=tick)
        if not measured.measured:
            return _refuse("could not measure: the core counters were unreadable "
                           f"({'; '.join(f'{k}: {v}' for k, v in measured.coverage_errors.items())[:200]})")
        diagnosis = measured.to_dict()
        before_counters = measured.counter_deltas
        label = "a live measurement"
    plan = make_plan(diagnosis, source=label)
    if not do_apply:
        report = FixReport(plan)
        _emit(fmt, report.to_dict(), report_lines(report))
        return EXIT_OK
    if not plan.actionable:
        report = FixReport(plan, dry_run=False, messages=["nothing to do: no change to make"])
        _emit(fmt, report.to_dict(), report_lines(report))
        return EXIT_OK
    if not yes:
        click.echo("\n".join(report_lines(FixReport(plan))[:-1]))
        if not click.confirm(f"apply {len(plan.actionable)} change(s) now?", default=False):
            click.echo("nothing changed")
            return EXIT_OK
    seconds = float(plan.window_seconds or duration)

    def remeasure():
        from ..diagnose import diagnose

        with progress(f"re-measuring {seconds:g} s", seconds) as tick:
            return diagnose(plan.netns, seconds, on_tick=tick)
    phase = (lambda text: click.echo(f"fix: {text}", err=True)) if fmt == "text" else None
    report = execute(plan, Journal(journal_path), remeasure, before_counters=before_counters,
                     persist_path=persist_file if persist else None, on_phase=phase)
    _emit(fmt, report.to_dict(), report_lines(report))
    return report.exit_code
