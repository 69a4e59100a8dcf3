"""What a lab scenario is: data describing namespaces, programs, load and expectations.

Scenarios live in lab/catalog/*.py (one module per area, each with a SCENARIOS tuple) and
are discovered automatically, so adding one touches no shared file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .topology import LabNet

SERVER, CLIENT = "server", "client"
ROUTER = "router"  # only in scenarios with router=True
PORT = 8080


@dataclass(frozen=True)
class Program:
    """A python module run inside one of the lab namespaces."""
    side: str  # SERVER or CLIENT (or ROUTER with Scenario.router): the namespace it runs in
    module: str
    args: tuple[str, ...] = ()
    wait_ready: bool = False  # block until it prints "ready" (servers)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expected_finding: str | None  # top finding it must produce (None: a control, must be healthy)
    server_sysctls: dict[str, int] = field(default_factory=dict)
    client_sysctls: dict[str, int] = field(default_factory=dict)
    # Extra setup after the namespaces exist (nft rules, qdiscs, routes); undone with them.
    setup: Callable[["LabNet"], None] | None = None
    servers: tuple[Program, ...] = ()  # long-running; restarted after a fix
    loads: tuple[Program, ...] = ()    # bounded; started when the window opens
    window: float = 5.0
    measure_side: str = SERVER  # namespace where the drops happen (ROUTER with router=True)
    fixable: bool = True  # --fix is expected to bring the drops to ~0
    benign_expected: tuple[str, ...] = ()  # findings that may appear but must be benign
    # client - router - server (three namespaces, forwarding router) instead of client - server;
    # see lab/topology.py for the addresses.
    router: bool = False


@lru_cache(maxsize=1)
def all_scenarios() -> dict[str, Scenario]:
    from . import catalog

    found: dict[str, Scenario] = {}
    modules = [importlib.import_module(f"{catalog.__name__}.{info.name}")
               for info in pkgutil.iter_modules(catalog.__path__)]
    # ORDER puts the reference case first in `dropdoc lab list`; then by module name.
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        for scenario in getattr(module, "SCENARIOS", ()):
            if scenario.name in found:
                raise ValueError(f"lab scenario {scenario.name} defined twice")
            found[scenario.name] = scenario
    return found
