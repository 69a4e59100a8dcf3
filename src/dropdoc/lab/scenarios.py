"""Running a lab scenario: build, load, diagnose; with fix=True plan and apply the
proposed fixes in the measured namespace (dropdoc.fix: validated, journaled in memory),
restart the servers (a new somaxconn only applies when the application calls listen()
again, a new rmem_default to sockets created afterwards), measure the same load again and
let the fixer verify - keeping what lowered the drops and rolling back what did not.

Global (host-wide) sysctls - netdev_max_backlog, netdev_budget, nf_conntrack_max,
rmem_default, ... - cannot be set from the lab's namespaces. Inside the lab only, the fixer
writes them in the host namespace through lab.set_host_sysctl, which puts the previous
value back when the lab is torn down (also on errors and Ctrl-C); `dropdoc fix` for a
named namespace keeps refusing them."""

from __future__ import annotations

import json
import select
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..diagnose import diagnose
from ..errors import DropdocError
from ..fix.sysctl import write_sysctl
from ..model import Diagnosis
from .model import CLIENT, PORT, SERVER, Program, Scenario, all_scenarios
from .topology import LabError, LabNet

__all__ = ["PORT", "LabResult", "Measurement", "Running", "all_scenarios", "get", "run", "running"]

HOST_WRITER = "the lab (lab.set_host_sysctl), which puts the previous value back on teardown"


@dataclass
class Measurement:
    diagnosis: Diagnosis
    load: dict[str, Any]


@dataclass
class LabResult:
    scenario: Scenario
    server_ns: str
    client_ns: str
    server_pids: list[int]
    before: Measurement
    applied: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    after: Measurement | None = None
    server_pids_after: list[int] = field(default_factory=list)
    fix_report: Any = None  # dropdoc.fix.fixer.FixReport: plan, verdicts, rollbacks
    # Host-wide sysctls the run changed (setup or fix) -> the value before the run, and
    # those the teardown could not put back (empty when everything was restored).
    host_sysctls: dict[str, Any] = field(default_factory=dict)
    host_sysctls_not_restored: dict[str, Any] = field(default_factory=dict)

    @property
    def server_pid(self) -> int | None:
        return self.server_pids[0] if self.server_pids else None

    @property
    def server_pid_after(self) -> int | None:
        return self.server_pids_after[0] if self.server_pids_after else None

    def to_dict(self) -> dict[str, Any]:
        out = {"scenario": self.scenario.name, "expected_finding": self.scenario.expected_finding,
               "server_netns": self.server_ns, "client_netns": self.client_ns,
               "server_pids": self.server_pids, "load": self.before.load,
               "diagnosis": self.before.diagnosis.to_dict()}
        if self.after is not None:
            out["fix"] = {"applied": self.applied, "refused": self.refused,
                          "server_pids_after_restart": self.server_pids_after,
                          "load": self.after.load, "diagnosis": self.after.diagnosis.to_dict()}
            if self.fix_report is not None:
                report = self.fix_report.to_dict()
                out["fix"].update({k: report[k] for k in ("plan", "verification", "rolled_back", "exit_code")
                                   if k in report})
        if self.host_sysctls:
            out["host_sysctls"] = {"changed": self.host_sysctls, "not_restored": self.host_sysctls_not_restored}
        return out


def get(name: str) -> Scenario:
    known = all_scenarios()
    if name not in known:
        raise DropdocError(f"unknown lab scenario {name!r} (known: {', '.join(known)})")
    return known[name]


def _namespace(lab: LabNet, side: str) -> str:
    return lab.namespace(side)  # "server", "client", or "router" in routed labs


def _start(lab: LabNet, program: Program) -> subprocess.Popen:
    process = lab.spawn(_namespace(lab, program.side), program.module, *program.args)
    if program.wait_ready:
        ready, _, _ = select.select([process.stdout], [], [], 15)
        line = process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            error = process.stderr.read() if process.poll() is not None else "no answer in 15 s"
            raise LabError(f"lab program {program.module} did not start: {error.strip()[-300:]}")
    return process


def _collect_load(lab: LabNet, loads: list[subprocess.Popen]) -> dict[str, Any]:
    """The load programs' JSON summaries (one program: its summary; several: a list)."""
    parts: list[dict[str, Any]] = []
    for process in loads:
        try:
            out, err = process.communicate(timeout=70)
            part = json.loads(out) if out.strip() else {"error": err.strip()[-300:]}
        except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            part = {"error": str(exc)}
        finally:
            lab.stop(process)
        parts.append(part)
    return parts[0] if len(parts) == 1 else {"programs": parts}


def _measure(lab: LabNet, scenario: Scenario, on_tick: Callable[[float], None] | None) -> Measurement:
    loads: list[subprocess.Popen] = []

    def start_loads() -> None:
        loads.extend(_start(lab, program) for program in scenario.loads)

    diagnosis = diagnose(_namespace(lab, scenario.measure_side), scenario.window,
                         on_start=start_loads, on_tick=on_tick)
    return Measurement(diagnosis, _collect_load(lab, loads))


def _apply_fixes(lab: LabNet, scenario: Scenario, result: LabResult, servers: list[subprocess.Popen],
                 phase: Callable[[str], None], on_tick: Callable[[float], None] | None) -> None:
    """Plan, apply, restart the servers, re-measure the same load, verify (dropdoc.fix)."""
    from ..fix.fixer import execute
    from ..fix.journal import Journal
    from ..fix.plan import REFUSED, UNREADABLE, make_plan

    measured_ns = _namespace(lab, scenario.measure_side)
    plan = make_plan(result.before.diagnosis.to_dict(), source=f"lab scenario {scenario.name}",
                     netns=measured_ns, use_diagnosis_netns=False,
                     host_sysctl=lab.set_host_sysctl, host_sysctl_by=HOST_WRITER)
    result.refused = [f"{c.target}: {c.reason}" for c in plan.changes if c.status in (REFUSED, UNREADABLE)]
    for planned in plan.actionable:
        if planned.change.netns is None:
            phase(f"{planned.target} is global: setting it host-wide through lab.set_host_sysctl "
                  f"({planned.current} -> {planned.proposed}), restored when the lab is torn down")

    def restart_and_measure() -> Diagnosis:
        for process in servers:
            lab.stop(process)  # new limits apply when the server calls listen()/socket() again
        time.sleep(0.2)
        servers[:] = [_start(lab, program) for program in scenario.servers]
        result.server_pids_after = [p.pid for p in servers]
        phase(f"servers restarted as {result.server_pids_after}; measuring the same load again")
        result.after = _measure(lab, scenario, on_tick)
        return result.after.diagnosis

    report = execute(plan, Journal(None), restart_and_measure,
                     before_counters=result.before.diagnosis.counter_deltas, on_phase=phase)
    result.fix_report = report
    result.applied = [{"finding": a.planned.findings[0], "findings": a.planned.findings, "kind": a.change.kind,
                       "key": a.change.target, "old": a.old, "new": a.planned.proposed, "netns": a.change.netns,
                       "scope": "host (global, restored on teardown)" if a.change.netns is None else "netns",
                       "verdict": a.verdict, "detail": a.detail, **({"restored": a.restored} if a.restored else {})}
                      for a in report.applied]
    if report.error:
        result.refused.append(report.error)
    if result.after is None:  # nothing was applied: show the same load without a change
        phase("nothing applied: " + ("; ".join(result.refused) or "no change proposed"))
        restart_and_measure()
    for check in (report.verification.checks if report.verification else []):
        phase(f"{check.id}: {check.before_rate or 0:.1f}/s before, "
              f"{check.after_rate if check.after_rate is not None else float('nan'):.1f}/s after: {check.verdict}")
    for applied in report.applied:
        phase(f"{applied.change.target}: {applied.verdict}" + (f" ({applied.restored})" if applied.restored else ""))


def _build(lab: LabNet, scenario: Scenario) -> list[subprocess.Popen]:
    """Sysctls, setup and servers of a scenario in a fresh lab."""
    for side, values in ((SERVER, scenario.server_sysctls), (CLIENT, scenario.client_sysctls)):
        for key, value in values.items():
            write_sysctl(key, value, _namespace(lab, side))
    if scenario.setup:
        scenario.setup(lab)
    return [_start(lab, program) for program in scenario.servers]


@dataclass
class Running:
    lab: LabNet
    scenario: Scenario
    netns: str                      # where the drops happen (the scenario's measure side)
    server_pids: list[int]
    loads: list[subprocess.Popen] = field(default_factory=list)

    def start_load(self) -> None:
        """Start the scenario's (bounded) load programs; they stop by themselves."""
        self.loads.extend(_start(self.lab, program) for program in self.scenario.loads)

    def wait_load(self) -> dict[str, Any]:
        """Wait for the load programs to finish; their JSON summaries."""
        loads, self.loads = self.loads, []
        return _collect_load(self.lab, loads)


@contextmanager
def running(name: str) -> Iterator[Running]:
    """A scenario's namespaces and servers, for tools that watch over time (serve, watch,
    sim calibration): call start_load() when ready. Everything is torn down on exit."""
    scenario = get(name)
    with LabNet(router=scenario.router) as lab:
        servers = _build(lab, scenario)
        state = Running(lab, scenario, _namespace(lab, scenario.measure_side), [p.pid for p in servers])
        try:
            yield state
        finally:
            for process in state.loads:
                lab.stop(process)


def run(name: str, fix: bool = False, on_phase: Callable[[str], None] | None = None,
        on_tick: Callable[[float], None] | None = None) -> LabResult:
    scenario = get(name)
    phase = on_phase or (lambda text: None)
    with LabNet(router=scenario.router) as lab:
        phase(f"building namespaces {lab.server_ns} and {lab.client_ns}")
        servers = _build(lab, scenario)
        phase(f"servers {[p.pid for p in servers]} ready; measuring {scenario.window:g} s under load")
        result = LabResult(scenario, lab.server_ns, lab.client_ns, [p.pid for p in servers],
                           _measure(lab, scenario, on_tick))
        try:
            if fix:
                _apply_fixes(lab, scenario, result, servers, phase, on_tick)
            phase("tearing down the lab")
        finally:
            result.host_sysctls = dict(lab.host_sysctls_saved)
    result.host_sysctls_not_restored = dict(lab.host_sysctls_saved)  # close() removes what it restored
    return result
