"""/proc/net/softnet_stat: one line of hex u32 columns per online CPU, no header.

The column set grew over time, so this is the one file parsed by position:
  3.10 (10 columns): processed dropped time_squeeze 0 0 0 0 0 cpu_collision received_rps
  3.11+ (11):        ... flow_limit_count
  5.10+ (13):        ... backlog_len cpu_index
  6.x  (15):         ... input_qlen process_qlen
Without the cpu_index column the line number is the CPU, which is wrong when CPUs are
offline: we keep such CPUs as "line N" so the user is not told a wrong CPU number.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParseError
from .base import Source, parse_int, register


@dataclass(frozen=True)
class CpuSoftnet:
    cpu: int
    cpu_known: bool  # False: numbered by line (kernel < 5.10 prints no cpu index)
    processed: int
    dropped: int
    time_squeeze: int
    received_rps: int | None
    flow_limit_count: int | None
    backlog_len: int | None


def parse(text: str) -> list[CpuSoftnet]:
    cpus: list[CpuSoftnet] = []
    for line_no, line in enumerate(l for l in text.splitlines() if l.strip()):
        cols = [parse_int(tok, f"softnet_stat line {line_no + 1}", 16) for tok in line.split()]
        if len(cols) < 10:
            raise ParseError(f"softnet_stat line {line_no + 1}: {len(cols)} columns, expected at least 10")

        def col(index: int) -> int | None:
            return cols[index] if len(cols) > index else None

        cpu_index = col(12)
        cpus.append(CpuSoftnet(
            cpu=cpu_index if cpu_index is not None else line_no,
            cpu_known=cpu_index is not None,
            processed=cols[0], dropped=cols[1], time_squeeze=cols[2],
            received_rps=cols[9], flow_limit_count=col(10), backlog_len=col(11),
        ))
    if not cpus:
        raise ParseError("softnet_stat is empty")
    return cpus


def counters(cpus: list[CpuSoftnet]) -> dict[str, int | None]:
    # Per CPU only: each is a u32 that wraps on its own, so a host-wide sum would be
    # neither a u32 nor monotonic (a CPU coming online adds its whole history).
    flat: dict[str, int | None] = {}
    for name in ("processed", "dropped", "time_squeeze"):
        for c in cpus:
            flat[f"softnet.cpu{c.cpu}.{name}"] = getattr(c, name)
    return flat


register(Source("softnet", lambda ctx: parse(ctx.read("proc", "net", "softnet_stat")), counters,
                counter_bits=32, description="/proc/net/softnet_stat: per-CPU backlog drops"))
