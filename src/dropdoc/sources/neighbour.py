"""/proc/net/stat/arp_cache and ndisc_cache: neighbour-table statistics (HOST-WIDE).

    entries  allocs   destroys hash_grows lookups  hits     res_failed ... unresolved_discards table_fulls
    00000002 0000001d 00000030 00000000   00000113 0000000e 00000000   ... 00000000            00000000

A header naming the columns, then one row of hex numbers per possible CPU. Parsed by
header name: kernels before 3.x print no `table_fulls` column (absent, never 0), and
future columns are kept. `entries` is the table's size right now (a gauge, the same on
every row); every other column is a per-CPU counter, summed over the rows.

The neighbour tables (ARP, NDISC) are shared by all network namespaces and the kernel
creates these files in the initial namespace only: inside a named netns /proc/net/stat
has no arp_cache. We then read the host's copy through /proc/1/net/stat (pid 1 lives in
the initial namespace on a normal host). Either way the numbers cover the whole host,
every namespace included: `host_wide` says so, and findings built on them must too.
Inside a netns the per-namespace evidence for neighbour drops is the NEIGH_* drop reasons
of the tracer, and the namespace's own neighbour entries (sources/network_conf.py).

The gc thresholds (gc_thresh1/2/3) exist only in the initial namespace as well;
unres_qlen_bytes exists per device in every namespace (network_conf reads those).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ParseError, SourceUnavailable
from . import sysctls
from .base import ReadContext, Source, parse_int, register

TABLES = {"arp": "arp_cache", "ndisc": "ndisc_cache"}  # counter prefix -> file name

# The columns of current kernels, for documentation and tests; parsing is by header name.
KNOWN_COLUMNS = ("entries", "allocs", "destroys", "hash_grows", "lookups", "hits", "res_failed",
                 "rcv_probes_mcast", "rcv_probes_ucast", "periodic_gc_runs", "forced_gc_runs",
                 "unresolved_discards", "table_fulls")
GAUGE = "entries"

# Host-wide neighbour limits (only visible from the initial namespace) and the per-netns
# defaults new devices copy.
GC_KEYS = tuple(f"net.{family}.neigh.default.gc_thresh{n}" for family in ("ipv4", "ipv6") for n in (1, 2, 3))
sysctls.want(GC_KEYS + ("net.ipv4.neigh.default.unres_qlen_bytes", "net.ipv6.neigh.default.unres_qlen_bytes"),
             global_keys=GC_KEYS)


@dataclass(frozen=True)
class NeighTable:
    table: str                     # "arp" or "ndisc"
    entries: int                   # entries in the table now (gauge), all namespaces
    counters: dict[str, int]       # column -> sum over CPUs; a column the kernel lacks is absent
    cpus: int                      # rows (possible CPUs)
    host_wide: bool = True         # the kernel keeps one table for all network namespaces
    path: str = ""                 # where it was read (proc/net/stat/... or proc/1/net/stat/...)

    def get(self, name: str) -> int | None:
        return self.counters.get(name)


@dataclass(frozen=True)
class NeighbourStats:
    tables: dict[str, NeighTable] = field(default_factory=dict)
    host_wide: bool = True
    note: str = ("neighbour tables are shared by every network namespace: these counters "
                 "cover the whole host")


def parse(text: str, table: str = "arp") -> NeighTable:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError(f"{table} neighbour statistics are empty")
    header = lines[0].split()
    if not header or header[0] != GAUGE:
        raise ParseError(f"{table}: header does not start with 'entries': {lines[0][:60]!r}")
    if len(set(header)) != len(header):
        raise ParseError(f"{table}: duplicate column names in the header")
    if not all(name.replace("_", "").isalnum() and name.isascii() for name in header):
        raise ParseError(f"{table}: unexpected header {lines[0][:60]!r}")
    rows = lines[1:]
    if not rows:
        raise ParseError(f"{table}: header without any CPU row (truncated?)")
    totals: dict[str, int] = dict.fromkeys(header[1:], 0)
    entries = 0
    for number, line in enumerate(rows, 2):
        values = line.split()
        if len(values) != len(header):
            raise ParseError(f"{table} line {number}: {len(values)} values for {len(header)} columns")
        numbers = [parse_int(v, f"{table} line {number}", 16) for v in values]
        if any(n < 0 for n in numbers):
            raise ParseError(f"{table} line {number}: negative value")
        entries = numbers[0]  # the same on every row: the table's current size
        for name, value in zip(header[1:], numbers[1:]):
            totals[name] += value
    return NeighTable(table=table, entries=entries, counters=totals, cpus=len(rows))


def counters(stats: NeighbourStats) -> dict[str, int | None]:
    return {f"neigh.{prefix}.{name}": value
            for prefix, table in stats.tables.items() for name, value in table.counters.items()}


def _read_table(ctx: ReadContext, filename: str) -> tuple[str, str]:
    """Text and path of one table: this namespace's /proc/net/stat, else the host's via pid 1."""
    try:
        return ctx.read("proc", "net", "stat", filename), f"proc/net/stat/{filename}"
    except SourceUnavailable:
        return ctx.read("proc", "1", "net", "stat", filename), f"proc/1/net/stat/{filename}"


def read(ctx: ReadContext) -> NeighbourStats:
    tables: dict[str, NeighTable] = {}
    missing: list[str] = []
    for prefix, filename in TABLES.items():
        try:
            text, path = _read_table(ctx, filename)
        except SourceUnavailable as exc:  # ndisc_cache without IPv6, or no host view
            missing.append(str(exc))
            continue
        parsed = parse(text, prefix)
        tables[prefix] = NeighTable(parsed.table, parsed.entries, parsed.counters, parsed.cpus,
                                    host_wide=True, path=path)
    if not tables:
        raise SourceUnavailable("no neighbour statistics (/proc/net/stat/arp_cache, ndisc_cache): "
                                + "; ".join(missing))
    return NeighbourStats(tables)


register(Source("neighbour", read, counters,
                description="/proc/net/stat/arp_cache, ndisc_cache: neighbour table drops (host-wide)"))
