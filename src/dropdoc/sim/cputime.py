"""Per-CPU time from /proc/stat, and what the softirq costs per received packet.

The model's rx_cost_us (softirq CPU time per received packet) is in no counter, but two
counters give it over a window: the CPU time a CPU spent in softirq (/proc/stat, column
`softirq`) divided by the packets it processed (/proc/net/softnet_stat, `processed`). Both
are host-wide, so the value describes a CPU, not a namespace.

How good it is (measured on this kernel, 2 vCPUs, CONFIG_HZ 250, no IRQ_TIME_ACCOUNTING):
- /proc/stat times are sampled by the timer tick (4 ms here) and printed in USER_HZ units
  (10 ms): a delta is good to +-10 ms, so below MIN_SOFTIRQ_S of softirq the value says
  nothing. A CPU that receives a flood spends hundreds of ms in softirq: a few per cent.
- the softirq column holds every softirq of that CPU (timers, RCU, TX completions too):
  the cost is an upper bound, close when receiving dominates (the only case where the
  cost decides anything: a CPU that drains its backlog slower than packets arrive).
- a CPU that is idle between packets may run a short softirq without a tick seeing it
  (NOHZ): at low rates the cost is under-sampled, hence MIN_PACKETS as well.

Everything here is pure except read(); times are in seconds, CPUs named "cpuN" as in
/proc/stat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# Below these the tick sampling and the 10 ms print resolution make the cost noise.
MIN_SOFTIRQ_S = 0.03
MIN_PACKETS = 1000

CpuTimes = dict[str, dict[str, float]]


def user_hz() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (AttributeError, ValueError, OSError):
        return 100


def parse(text: str, hz: int | None = None) -> CpuTimes:
    """Per-CPU lines of /proc/stat ("cpuN user nice system idle iowait irq softirq steal ...")
    in seconds; the all-CPU "cpu" line and malformed lines are skipped."""
    hz = hz or user_hz()
    out: CpuTimes = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu") or not parts[0][3:].isdigit():
            continue
        try:
            values = [int(v) for v in parts[1:1 + len(FIELDS)]]
        except ValueError:
            continue
        out[parts[0]] = {name: value / hz for name, value in zip(FIELDS, values)}
    return out


def read(path: str = "/proc/stat") -> CpuTimes | None:
    """This host's per-CPU times now; None when /proc/stat cannot be read."""
    try:
        with open(path, encoding="ascii") as handle:
            return parse(handle.read())
    except (OSError, UnicodeDecodeError):
        return None


def delta(before: CpuTimes | None, after: CpuTimes | None) -> CpuTimes:
    """after - before per CPU and field (CPUs present in both; a field that went backwards,
    e.g. a CPU taken offline and back, is left out rather than reported negative)."""
    if not before or not after:
        return {}
    out: CpuTimes = {}
    for cpu, old in before.items():
        new = after.get(cpu)
        if new is None:
            continue
        out[cpu] = {k: round(new[k] - v, 3) for k, v in old.items() if k in new and new[k] >= v}
    return out


@dataclass(frozen=True)
class SoftirqCost:
    """rx_cost_us of one CPU over a window, and the counters it comes from."""
    cpu: int
    cost_us: float
    softirq_s: float
    processed: int
    steal_s: float | None

    def describe(self) -> str:
        return (f"/proc/stat softirq {self.softirq_s:.2f} s / softnet processed {self.processed} "
                f"on CPU {self.cpu} (an upper bound: every softirq of that CPU)")


def softirq_cost(times: CpuTimes, processed: dict[int, int | None],
                 dropped: dict[int, int | None] | None = None, cpu: int | None = None) -> SoftirqCost | None:
    """rx_cost_us of `cpu` - by default the CPU whose backlog dropped most, else the one that
    processed most (the CPU a backlog finding is about) - from its softirq time and the
    packets it processed over the same window. None when that CPU spent too little time in
    softirq or processed too few packets for the tick-sampled time to mean anything."""
    if cpu is None:
        drops = {c: d for c, d in (dropped or {}).items() if d}
        counts = drops or {c: p for c, p in processed.items() if p}
        if not counts:
            return None
        cpu = max(counts, key=lambda c: counts[c])
    own = times.get(f"cpu{cpu}", {})
    packets = processed.get(cpu)
    softirq = own.get("softirq")
    if not packets or packets < MIN_PACKETS or softirq is None or softirq < MIN_SOFTIRQ_S:
        return None
    return SoftirqCost(cpu, 1e6 * softirq / packets, softirq, packets, own.get("steal"))


def softirq_share(cost: SoftirqCost, seconds: float) -> float | None:
    """Share of that CPU the softirq can have: 1 - its steal time (a vCPU the hypervisor
    ran something else on) over the window; None without steal. Time other tasks on the CPU
    took from a deferred softirq (ksoftirqd) is not in it: no window counter says when the
    softirq had work."""
    if not cost.steal_s or seconds <= 0:
        return None
    return max(1.0 - cost.steal_s / seconds, 0.05)


__all__ = ["FIELDS", "MIN_PACKETS", "MIN_SOFTIRQ_S", "CpuTimes", "SoftirqCost", "delta", "parse", "read",
           "softirq_cost", "softirq_share", "user_hz"]
