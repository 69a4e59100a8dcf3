"""The per-CPU softirq backlog."""

from __future__ import annotations


from ...model import Finding
from ...window import Window
from . import enricher
from .common import next_power_of_two, sysctl, sysctl_fix

# --- cpu.backlog_drop ---------------------------------------------------------------------

@enricher("softnet")
def softnet(finding: Finding, window: Window) -> None:
    for name, value in sorted(window.deltas.values.items()):
        if name.startswith("softnet.cpu") and name.endswith(".dropped") and value:
            finding.subjects.append({"cpu": int(name.split(".")[1][3:]), "drops": value})
    current = sysctl(window, "net.core.netdev_max_backlog")
    if isinstance(current, int):
        finding.fixes.append(sysctl_fix(window, "net.core.netdev_max_backlog", current,
                                        next_power_of_two(2 * current),
                                        "global: changes the whole host, not only this namespace"))
    if len(finding.subjects) == 1:
        finding.fixes.append({"kind": "config", "text": (
            f"all drops are on CPU {finding.subjects[0]['cpu']}: spread receive processing with RSS "
            "(more NIC queues) or RPS (/sys/class/net/<dev>/queues/rx-*/rps_cpus)")})

