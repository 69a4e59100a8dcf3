"""The sysctls the rules and fixes refer to, read from /proc/sys.

net.* sysctls are per network namespace except the few that are global (see
GLOBAL_KEYS); a key this kernel lacks is None.
"""

from __future__ import annotations

from ..errors import ParseError, SourceUnavailable
from .base import ReadContext, Source, register

KEYS: tuple[str, ...] = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.core.rmem_max",
    "net.core.rmem_default",
    "net.core.wmem_max",
    "net.core.wmem_default",
    "net.ipv4.udp_mem",
    "net.ipv4.udp_rmem_min",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_mem",
    "net.core.rps_sock_flow_entries",
)

# Not per network namespace: writing them changes the whole host.
# rmem/wmem default and max are visible in a child namespace but read-only there (6.x):
# the host's values apply, and a fix must be made in the host namespace.
GLOBAL_KEYS: frozenset[str] = frozenset({
    "net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs",
    "net.core.rps_sock_flow_entries", "net.ipv4.udp_mem", "net.ipv4.tcp_mem",
    "net.core.rmem_default", "net.core.rmem_max", "net.core.wmem_default", "net.core.wmem_max",
})


def want(keys: tuple[str, ...], global_keys: tuple[str, ...] = ()) -> None:
    """Let another module (a source or enricher area) add the sysctls its rules need."""
    global KEYS, GLOBAL_KEYS
    KEYS = KEYS + tuple(k for k in keys if k not in KEYS)
    GLOBAL_KEYS = GLOBAL_KEYS | frozenset(global_keys)

Value = int | tuple[int, ...] | str


def key_path(key: str) -> tuple[str, ...]:
    return ("proc", "sys", *key.split("."))


def parse_value(text: str) -> Value:
    """'4096' -> 4096, '4096 131072 6291456' -> (4096, 131072, 6291456), else the text."""
    fields = text.split()
    if not fields:
        raise ParseError("empty sysctl value")
    try:
        numbers = tuple(int(f) for f in fields)
    except ValueError:
        return text.strip()
    return numbers[0] if len(numbers) == 1 else numbers


def read_keys(ctx: ReadContext, keys: tuple[str, ...]) -> dict[str, Value | None]:
    values: dict[str, Value | None] = {}
    for key in keys:
        try:
            values[key] = parse_value(ctx.read(*key_path(key)))
        except (SourceUnavailable, ParseError):
            values[key] = None
    return values


def read(ctx: ReadContext) -> dict[str, Value | None]:
    values = read_keys(ctx, KEYS)
    in_bundle = ctx.replay is not None and "json/host_sysctls" in ctx.replay
    if ctx.host_sysctls is not None or in_bundle:
        # In a child namespace the global keys exist only in the host's view.
        host = ctx.record_json("host_sysctls", lambda: _jsonable(ctx.host_sysctls or {}))
        if not isinstance(host, dict):
            host = {}
        for key in GLOBAL_KEYS & set(KEYS):
            if values.get(key) is None and host.get(key) is not None:
                value = host[key]
                values[key] = tuple(value) if isinstance(value, list) else value
    if all(v is None for v in values.values()):
        raise SourceUnavailable("no net.* sysctl readable under /proc/sys")
    return values


def _jsonable(values: dict[str, Value | None]) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


register(Source("sysctls", read, description="/proc/sys/net: the limits the fixes change"))
