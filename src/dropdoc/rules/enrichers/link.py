"""The link layer: NIC receive rings, damaged frames and link flaps, transmit failures, and
cloud network allowances.

Counters come from two sources naming the same device: `link.<dev>.<counter>` (rtnl/sysfs
statistics and carrier changes) and `ethtool.<dev>.<stat>` (the driver's own statistics).
Drivers report one event under several names (rx_missed_errors in rtnl *and* ethtool, igb's
rx_no_buffer_count next to it): per device, counters that count the same packets are
combined with max, never added. Ring sizes, queues, link state and driver come from the
ethtool source of the window's final snapshot, and turn into fixes with measured numbers
(`ethtool -G <dev> rx <max>` only when the ring is below its maximum).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...model import Finding
from ...window import Window
from ..engine import Rule, evaluate_rule, matching, new_finding
from . import enricher, evaluator

# Counter names (in either source) that count RX-ring overruns: the same packets, so max.
RX_MISSED = ("rx_missed_errors", "rx_fifo_errors", "rx_over_errors", "rx_no_buffer_count",
             "rx_no_dma_resources", "rx_out_of_buffer", "rx_discards")
# Damaged frames by kind; the names of one kind count the same frames (max), kinds add up.
FRAME_ERRORS = {"crc": ("rx_crc_errors",), "frame": ("rx_frame_errors", "rx_align_errors"),
                "length": ("rx_length_errors",)}
CARRIER = ("carrier_changes", "carrier_up_count", "carrier_down_count")
TX_PARTS = ("tx_aborted_errors", "tx_fifo_errors", "tx_carrier_errors")
# Below this rate, transmit drops on a device without link are stray packets (IPv6 neighbour
# discovery, multicast reports to an unused bridge such as docker0 without containers).
NO_LINK_BENIGN_PER_S = 1.0
ALLOWANCES = {  # ENA statistic -> (short name, what it limits)
    "bw_in_allowance_exceeded": ("bw_in", "inbound bandwidth"),
    "bw_out_allowance_exceeded": ("bw_out", "outbound bandwidth"),
    "pps_allowance_exceeded": ("pps", "packets per second"),
    "conntrack_allowance_exceeded": ("conntrack", "tracked connections"),
    "linklocal_allowance_exceeded": ("linklocal", "link-local packets per second (DNS, IMDS, NTP)"),
}


# --- helpers --------------------------------------------------------------------------------

def split_counter(name: str) -> tuple[str, str, str] | None:
    """'link.eth0.100.rx_crc_errors' -> ('link', 'eth0.100', 'rx_crc_errors')."""
    source, sep, rest = name.partition(".")
    if source not in ("link", "ethtool") or not sep:
        return None
    device, sep, counter = rest.rpartition(".")
    return (source, device, counter) if sep and device else None


def by_device(values: dict[str, int | None]) -> dict[str, dict[str, dict[str, int]]]:
    """{device: {counter: {source: delta}}} of the known (not None) deltas."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, value in values.items():
        parts = split_counter(name)
        if parts is None or value is None:
            continue
        source, device, counter = parts
        out.setdefault(device, {}).setdefault(counter, {})[source] = value
    return out


def largest(counters: dict[str, dict[str, int]], names: tuple[str, ...]) -> int | None:
    """The largest delta among `names` in any source; None if none of them is known."""
    known = [v for name in names for v in counters.get(name, {}).values()]
    return max(known) if known else None


def moved(counters: dict[str, dict[str, int]], names: tuple[str, ...]) -> dict[str, int]:
    """{name: delta} of the names that moved (largest over the sources)."""
    out = {}
    for name in names:
        value = largest(counters, (name,))
        if value:
            out[name] = value
    return out


def nic_of(window: Window, device: str) -> Any:
    data = window.after.data("ethtool")
    return data.interfaces.get(device) if data is not None else None


def netns_prefix(window: Window) -> str:
    return f"ip netns exec {window.after.netns} " if window.after.netns else ""


def link_word(nic: Any) -> str | None:
    if nic is None or nic.link is None:
        return None
    return "up" if nic.link else "down"


def counter_evidence(values: dict[str, int | None], seconds: float) -> list[dict[str, Any]]:
    return [{"source": "counters", "counter": name, "delta": value, "rate_per_s": round(value / seconds, 3)}
            for name, value in sorted(values.items()) if value]


def not_measured(rule: Rule, window: Window, values: dict[str, int | None]) -> str | None:
    """The engine's wording when a rule cannot be evaluated; None when it can."""
    if not values or all(v is None for v in values.values()):
        reset = [c for c in window.deltas.resets if c in values]
        return "counter reset during the window" if reset else "counters not available"
    return None


def no_drops_outcome(window: Window, values: dict[str, int | None]) -> str | None:
    """Nothing moved: "no drops" (None) unless a counter it would have come from was reset."""
    if any(c in values for c in window.deltas.resets):
        return "counter reset during the window"
    return None


def _channels_fix(window: Window, device: str, channels: Any) -> dict[str, Any] | None:
    if channels is None:
        return None
    if channels.max_combined and channels.combined < channels.max_combined:
        kind, current, maximum = "combined", channels.combined, channels.max_combined
    elif channels.max_rx and channels.rx < channels.max_rx:
        kind, current, maximum = "rx", channels.rx, channels.max_rx
    else:
        return None
    command = f"{netns_prefix(window)}ethtool -L {device} {kind} {maximum}"
    return {"kind": "command", "command": command, "device": device, "setting": f"{kind} channels",
            "current": current, "proposed": maximum,
            "text": (f"{command}   # {device} uses {current} of {maximum} {kind} queues: more queues spread "
                     "the receive work over more CPUs (RSS); also resets the link on most drivers")}


SPREAD = ("spread the queue interrupts over CPUs (irqbalance, or /proc/irq/<n>/smp_affinity_list; "
          "see `grep {device} /proc/interrupts`) and check that softirq on those CPUs is not squeezed "
          "(cpu.time_squeeze); RPS (/sys/class/net/{device}/queues/rx-*/rps_cpus) helps single-queue NICs")


# --- nic.rx_missed --------------------------------------------------------------------------

@enricher("nic")
def nic(finding: Finding, window: Window) -> None:
    seconds = window.seconds or 1.0
    for device, counters in sorted(by_device(window.deltas.values).items()):
        missed = moved(counters, RX_MISSED)
        if not missed:
            continue
        worst = max(missed.values())
        nic_info = nic_of(window, device)
        subject: dict[str, Any] = {"interface": device, **missed}
        if nic_info is not None:
            subject["driver"] = nic_info.driver
            if nic_info.ring is not None:
                subject["rx_ring"], subject["rx_ring_max"] = nic_info.ring.rx, nic_info.ring.rx_max
            if nic_info.channels is not None:
                subject["queues"] = nic_info.channels.combined or nic_info.channels.rx
                subject["queues_max"] = nic_info.channels.max_combined or nic_info.channels.max_rx
        finding.subjects.append(subject)
        finding.fixes.extend(_rx_missed_fixes(window, device, worst, seconds, nic_info))


def _rx_missed_fixes(window: Window, device: str, missed: int, seconds: float, nic_info: Any) -> list[dict[str, Any]]:
    ring = nic_info.ring if nic_info is not None else None
    channels = nic_info.channels if nic_info is not None else None
    prefix = netns_prefix(window)
    if ring is None or ring.rx_max == 0:
        return [{"kind": "command", "command": f"{prefix}ethtool -g {device}", "device": device, "text": (
            f"{prefix}ethtool -g {device}   # ring sizes could not be read here: raise the RX ring to its "
            f"maximum (ethtool -G {device} rx <max>); {SPREAD.format(device=device)}")}]
    fixes: list[dict[str, Any]] = []
    if ring.rx < ring.rx_max:
        command = f"{prefix}ethtool -G {device} rx {ring.rx_max}"
        fixes.append({"kind": "command", "command": command, "device": device, "setting": "rx ring",
                      "current": ring.rx, "proposed": ring.rx_max, "text": (
                          f"{command}   # RX ring {ring.rx} -> {ring.rx_max} (its maximum): {missed} packets "
                          f"missed in {seconds:.1f} s; resets the link on most drivers; persist it (systemd .link "
                          "RxBufferSize=, NetworkManager ethtool.ring-rx)")})
        return fixes
    more_queues = _channels_fix(window, device, channels)
    if more_queues:
        fixes.append(more_queues)
    fixes.append({"kind": "config", "device": device, "text": (
        f"the RX ring of {device} is already at its maximum ({ring.rx_max}): a bigger ring is not available, "
        "the CPUs do not empty it fast enough - " + SPREAD.format(device=device))})
    return fixes


# --- nic.errors -----------------------------------------------------------------------------

@evaluator("nic_errors")
def nic_errors(rule: Rule, window: Window) -> Finding | None | str:
    values = matching(rule.drop_counters, window.deltas.values)
    flap_values = matching(tuple(f"link.*.{c}" for c in CARRIER), window.deltas.values)
    why = not_measured(rule, window, {**values, **flap_values})
    if why:
        return why
    seconds = window.seconds or 1.0
    devices = by_device({**values, **flap_values})
    subjects, drops, downs, changes = [], 0, 0, 0
    for device, counters in sorted(devices.items()):
        kinds = {kind: largest(counters, names) or 0 for kind, names in FRAME_ERRORS.items()}
        frames = sum(kinds.values())
        flaps = largest(counters, ("carrier_changes",))
        up, down = largest(counters, ("carrier_up_count",)), largest(counters, ("carrier_down_count",))
        if flaps is None and (up is not None or down is not None):
            flaps = (up or 0) + (down or 0)
        if not frames and not flaps:
            continue
        drops += frames
        changes += flaps or 0
        downs += down if down is not None else (flaps or 0) // 2
        subjects.append(_errors_subject(window, device, counters, frames, flaps, up, down))
    if not drops and not changes:
        return no_drops_outcome(window, {**values, **flap_values})
    evidence = counter_evidence(values, seconds) + [
        {"source": "counters", "counter": name, "delta": value}
        for name, value in sorted(matching(rule.evidence_counters, window.deltas.values).items()) if value]
    finding = new_finding(rule, window, drops, evidence)
    finding.subjects = subjects
    flapped = [s["interface"] for s in subjects if s.get("carrier_changes")]
    if flapped:
        finding.severity = "critical" if downs or changes >= 2 or finding.severity == "critical" else "warning"
        flap_text = (f"the link of {', '.join(flapped)} changed state {changes} time(s) during the window "
                     f"({downs} time(s) down): everything in flight while it was down was lost, and no "
                     "counter shows those packets")
        finding.summary = flap_text[0].upper() + flap_text[1:] if not drops else f"{finding.summary}; {flap_text}"
    finding.explanation = ("not tunable: damaged frames and a flapping carrier come from the cable, optic, "
                           "switch port, autonegotiation, or the driver/firmware - no sysctl or ring size helps")
    for subject in subjects:
        finding.fixes.append(_errors_fix(window, subject))
    return finding


def _errors_subject(window: Window, device: str, counters: dict[str, dict[str, int]], frames: int,
                    flaps: int | None, up: int | None, down: int | None) -> dict[str, Any]:
    subject: dict[str, Any] = {"interface": device, "damaged_frames": frames}
    for names in FRAME_ERRORS.values():
        subject.update(moved(counters, names))
    if flaps:
        subject["carrier_changes"] = flaps
        if down is not None:
            subject["went_down"] = down
        if up is not None:
            subject["came_up"] = up
    nic_info = nic_of(window, device)
    if nic_info is not None:
        subject["driver"] = nic_info.driver
        if link_word(nic_info):
            subject["link_now"] = link_word(nic_info)
        if "peer_ifindex" in nic_info.stats:
            subject["peer_ifindex"] = nic_info.stats["peer_ifindex"]
    return subject


def _errors_fix(window: Window, subject: dict[str, Any]) -> dict[str, Any]:
    device = subject["interface"]
    if subject.get("driver") == "veth":
        return {"kind": "config", "device": device, "text": (
            f"{device} is a veth: its carrier follows its peer (ifindex {subject.get('peer_ifindex', '?')}, "
            "usually in another namespace). Something set the peer down and up - a container or pod being "
            "restarted, a network manager or CNI plugin re-plumbing it: find who, in that namespace's logs")}
    driver = f" (driver {subject['driver']})" if subject.get("driver") else ""
    checks = [f"cable/optic and the switch port of {device} (the switch's own error counters for that port)",
              f"speed/duplex/autonegotiation agree on both ends (`ethtool {device}`)",
              f"the transceiver (`ethtool -m {device}`)", f"driver/firmware updates{driver}"]
    if subject.get("carrier_changes"):
        checks.insert(0, f"`dmesg | grep -i {device}` for 'link is down/up' around the flaps")
    return {"kind": "config", "device": device,
            "text": f"not tunable: check {'; '.join(checks)}"}


# --- nic.tx_errors --------------------------------------------------------------------------

@evaluator("nic_tx_errors")
def nic_tx_errors(rule: Rule, window: Window) -> Finding | None | str:
    values = matching(rule.drop_counters, window.deltas.values)
    why = not_measured(rule, window, values)
    if why:
        return why
    seconds = window.seconds or 1.0
    flaps = by_device(matching(tuple(f"link.*.{c}" for c in CARRIER), window.deltas.values))
    subjects, drops = [], 0
    for device, counters in sorted(by_device(values).items()):
        dropped = largest(counters, ("tx_dropped",)) or 0
        parts = moved(counters, TX_PARTS)
        errors = max(largest(counters, ("tx_errors",)) or 0, sum(parts.values()))
        if not dropped and not errors:
            continue
        drops += dropped + errors
        subject: dict[str, Any] = {"interface": device, "tx_dropped": dropped, "tx_errors": errors, **parts}
        carrier = largest(flaps.get(device, {}), ("carrier_changes",))
        if carrier:
            subject["carrier_changes"] = carrier
        nic_info = nic_of(window, device)
        if nic_info is not None:
            subject["driver"] = nic_info.driver
            if link_word(nic_info):
                subject["link_now"] = link_word(nic_info)
            if nic_info.ring is not None:
                subject["tx_ring"], subject["tx_ring_max"] = nic_info.ring.tx, nic_info.ring.tx_max
            if "peer_ifindex" in nic_info.stats:
                subject["peer_ifindex"] = nic_info.stats["peer_ifindex"]
        subjects.append(subject)
    if not drops:
        return no_drops_outcome(window, values)
    evidence = counter_evidence(values, seconds) + [
        {"source": "counters", "counter": name, "delta": value}
        for name, value in sorted(matching(rule.evidence_counters, window.deltas.values).items()) if value]
    finding = new_finding(rule, window, drops, evidence)
    finding.subjects = subjects
    explanations = []
    for subject in subjects:
        fixes, why_text = _tx_fixes(window, subject, seconds)
        finding.fixes.extend(fixes)
        explanations.append(why_text)
    finding.explanation = " ".join(explanations)
    if subjects and all(s.get("carrier_changes") for s in subjects) and finding.severity == "critical":
        # The drops follow from the link going down (nic.errors reports that, as critical):
        # rank the cause above its consequence.
        finding.severity = "warning"
    elif (subjects and all(s.get("link_now") == "down" for s in subjects)
          and finding.rate_per_s < NO_LINK_BENIGN_PER_S):
        finding.severity, finding.benign = "info", True
        finding.explanation = (
            f"{', '.join(s['interface'] for s in subjects)} has no link and only {finding.rate_per_s:.1f} "
            "packets/s were dropped: stray traffic to an unused device (IPv6 neighbour discovery, multicast "
            "reports to a bridge without ports such as docker0 without containers) is normal")
    return finding


def _tx_fixes(window: Window, subject: dict[str, Any], seconds: float) -> tuple[list[dict[str, Any]], str]:
    device = subject["interface"]
    prefix = netns_prefix(window)
    lost = subject["tx_dropped"] + subject["tx_errors"]
    if subject.get("carrier_changes"):
        return ([{"kind": "config", "device": device, "text": (
            f"{device} lost its link during the window ({subject['carrier_changes']} carrier changes): "
            "the transmit drops are packets sent while it was down - fix the flapping link (see nic.errors)")}],
            f"{device}: {lost} packets dropped on transmit while its link went down and up.")
    if subject.get("link_now") == "down":
        peer = ""
        if subject.get("driver") == "veth":
            peer = (f" - {device} is a veth whose peer (ifindex {subject.get('peer_ifindex', '?')}, usually in "
                    "another namespace) is down: set it up there (`ip link set <peer> up`) or stop routing to it")
        return ([{"kind": "config", "device": device, "text": (
            f"{device} is up but has no link (no carrier): every packet routed to it is dropped before the "
            f"driver ({lost} in {seconds:.1f} s), without an error to the sending application{peer}")}],
            f"{device} has no carrier: the kernel discards what is queued to a device without link "
            "(the noop qdisc counts it as tx_dropped), so senders see no error.")
    if subject.get("driver") == "veth":
        return ([{"kind": "config", "device": device, "text": (
            f"{device} is a veth: it drops on transmit when its peer (ifindex {subject.get('peer_ifindex', '?')}) "
            "cannot take the packet - the peer is down, or the frame is larger than the peer's MTU: compare "
            f"`ip link show {device}` with the peer's MTU in its namespace and make them equal")}],
            f"{device}: a veth counts tx_dropped when its peer refuses the frame.")
    fixes: list[dict[str, Any]] = []
    if subject.get("tx_ring") is not None and subject["tx_ring"] < subject.get("tx_ring_max", 0):
        command = f"{prefix}ethtool -G {device} tx {subject['tx_ring_max']}"
        fixes.append({"kind": "command", "command": command, "device": device, "setting": "tx ring",
                      "current": subject["tx_ring"], "proposed": subject["tx_ring_max"],
                      "text": f"{command}   # TX ring {subject['tx_ring']} -> {subject['tx_ring_max']} (its maximum); "
                              "resets the link on most drivers"})
    fixes.append({"kind": "config", "device": device, "text": (
        f"check `dmesg | grep -i '{device}'` for 'transmit queue N timed out' (TX watchdog) and driver "
        f"resets; update the driver/firmware{' (' + subject['driver'] + ')' if subject.get('driver') else ''}; "
        f"check carrier, speed and duplex (`ethtool {device}`)")})
    return fixes, f"{device}: the driver failed or dropped {lost} packets on transmit."


# --- cloud.allowance_exceeded ---------------------------------------------------------------

@evaluator("cloud_allowance")
def cloud_allowance(rule: Rule, window: Window) -> Finding | None | str:
    result = window.after.results.get("ethtool")
    if result is None:
        return None  # not measured at all (a bundle from before the ethtool source)
    if not result.ok:
        return f"ethtool statistics {result.status}"
    if not matching(rule.drop_counters, window.deltas.values):
        return None  # no interface with allowance counters (not an AWS ENA NIC): nothing to exceed
    outcome = evaluate_rule(dataclasses.replace(rule, evaluator=None), window)
    if isinstance(outcome, Finding):
        _cloud_details(outcome, window)
    return outcome


def _cloud_details(finding: Finding, window: Window) -> None:
    seconds = window.seconds or 1.0
    deltas = window.deltas.values
    for device, counters in sorted(by_device(window.deltas.values).items()):
        exceeded = moved(counters, tuple(ALLOWANCES))
        if not exceeded:
            continue
        nic_info = nic_of(window, device)
        rx_packets, tx_packets = deltas.get(f"link.{device}.rx_packets"), deltas.get(f"link.{device}.tx_packets")
        rx_bytes, tx_bytes = deltas.get(f"link.{device}.rx_bytes"), deltas.get(f"link.{device}.tx_bytes")
        traffic = {
            "rx_pps": round(rx_packets / seconds) if rx_packets is not None else None,
            "tx_pps": round(tx_packets / seconds) if tx_packets is not None else None,
            "rx_mbit_s": round(rx_bytes * 8 / seconds / 1e6, 1) if rx_bytes is not None else None,
            "tx_mbit_s": round(tx_bytes * 8 / seconds / 1e6, 1) if tx_bytes is not None else None,
        }
        available = nic_info.stats.get("conntrack_allowance_available") if nic_info is not None else None
        for stat, count in exceeded.items():
            short, what = ALLOWANCES[stat]
            subject = {"interface": device, "allowance": short, "limits": what, "exceeded": count,
                       "rate_per_s": round(count / seconds, 3),
                       **{k: v for k, v in traffic.items() if v is not None}}
            if nic_info is not None:
                subject["driver"] = nic_info.driver
            if short == "conntrack" and available is not None:
                subject["conntrack_allowance_available"] = available
            finding.subjects.append(subject)
            finding.fixes.append(_allowance_fix(short, device, count, seconds, traffic, available))
    finding.explanation = (
        "the cloud hypervisor shapes this instance: these packets were queued or dropped before the guest "
        "saw them, so no kernel counter or drop reason shows them - only the ENA driver's statistics; "
        "the guest cannot raise the allowances, only use less of them or move to a bigger instance")


def _allowance_fix(short: str, device: str, count: int, seconds: float, traffic: dict[str, Any],
                   available: int | None) -> dict[str, Any]:
    times = f"{count} packets in {seconds:.1f} s"
    if short in ("bw_in", "bw_out"):
        direction = "inbound" if short == "bw_in" else "outbound"
        rate = traffic.get("rx_mbit_s" if short == "bw_in" else "tx_mbit_s")
        at = f" at {rate} Mbit/s {direction} on {device}" if rate is not None else ""
        return {"kind": "config", "allowance": short, "text": (
            f"the instance's {direction} bandwidth allowance was exceeded ({times}{at}): move to a larger or "
            "network-optimised instance type (its baseline, not the 'up to' burst figure, is what lasts), or "
            "spread the traffic over more instances; burst credits run out under sustained load")}
    if short == "pps":
        pps = [traffic.get(k) for k in ("rx_pps", "tx_pps")]
        at = f" at {sum(p for p in pps if p is not None)} packets/s (rx+tx) on {device}" if any(
            p is not None for p in pps) else ""
        return {"kind": "config", "allowance": short, "text": (
            f"the instance's packet-rate allowance was exceeded ({times}{at}): send fewer, larger packets "
            "(batching, jumbo frames - MTU 9001 inside the VPC), or a larger instance / spread the load over "
            "more instances")}
    if short == "conntrack":
        left = f"; conntrack_allowance_available is now {available}" if available is not None else ""
        return {"kind": "config", "allowance": short, "text": (
            f"the instance's connection-tracking allowance was exceeded ({times}{left}): fewer tracked flows "
            "(security-group rules that allow all traffic in both directions leave flows untracked), shorter "
            "idle timeouts for short-lived flows, or a larger instance")}
    return {"kind": "app", "allowance": short, "text": (
        f"the link-local allowance (1024 packets/s per ENI to the Amazon DNS resolver, instance metadata and "
        f"time sync) was exceeded ({times}): cache DNS locally (systemd-resolved, unbound, nscd) and poll "
        "instance metadata less often")}
