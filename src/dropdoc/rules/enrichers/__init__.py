"""Per-rule enrichment: name the affected sockets, processes, CPUs or devices and derive
fixes from the measured numbers (never a fixed magic value).

An enricher takes the finding the engine built from counters and the window, and adds
subjects, evidence, fixes and an explanation; an evaluator replaces the counter logic
for rules over gauges. Both only read the window. Every module in this package is
imported, so a new area adds a module and touches no shared file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ...model import Finding
    from ...window import Window
    from ..engine import Rule

ENRICHERS: dict[str, Callable[["Finding", "Window"], None]] = {}
EVALUATORS: dict[str, Callable[["Rule", "Window"], "Finding | None | str"]] = {}


def enricher(name: str):
    def register(func):
        if name in ENRICHERS:
            raise ValueError(f"enricher {name} registered twice")
        ENRICHERS[name] = func
        return func
    return register


def evaluator(name: str):
    def register(func):
        if name in EVALUATORS:
            raise ValueError(f"evaluator {name} registered twice")
        EVALUATORS[name] = func
        return func
    return register


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name != "common":
        importlib.import_module(f"{__name__}.{_info.name}")
