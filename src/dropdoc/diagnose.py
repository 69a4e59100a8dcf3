"""diagnose(): measure a window, evaluate the rules, return a ranked Diagnosis."""

from __future__ import annotations

import os
from typing import Callable

from .model import Diagnosis
from .rules import evaluate
from .rules.reconcile import reconcile
from .window import Window, measure


def diagnosis_from_window(window: Window) -> Diagnosis:
    findings, not_evaluated = evaluate(window)
    trace = reconcile(findings, window.trace)
    after = window.after
    coverage = after.coverage()
    coverage["listener_sampling"] = "ok" if window.listener_sampling == "ok" else "unavailable"
    errors = {name: r.error for name, r in after.results.items() if r.error}
    if window.listener_sampling != "ok":
        errors["listener_sampling"] = window.listener_sampling
    if window.trace is not None:
        coverage["trace"] = window.trace.get("status") or "failed"
        if window.trace.get("error"):
            errors["trace"] = window.trace["error"]
    return Diagnosis(kernel=after.kernel, netns=after.netns, hostname=after.hostname,
                     seconds=window.seconds, coverage=coverage, coverage_errors=errors,
                     findings=findings, not_evaluated=not_evaluated,
                     counter_resets=window.deltas.resets, counter_deltas=window.deltas.values,
                     trace=trace)


def tracing_by_default() -> bool:
    """DESIGN: tracing is on by default when privileged (it needs root for BPF/tracefs)."""
    return os.geteuid() == 0


def diagnose(netns: str | None = None, duration: float = 5.0,
             on_start: Callable[[], None] | None = None,
             on_tick: Callable[[float], None] | None = None,
             trace: bool | None = None) -> Diagnosis:
    """trace=None: trace when privileged."""
    use_trace = tracing_by_default() if trace is None else trace
    return diagnosis_from_window(measure(netns, duration, on_start=on_start, on_tick=on_tick,
                                         trace=use_trace))


def diagnose_bundle(path: str) -> Diagnosis:
    """The diagnosis of a bundle written by `dropdoc collect -o` (on any machine)."""
    from .bundle import read_bundle

    return diagnosis_from_window(read_bundle(path))
