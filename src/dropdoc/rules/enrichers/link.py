"""NIC receive rings."""

from __future__ import annotations


from ...model import Finding
from ...window import Window
from . import enricher

# --- nic.rx_missed ------------------------------------------------------------------------

@enricher("nic")
def nic(finding: Finding, window: Window) -> None:
    per_device: dict[str, dict[str, int]] = {}
    for name, value in window.deltas.values.items():
        if not name.startswith("link.") or not value:
            continue
        device, _, counter = name[len("link."):].rpartition(".")  # VLAN devices: eth0.100
        if device and counter in ("rx_missed_errors", "rx_fifo_errors", "rx_over_errors"):
            per_device.setdefault(device, {})[counter] = value
    for device, counters in sorted(per_device.items()):
        finding.subjects.append({"interface": device, **counters})
        finding.fixes.append({"kind": "command", "text": (
            f"ethtool -g {device}  # then raise the RX ring to its maximum: ethtool -G {device} rx <max>; "
            "also check IRQ/RSS spread (ethtool -l, /proc/interrupts)")})
