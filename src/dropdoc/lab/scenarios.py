"""Lab scenarios: a fault reproduced in namespaces, diagnosed, optionally fixed and re-measured.

A scenario is data: the server namespace's sysctls, the server program's arguments, the
client load and the window. `run()` builds the lab, measures the window with the load
running inside it, and with fix=True applies the per-namespace sysctl fixes the
diagnosis proposed, restarts the server (a new somaxconn only applies when the
application calls listen() again) and measures the same load again.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..diagnose import diagnose
from ..errors import DropdocError
from ..fix.sysctl import UnsafeChange, write_sysctl
from ..model import Diagnosis
from .topology import SERVER_ADDRESS, LabError, LabNet

SERVER_MODULE = "dropdoc.lab.server"
CLIENT_MODULE = "dropdoc.lab.client"
PORT = 8080


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expected_finding: str | None  # top finding the scenario must produce (None: healthy control)
    server_sysctls: dict[str, int] = field(default_factory=dict)
    server_args: tuple[str, ...] = ()
    load_args: tuple[str, ...] = ()
    window: float = 5.0


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        name="listen-overflow",
        description=("the reference case: somaxconn lowered to 16 silently caps a server that "
                     "asks listen() for 1024 and accepts 100 connections/s; a burst of 400 "
                     "connections overflows its accept queue"),
        expected_finding="tcp.listen_overflow",
        server_sysctls={"net.core.somaxconn": 16},
        server_args=("--backlog", "1024", "--accept-rate", "100", "--name", "payments"),
        load_args=("--connections", "400", "--rate", "400", "--max-seconds", "4"),
        window=5.0,
    ),
    Scenario(
        name="healthy",
        description=("control: a server with default limits that accepts as fast as it can "
                     "receives the same kind of load; nothing may be reported as a problem"),
        expected_finding=None,
        server_args=("--backlog", "1024", "--accept-rate", "0", "--name", "payments"),
        load_args=("--connections", "200", "--rate", "200", "--max-seconds", "3"),
        window=3.0,
    ),
)}


@dataclass
class Measurement:
    diagnosis: Diagnosis
    load: dict[str, Any]


@dataclass
class LabResult:
    scenario: Scenario
    server_ns: str
    server_pid: int
    before: Measurement
    applied: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    after: Measurement | None = None
    server_pid_after: int | None = None

    def drops(self, which: str) -> int | None:
        measurement = self.before if which == "before" else self.after
        if measurement is None or self.scenario.expected_finding is None:
            return None
        finding = measurement.diagnosis.finding(self.scenario.expected_finding)
        return finding.drops if finding else 0

    def to_dict(self) -> dict[str, Any]:
        out = {"scenario": self.scenario.name, "server_netns": self.server_ns,
               "server_pid": self.server_pid, "load": self.before.load,
               "diagnosis": self.before.diagnosis.to_dict()}
        if self.after is not None:
            out["fix"] = {"applied": self.applied, "refused": self.refused,
                          "server_pid_after_restart": self.server_pid_after,
                          "load": self.after.load, "diagnosis": self.after.diagnosis.to_dict()}
        return out


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise DropdocError(f"unknown lab scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return SCENARIOS[name]


def _start_server(lab: LabNet, scenario: Scenario) -> subprocess.Popen:
    process = lab.spawn(lab.server_ns, SERVER_MODULE, "--port", str(PORT), "--max-seconds", "120",
                        *scenario.server_args)
    ready, _, _ = select.select([process.stdout], [], [], 15)
    line = process.stdout.readline() if ready else ""
    if line.strip() != "ready":
        error = process.stderr.read() if process.poll() is not None else "no answer in 15 s"
        raise LabError(f"lab server did not start: {error.strip()[-300:]}")
    return process


def _measure(lab: LabNet, scenario: Scenario, on_tick: Callable[[float], None] | None) -> Measurement:
    clients: list[subprocess.Popen] = []

    def start_load() -> None:
        clients.append(lab.spawn(lab.client_ns, CLIENT_MODULE, "--target", f"{SERVER_ADDRESS}:{PORT}",
                                 *scenario.load_args))

    diagnosis = diagnose(lab.server_ns, scenario.window, on_start=start_load, on_tick=on_tick)
    load: dict[str, Any] = {}
    for client in clients:
        try:
            out, err = client.communicate(timeout=70)
            load = json.loads(out) if out.strip() else {"error": err.strip()[-300:]}
        except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            load = {"error": str(exc)}
        finally:
            lab.stop(client)
    return Measurement(diagnosis, load)


def _apply_fixes(diagnosis: Diagnosis, netns: str) -> tuple[list[dict[str, Any]], list[str]]:
    applied, refused = [], []
    for finding in diagnosis.findings:
        if not finding.harmful:
            continue
        for fix in finding.fixes:
            if fix.get("kind") != "sysctl":
                continue
            try:
                old = write_sysctl(fix["key"], fix["proposed"], netns)
                applied.append({"finding": finding.id, "key": fix["key"], "old": old,
                                "new": fix["proposed"], "netns": netns})
            except UnsafeChange as exc:
                refused.append(str(exc))
    return applied, refused


def run(name: str, fix: bool = False, on_phase: Callable[[str], None] | None = None,
        on_tick: Callable[[float], None] | None = None) -> LabResult:
    scenario = get(name)
    phase = on_phase or (lambda text: None)
    with LabNet() as lab:
        phase(f"building namespaces {lab.server_ns} and {lab.client_ns}")
        for key, value in scenario.server_sysctls.items():
            write_sysctl(key, value, lab.server_ns)
        server = _start_server(lab, scenario)
        phase(f"server pid {server.pid} listening on {SERVER_ADDRESS}:{PORT}; measuring {scenario.window:g} s under load")
        result = LabResult(scenario, lab.server_ns, server.pid, _measure(lab, scenario, on_tick))
        if fix:
            result.applied, result.refused = _apply_fixes(result.before.diagnosis, lab.server_ns)
            phase("applied: " + (", ".join(f"{a['key']}={a['new']}" for a in result.applied) or "nothing"))
            lab.stop(server)  # the new limits apply when the server calls listen() again
            time.sleep(0.2)
            server = _start_server(lab, scenario)
            result.server_pid_after = server.pid
            phase(f"server restarted as pid {server.pid}; measuring the same load again")
            result.after = _measure(lab, scenario, on_tick)
        phase("tearing down the lab")
    return result
