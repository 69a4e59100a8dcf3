"""Write one sysctl inside a network namespace, validated, returning the old value.

Refuses what would be unsafe: a key dropdoc does not know, a non-positive or oversized
value, and a global key (net.core.netdev_max_backlog, ...) when a namespace is targeted,
because writing it from there would change the whole host (or fail with EINVAL).
"""

from __future__ import annotations

from ..errors import DropdocError, translated
from .. import netns as netns_mod
from ..sources import sysctls as sysctl_source
from ..sources.sysctls import Value, key_path, parse_value

# Upper bounds we accept for single-integer keys: beyond these the kernel either clamps
# or the value is certainly a mistake.
INT_LIMITS = {
    "net.core.somaxconn": 65535,
    "net.ipv4.tcp_max_syn_backlog": 1 << 20,
    "net.core.netdev_max_backlog": 1 << 20,
    "net.core.rmem_default": 1 << 30,
    "net.core.rmem_max": 1 << 30,
    "net.core.wmem_default": 1 << 30,
    "net.core.wmem_max": 1 << 30,
    "net.ipv4.tcp_syncookies": 2,
}


class UnsafeChange(DropdocError):
    """A change dropdoc refuses to make."""


def validate(key: str, value: int, netns: str | None) -> None:
    if key not in sysctl_source.KEYS:
        raise UnsafeChange(f"{key}: not a sysctl dropdoc manages")
    if netns is not None and key in sysctl_source.GLOBAL_KEYS:
        raise UnsafeChange(f"{key} is global, not per network namespace: writing it for netns "
                           f"{netns} would change the whole host")
    limit = INT_LIMITS.get(key)
    if limit is None:
        raise UnsafeChange(f"{key}: no validated range for automatic changes")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > limit:
        raise UnsafeChange(f"{key}={value!r} outside the safe range 0..{limit}")


def read_sysctl(key: str, netns: str | None = None) -> Value:
    path = "/" + "/".join(key_path(key))
    with netns_mod.entered(netns), translated(path):
        with open(path, encoding="utf-8") as handle:
            return parse_value(handle.read())


def write_sysctl(key: str, value: int, netns: str | None = None) -> Value:
    """Validate and write; return the previous value."""
    validate(key, value, netns)
    path = "/" + "/".join(key_path(key))
    with netns_mod.entered(netns), translated(path):
        with open(path, encoding="utf-8") as handle:
            old = parse_value(handle.read())
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(str(value))
    return old
