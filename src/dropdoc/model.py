"""The diagnosis: findings with evidence, subjects and fixes (JSON contract dropdoc.diagnosis/1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "dropdoc.diagnosis/1"
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

EXIT_HEALTHY, EXIT_WARNING, EXIT_CRITICAL, EXIT_NOT_MEASURED = 0, 1, 2, 3


@dataclass
class Finding:
    id: str
    layer: str
    severity: str
    drops: int
    rate_per_s: float
    benign: bool
    summary: str
    title: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    subjects: list[dict[str, Any]] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    explanation: str | None = None  # why a benign finding is benign, burst vs sustained, ...
    runbook: str = ""

    @property
    def harmful(self) -> bool:
        return not self.benign and self.severity in ("critical", "warning")

    def rank_key(self) -> tuple:
        return (self.benign, SEVERITY_ORDER.get(self.severity, 9), -self.rate_per_s, self.id)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id, "layer": self.layer, "severity": self.severity,
            "drops": self.drops, "rate_per_s": round(self.rate_per_s, 3), "benign": self.benign,
            "title": self.title, "summary": self.summary,
            "evidence": self.evidence, "subjects": self.subjects, "fixes": self.fixes,
            "runbook": self.runbook,
        }
        if self.explanation:
            out["explanation"] = self.explanation
        return out


@dataclass
class Diagnosis:
    kernel: str
    netns: str | None
    hostname: str
    seconds: float
    coverage: dict[str, str]
    coverage_errors: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    not_evaluated: dict[str, str] = field(default_factory=dict)  # rule id -> why
    counter_resets: list[str] = field(default_factory=list)
    # The drop tracer's part: backend, per-reason totals, and what only it saw (None: not traced).
    trace: dict[str, Any] | None = None
    # Every counter delta of the window (None: missing), for callers that verify a fix.
    counter_deltas: dict[str, int | None] = field(default_factory=dict, repr=False)

    @property
    def measured(self) -> bool:
        """False when the core counters could not be read at all: exit code 3."""
        return self.coverage.get("snmp") == "ok" or self.coverage.get("netstat") == "ok"

    @property
    def healthy(self) -> bool:
        return self.measured and not any(f.harmful for f in self.findings)

    def exit_code(self) -> int:
        if not self.measured:
            return EXIT_NOT_MEASURED
        severities = {f.severity for f in self.findings if not f.benign}
        if "critical" in severities:
            return EXIT_CRITICAL
        if "warning" in severities:
            return EXIT_WARNING
        return EXIT_HEALTHY

    def finding(self, finding_id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "host": {"kernel": self.kernel, "netns": self.netns, "hostname": self.hostname},
            "window": {"seconds": round(self.seconds, 3)},
            "coverage": self.coverage,
            "coverage_errors": self.coverage_errors,
            "healthy": self.healthy,
            "findings": [f.to_dict() for f in self.findings],
            "not_evaluated": self.not_evaluated,
            "counter_resets": self.counter_resets,
            **({"trace": self.trace} if self.trace is not None else {}),
        }
