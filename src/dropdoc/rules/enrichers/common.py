"""Helpers shared by the enrichers: sysctl values, socket owners, fix records."""

from __future__ import annotations

from typing import Any

from ...sources.process_sockets import SocketOwners
from ...sources import sysctls as sysctl_source
from ...window import Window


def next_power_of_two(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def sysctl(window: Window, key: str) -> Any:
    values = window.after.data("sysctls") or {}
    return values.get(key)


def owner_fields(window: Window, inode: int) -> dict[str, Any]:
    owners: SocketOwners | None = window.after.data("process_sockets")
    owner = owners.owner(inode) if owners else None
    return {"pid": owner[0] if owner else None, "process": owner[1] if owner else None}


def who(subject: dict[str, Any]) -> str:
    if subject.get("pid") is None:
        return f"the process listening on {subject['socket']} (owner unknown: run as root)"
    return f"pid {subject['pid']} ({subject['process']})"


def sysctl_fix(window: Window, key: str, current: Any, proposed: Any, note: str) -> dict[str, Any]:
    scope = "global: changes the whole host" if key in sysctl_source.GLOBAL_KEYS else "per network namespace"
    return {"kind": "sysctl", "key": key, "current": current, "proposed": proposed,
            "netns": window.after.netns, "scope": scope, "note": note}
