"""Read and write sysctls inside a network namespace, validated against kernel limits.

`write_sysctl(key, value, netns)` (used by the lab too) refuses what would be unsafe: a
key without a validated range, a value outside it, a triple whose members are out of
order, and a global key (net.core.netdev_max_backlog, ...) when a namespace is targeted,
because writing it from there would change the whole host (or fail with EINVAL).

`check_relations` checks what a whole set of changes leaves behind (rmem_max >=
rmem_default, gc_thresh1 <= gc_thresh2 <= gc_thresh3, tcp_mem within RAM, ...) against
the values currently in force; `order_changes` applies limits before what they bound.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Callable, Iterable

from ..errors import DropdocError, translated
from .. import netns as netns_mod
from ..sources import sysctls as sysctl_source
from ..sources.sysctls import Value, key_path, parse_value

# Upper bounds we accept for single-integer keys (kept for callers of the first version).
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

# Further single-integer keys the catalogue's fixes touch: pattern -> (lowest, highest).
# somaxconn stops at 65535: sk_max_ack_backlog was a u16 on older kernels and larger
# values are silently clamped there.
INT_RANGES: dict[str, tuple[int, int]] = {
    **{key: (0, high) for key, high in INT_LIMITS.items()},
    "net.ipv4.tcp_abort_on_overflow": (0, 1),
    "net.core.netdev_budget": (1, 1 << 16),
    "net.core.netdev_budget_usecs": (1, 1 << 20),
    "net.core.rps_sock_flow_entries": (0, 1 << 26),
    "net.core.optmem_max": (0, 1 << 26),
    "net.ipv4.udp_rmem_min": (1, 1 << 30),
    "net.ipv4.udp_wmem_min": (1, 1 << 30),
    "net.ipv4.conf.*.rp_filter": (0, 2),
    "net.ipv4.ipfrag_high_thresh": (0, 1 << 30),
    "net.ipv4.ipfrag_low_thresh": (0, 1 << 30),
    "net.ipv4.ipfrag_time": (1, 3600),
    "net.ipv6.ip6frag_high_thresh": (0, 1 << 30),
    "net.ipv6.ip6frag_low_thresh": (0, 1 << 30),
    "net.ipv6.ip6frag_time": (1, 3600),
    "net.netfilter.nf_conntrack_max": (1, 1 << 24),
    "net.netfilter.nf_conntrack_buckets": (1, 1 << 24),
    "net.nf_conntrack_max": (1, 1 << 24),
    "net.ipv4.neigh.*.gc_thresh1": (0, 1 << 20),
    "net.ipv4.neigh.*.gc_thresh2": (0, 1 << 20),
    "net.ipv4.neigh.*.gc_thresh3": (1, 1 << 20),
    "net.ipv6.neigh.*.gc_thresh1": (0, 1 << 20),
    "net.ipv6.neigh.*.gc_thresh2": (0, 1 << 20),
    "net.ipv6.neigh.*.gc_thresh3": (1, 1 << 20),
    "net.ipv4.neigh.*.unres_qlen_bytes": (0, 1 << 26),
    "net.ipv6.neigh.*.unres_qlen_bytes": (0, 1 << 26),
}

# Triples "min default max" (bytes) or "low pressure high" (pages): ordered, positive.
TRIPLES: dict[str, tuple[str, int]] = {
    "net.ipv4.tcp_rmem": ("bytes", 1 << 30),
    "net.ipv4.tcp_wmem": ("bytes", 1 << 30),
    "net.ipv4.tcp_mem": ("pages", 1 << 40),
    "net.ipv4.udp_mem": ("pages", 1 << 40),
}

# Memory the transport may pin: refuse a tcp_mem/udp_mem whose top exceeds this share of RAM.
MEMORY_SHARE = 0.5

# Not per network namespace (besides sources.sysctls.GLOBAL_KEYS, which areas extend).
KNOWN_GLOBAL = frozenset({
    "net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs",
    "net.core.rps_sock_flow_entries", "net.ipv4.tcp_mem", "net.ipv4.udp_mem",
    "net.netfilter.nf_conntrack_max", "net.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets",
})
_GLOBAL_PATTERNS = ("net.ipv4.neigh.default.gc_thresh?", "net.ipv6.neigh.default.gc_thresh?")

# (upper, lower): the value of `upper` must stay >= the value of `lower`.
RELATIONS: tuple[tuple[str, str], ...] = (
    ("net.core.rmem_max", "net.core.rmem_default"),
    ("net.core.wmem_max", "net.core.wmem_default"),
    ("net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh"),
    ("net.ipv6.ip6frag_high_thresh", "net.ipv6.ip6frag_low_thresh"),
    ("net.ipv4.neigh.default.gc_thresh3", "net.ipv4.neigh.default.gc_thresh2"),
    ("net.ipv4.neigh.default.gc_thresh2", "net.ipv4.neigh.default.gc_thresh1"),
    ("net.ipv6.neigh.default.gc_thresh3", "net.ipv6.neigh.default.gc_thresh2"),
    ("net.ipv6.neigh.default.gc_thresh2", "net.ipv6.neigh.default.gc_thresh1"),
)


class UnsafeChange(DropdocError):
    """A change dropdoc refuses to make."""


def is_global(key: str) -> bool:
    return (key in sysctl_source.GLOBAL_KEYS or key in KNOWN_GLOBAL
            or any(fnmatch.fnmatchcase(key, p) for p in _GLOBAL_PATTERNS))


def int_range(key: str) -> tuple[int, int] | None:
    if key in INT_RANGES:
        return INT_RANGES[key]
    for pattern, bounds in INT_RANGES.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
            return bounds
    return None


def managed(key: str) -> bool:
    return key in TRIPLES or int_range(key) is not None


def _as_triple(value: object) -> tuple[int, ...] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def validate(key: str, value: Value | list, netns: str | None) -> None:
    """Kernel limits of one value; raise UnsafeChange with the reason."""
    if not managed(key):
        raise UnsafeChange(f"{key}: not a sysctl dropdoc manages (no validated range for automatic changes)")
    if netns is not None and is_global(key):
        raise UnsafeChange(f"{key} is global, not per network namespace: writing it for netns "
                           f"{netns} would change the whole host")
    if key in TRIPLES:
        unit, high = TRIPLES[key]
        triple = _as_triple(value)
        if triple is None or len(triple) != 3:
            raise UnsafeChange(f"{key}={value!r}: needs three integers (min default max)")
        if any(v <= 0 or v > high for v in triple):
            raise UnsafeChange(f"{key}={format_value(triple)}: every member must be 1..{high} {unit}")
        if not triple[0] <= triple[1] <= triple[2]:
            raise UnsafeChange(f"{key}={format_value(triple)}: members out of order "
                               f"(need {triple[0]} <= {triple[1]} <= {triple[2]})")
        if unit == "pages":
            _check_memory(key, triple[2])
        return
    low, high = int_range(key)  # type: ignore[misc]
    if not isinstance(value, int) or isinstance(value, bool) or value < low or value > high:
        raise UnsafeChange(f"{key}={value!r} outside the safe range {low}..{high}")


def total_memory_pages() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 // os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(key: str, top_pages: int) -> None:
    pages = total_memory_pages()
    if pages and top_pages > pages * MEMORY_SHARE:
        raise UnsafeChange(f"{key}: a top of {top_pages} pages would let the transport pin more than "
                           f"{int(MEMORY_SHARE * 100)}% of RAM ({pages} pages)")


def check_relations(proposed: dict[str, Value], current: Callable[[str], Value | None]) -> dict[str, str]:
    """Relations the values left after `proposed` would break: {key: reason}.

    `current(key)` returns the value in force for keys the plan does not change (None:
    not present on this kernel / in this namespace, which satisfies every relation)."""
    problems: dict[str, str] = {}

    def value(key: str) -> Value | None:
        return proposed[key] if key in proposed else current(key)
    for upper, lower in RELATIONS:
        if upper not in proposed and lower not in proposed:
            continue
        up, low = value(upper), value(lower)
        if isinstance(up, int) and isinstance(low, int) and up < low:
            culprit = lower if lower in proposed else upper
            problems[culprit] = (f"{upper} ({up}) would be below {lower} ({low}): "
                                 f"raise {upper} as well, or less")
    return problems


def order_changes(keys: Iterable[str]) -> list[str]:
    """Limits before what they bound (rmem_max before rmem_default, gc_thresh3 first)."""
    keys = list(keys)

    def depth(key: str) -> int:
        below = [upper for upper, lower in RELATIONS if lower == key and upper in keys]
        return 1 + max((depth(u) for u in below), default=0) if below else 0
    return sorted(keys, key=lambda k: (depth(k), keys.index(k)))


def format_value(value: Value | list) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def normalise(value: object) -> Value:
    """JSON lists back to the tuples parse_value returns."""
    return tuple(value) if isinstance(value, list) else value  # type: ignore[return-value]


def sysctl_file(key: str) -> str:
    return "/" + "/".join(key_path(key))


def read_sysctl(key: str, netns: str | None = None) -> Value:
    path = sysctl_file(key)
    with netns_mod.entered(netns), translated(path):
        with open(path, encoding="utf-8") as handle:
            return parse_value(handle.read())


def presence(key: str, netns: str | None = None) -> str:
    """'writable', 'read-only' (visible but not settable here: global) or 'absent'."""
    path = sysctl_file(key)
    with netns_mod.entered(netns):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return "absent"
    return "writable" if mode & 0o222 else "read-only"


def raw_write(key: str, value: Value | list, netns: str | None = None) -> None:
    """Write without validation (restoring a value the kernel itself reported)."""
    path = sysctl_file(key)
    with netns_mod.entered(netns), translated(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(format_value(value))


def write_sysctl(key: str, value: Value | list, netns: str | None = None) -> Value:
    """Validate and write; return the previous value."""
    validate(key, value, netns)
    old = read_sysctl(key, netns)
    raw_write(key, value, netns)
    return old
