"""Can a rule be counted whole over a window? Which source provides which counter.

A rule adds up counters that may come from several sources: udp.no_port is Udp.NoPorts
(/proc/net/snmp) + Udp6.NoPorts (/proc/net/snmp6), nic.rx_missed takes link statistics and
ethtool driver statistics, ip.no_route reads snmp, netstat and snmp6. When one of those
sources did not answer, the sum of the others is a number too small, not the finding's:
the rule is "not evaluated" and the reason names the source.

The rule we follow, by the status of a source at the two ends of the window:
- failed or needs-privilege at either end: its counters exist but were not read -> the
  rules it feeds are unknown (a partial sum is never reported);
- unavailable (or not read) at both ends: the host has no such counters (no IPv6: no
  /proc/net/snmp6; a copied tree: no ethtool) -> absent, the rule is the sum of what exists;
- ok at one end and unavailable at the other: the counters existed during the window but
  one end is missing -> unknown, like a failure.

Which counters a source provides is learned the way the meter learns it (meter.py keeps
the names of each source's last good read): from an end of the window where the source
answered. A source that answered at neither end has no names to learn from; then its
counter-name prefixes below say what it would have provided (tests/unit/test_rules_partial.py
checks them against every source's real names and every catalogue pattern).
"""

from __future__ import annotations

from ..snapshot import Snapshot
from ..sources import SOURCES
from ..sources.base import FAILED, NEEDS_PRIVILEGE, OK

# Statuses that mean "the counters exist but were not read".
NOT_READ = (FAILED, NEEDS_PRIVILEGE)

# Counter-name prefixes of each counter source, for a source that never answered in the
# window (names are "<Section>.<Counter>" for snmp/netstat/snmp6, "<kind>.<...>" otherwise).
PREFIXES: dict[str, tuple[str, ...]] = {
    "snmp": ("Ip.", "Icmp.", "IcmpMsg.", "Tcp.", "Udp.", "UdpLite."),
    "netstat": ("TcpExt.", "IpExt.", "MPTcpExt."),
    "snmp6": ("Ip6.", "Icmp6.", "Udp6.", "UdpLite6."),
    "link_stats": ("link.",),
    "ethtool": ("ethtool.",),
    "netdev": ("dev.",),
    "softnet": ("softnet.",),
    "qdisc": ("qdisc.",),
    "conntrack": ("conntrack.",),
    "neighbour": ("neigh.",),
    "nftables": ("nft.",),
    "udp_sockets": ("udpsock.",),
}

# Counters an evaluator reads besides the rule's drop_counters (what it subtracts): a
# source failing under them makes the result as wrong as one failing under a drop counter.
EVALUATOR_READS: dict[str, tuple[str, ...]] = {
    "socket_filter": tuple(f"{t}.{n}" for t in ("Udp", "Udp6")
                           for n in ("InErrors", "RcvbufErrors", "MemErrors", "InCsumErrors")),
    "conntrack_table_full": ("conntrack.cpu*.insert_failed",),
}


def is_ok(snap: Snapshot, name: str) -> bool:
    result = snap.results.get(name)
    return result is not None and result.ok


def counted_patterns(rule) -> tuple[str, ...]:
    """The counter names/globs a rule's count depends on."""
    return tuple(rule.drop_counters) + EVALUATOR_READS.get(rule.evaluator or "", ())


def _head(pattern: str) -> str:
    """The literal start of a glob: 'link.*.rx_missed_errors' -> 'link.'."""
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:i]
    return pattern


def prefix_could_match(patterns: tuple[str, ...], prefixes: tuple[str, ...]) -> bool:
    return any(h.startswith(p) or p.startswith(h) for h in map(_head, patterns) for p in prefixes)


def incomplete_sources(before: Snapshot, after: Snapshot) -> dict[str, str]:
    """Counter sources whose counters did not come through whole: name -> reason
    ("snmp failed: ..."); sources absent at both ends are not listed (see the module doc)."""
    found: dict[str, str] = {}
    for name in sorted(before.results.keys() | after.results.keys()):
        source = SOURCES.get(name)
        if source is None or source.counters is None:
            continue
        ends = {"start": before.results.get(name), "end": after.results.get(name)}
        if all(r is not None and r.ok for r in ends.values()):
            continue
        bad = [(where, r) for where, r in ends.items() if r is not None and r.status in NOT_READ]
        answered = [where for where, r in ends.items() if r is not None and r.status == OK]
        if not bad and not answered:
            continue  # unavailable / not read at both ends: the host has no such counters
        if not bad:  # ok at one end, unavailable (or not read) at the other
            bad = [(where, r) for where, r in ends.items() if r is None or r.status != OK]
        where, result = bad[0]
        status = result.status if result is not None else "not read"
        text = f"{name} {status}"
        if answered:
            text += f" at the {where} of the window"
        error = result.error if result is not None else None
        found[name] = f"{text}: {error}" if error else text
    return found


def could_contribute(name: str, patterns: tuple[str, ...], before: Snapshot, after: Snapshot) -> bool:
    """Could source `name` provide a counter matching `patterns`? Learned from an end where it
    answered, else from its name prefixes (an unknown source: assume it could)."""
    from .engine import matching  # late: the engine imports this module

    for snap in (after, before):
        if is_ok(snap, name):
            return bool(matching(patterns, dict.fromkeys(snap.source_counters(name))))
    prefixes = PREFIXES.get(name)
    return True if prefixes is None else prefix_could_match(patterns, prefixes)


def partial_count(rule, window) -> str | None:
    """Why the rule's count would be a partial sum over `window` (a reason naming the
    source that did not answer), or None when it is whole - or when none of its counters
    is known at all (the engine's own "counters not available" says that)."""
    patterns = counted_patterns(rule)
    from .engine import matching

    known = matching(patterns, window.deltas.values)
    if not any(v is not None for v in known.values()):
        return None
    for name, reason in incomplete_sources(window.before, window.after).items():
        if could_contribute(name, patterns, window.before, window.after):
            return reason
    return None
