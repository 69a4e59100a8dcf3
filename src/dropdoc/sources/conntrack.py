"""/proc/net/stat/nf_conntrack: connection-tracking statistics of this network namespace.

A header line names the columns, then one line of %08x u32 values per possible CPU.
Parsed by header name: the columns changed over time (same position, new meaning):

  2.6.x-3.x  entries searched found new invalid ignore delete delete_list insert
             insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete
  + 3.x      ... search_restart
  5.x        `searched` became `clashres` (clash_resolve); `new`, `ignore`, `delete` and
             `delete_list` are printed as constant 0 since the kernel stopped counting them
  5.19+      `delete_list` became `chainlength` (chaintoolong)

A column that is printed but no longer counted (new/ignore/delete/delete_list once
`clashres` is in the header) is None, not 0. `entries` is a gauge (this namespace's
nf_conntrack_count, repeated on every line), not a counter.

The limits live in sysctls: nf_conntrack_count (per namespace), nf_conntrack_max and
nf_conntrack_buckets (global: a child namespace can read them, writing fails with EINVAL);
they are added to the sysctls source here. No file: conntrack is not loaded (or not built)
and the source is `unavailable`, which is not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ParseError, SourceUnavailable
from . import sysctls
from .base import ReadContext, Source, parse_int, register

# Header name -> our name (the kernel's field in struct ip_conntrack_stat).
RENAMED = {"clashres": "clash_resolve", "chainlength": "chaintoolong", "icmp_error": "error"}
# Printed as constant 0 by kernels whose header has `clashres`.
RETIRED = frozenset({"new", "ignore", "delete", "delete_list"})

COUNT = "net.netfilter.nf_conntrack_count"
MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
TIMEOUTS = ("net.netfilter.nf_conntrack_tcp_timeout_established",
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream")
sysctls.want((COUNT, MAX, BUCKETS, *TIMEOUTS), global_keys=(MAX, BUCKETS))


@dataclass(frozen=True)
class CpuConntrack:
    cpu: int  # line number among the CPU lines (the kernel prints possible CPUs in order)
    entries: int
    counters: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ConntrackStats:
    columns: tuple[str, ...]  # header names as the kernel printed them
    cpus: tuple[CpuConntrack, ...]

    @property
    def entries(self) -> int:
        return self.cpus[0].entries

    def total(self, name: str) -> int | None:
        """Sum over CPUs (for display; deltas are taken per CPU, each a u32)."""
        values = [c.counters.get(name) for c in self.cpus]
        if not values or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None)


def parse(text: str) -> ConntrackStats:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("nf_conntrack statistics are empty")
    header = lines[0].split()
    if not header or header[0] != "entries":
        raise ParseError(f"nf_conntrack statistics: header {lines[0][:60]!r} does not start with 'entries'")
    if len(set(header)) != len(header):
        raise ParseError("nf_conntrack statistics: a column name appears twice in the header")
    retired = RETIRED if "clashres" in header else frozenset()
    cpus = []
    for number, line in enumerate(lines[1:]):
        tokens = line.split()
        if len(tokens) != len(header):
            raise ParseError(f"nf_conntrack statistics line {number + 2}: {len(tokens)} values for "
                             f"{len(header)} columns")
        values = [parse_int(tok, f"nf_conntrack statistics line {number + 2}", 16) for tok in tokens]
        if any(v < 0 or v >= 1 << 32 for v in values):
            raise ParseError(f"nf_conntrack statistics line {number + 2}: value out of u32 range")
        counters: dict[str, int | None] = {}
        for name, value in zip(header[1:], values[1:]):
            counters[RENAMED.get(name, name)] = None if name in retired else value
        cpus.append(CpuConntrack(cpu=number, entries=values[0], counters=counters))
    if not cpus:
        raise ParseError("nf_conntrack statistics have a header but no CPU lines")
    return ConntrackStats(columns=tuple(header), cpus=tuple(cpus))


def read(ctx: ReadContext) -> ConntrackStats:
    try:
        text = ctx.read("proc", "net", "stat", "nf_conntrack")
    except SourceUnavailable as exc:
        raise SourceUnavailable(
            f"connection tracking is not loaded here (no /proc/net/stat/nf_conntrack): "
            f"nothing to check ({exc})") from exc
    return parse(text)


def counters(stats: ConntrackStats) -> dict[str, int | None]:
    # Per CPU only: each is a u32 that wraps on its own (as for softnet_stat).
    flat: dict[str, int | None] = {}
    for cpu in stats.cpus:
        for name, value in cpu.counters.items():
            if value is not None:
                flat[f"conntrack.cpu{cpu.cpu}.{name}"] = value
    return flat


register(Source("conntrack", read, counters, counter_bits=32,
                description="/proc/net/stat/nf_conntrack: conntrack drops, early drops, insert failures"))
