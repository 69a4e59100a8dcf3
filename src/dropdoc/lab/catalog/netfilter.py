"""Firewall and connection tracking: a rule that drops, a conntrack table that is full.

netfilter-drop: an nft table in the server namespace drops UDP to port 9000 (where a
"metrics" receiver listens) and rejects TCP to 8081, each rule with a counter and a
comment; the client sends a bounded burst to both.

conntrack-full: nf_conntrack_max is ONE host-wide limit (a child namespace cannot write it,
and every namespace's own count is compared against it), so the only way to fill a lab
namespace's table quickly is to lower it on the host for the few seconds of the scenario:
through lab.set_host_sysctl (restored on teardown, also on errors and Ctrl-C), and only
after checking that no network namespace on the machine has more than a small fraction of
the lowered limit in use. Otherwise the scenario refuses to run (ScenarioSkipped) rather than
drop the host's own connections.
"""

from __future__ import annotations

import ctypes
import os

from ..model import CLIENT, SERVER, Program, Scenario
from ..topology import SERVER_ADDRESS, LabError, LabNet

FW_TABLE = "ddlab_fw"
UDP_PORT, TCP_PORT = 9000, 8081
FIREWALL = f"""
table inet {FW_TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {UDP_PORT} counter drop comment "dropdoc lab: block udp {UDP_PORT}"
    tcp dport {TCP_PORT} counter reject with tcp reset comment "dropdoc lab: refuse tcp {TCP_PORT}"
  }}
}}
"""

CT_MAX_KEY = "net.netfilter.nf_conntrack_max"
CT_LOWERED = 1024
# Every namespace's nf_conntrack_count must be at most this share of the lowered limit.
CT_SAFE_SHARE = 8
CT_PORT = 9100
CT_TRACKING = """
table inet ddlab_ct {
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    ct state new counter comment "dropdoc lab: track new flows"
  }
}
"""


class ScenarioSkipped(LabError):
    """The scenario cannot run safely on this machine right now (the message says why)."""


def _firewall(lab: LabNet) -> None:
    lab.run(lab.server_ns, "nft", "-f", "-", stdin=FIREWALL)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _read_count_in(ns_path: str) -> int | None:
    """nf_conntrack_count inside the network namespace behind ns_path (None: unreadable)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(home)
        return None
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            return None
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_count", encoding="ascii") as handle:
                return int(handle.read())
        except (OSError, ValueError):
            return None
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen as root
                raise LabError("could not return to the host network namespace")
    finally:
        os.close(target)
        os.close(home)


def conntrack_counts() -> dict[str, int]:
    """nf_conntrack_count of every network namespace in use on the machine (processes' and
    named ones), keyed by a readable label."""
    paths: dict[int, str] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            path = f"/proc/{pid}/ns/net"
            try:
                paths.setdefault(os.stat(path).st_ino, path)
            except OSError:
                continue
    try:
        for name in os.listdir("/run/netns"):
            path = f"/run/netns/{name}"
            try:
                paths.setdefault(os.stat(path).st_ino, path)
            except OSError:
                continue
    except OSError:
        pass
    counts = {}
    for inode, path in paths.items():
        count = _read_count_in(path)
        if count is not None:
            counts[f"{path} (net:[{inode}])"] = count
    return counts


def check_conntrack_room(lowered: int = CT_LOWERED) -> None:
    """Raise ScenarioSkipped unless lowering nf_conntrack_max to `lowered` is safe now."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_max", encoding="ascii") as handle:
            current = int(handle.read())
    except (OSError, ValueError):
        raise ScenarioSkipped("conntrack-full skipped: nf_conntrack is not available on this host") from None
    if current <= lowered:
        raise ScenarioSkipped(f"conntrack-full skipped: the host's nf_conntrack_max is already {current}")
    counts = conntrack_counts()
    if not counts:
        raise ScenarioSkipped("conntrack-full skipped: could not read nf_conntrack_count of the host namespace")
    limit = lowered // CT_SAFE_SHARE
    busy = {label: count for label, count in counts.items() if count > limit}
    if busy:
        label, count = max(busy.items(), key=lambda item: item[1])
        raise ScenarioSkipped(
            f"conntrack-full skipped: nf_conntrack_max is host-wide and {len(busy)} network namespace(s) "
            f"track more than {limit} connections (e.g. {count} in {label}); lowering the limit to "
            f"{lowered} for the scenario would drop their connections")


def _fill_conntrack(lab: LabNet) -> None:
    check_conntrack_room()
    lab.run(lab.server_ns, "nft", "-f", "-", stdin=CT_TRACKING)  # conntrack on in the server netns
    lab.set_host_sysctl(CT_MAX_KEY, CT_LOWERED)


SCENARIOS = (
    Scenario(
        name="netfilter-drop",
        description=(f"an nft rule in the server namespace drops UDP to port {UDP_PORT}, where a metrics "
                     f"receiver listens, and another rejects TCP to {TCP_PORT}; the client sends 10000 "
                     f"datagrams and 100 connection attempts"),
        expected_finding="netfilter.drop",
        setup=_firewall,
        servers=(Program(SERVER, "dropdoc.lab.udp_sink", ("--port", str(UDP_PORT), "--name", "metrics",
                                                          "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{UDP_PORT}", "--packets", "10000", "--rate", "4000",
                        "--max-seconds", "4")),
               Program(CLIENT, "dropdoc.lab.client",
                       ("--target", f"{SERVER_ADDRESS}:{TCP_PORT}", "--connections", "100", "--rate", "50",
                        "--max-seconds", "3"))),
        window=5.0,
        fixable=False,  # a firewall rule is a policy decision: dropdoc names it, it does not delete it
    ),
    Scenario(
        name="conntrack-full",
        description=(f"conntrack is on in the server namespace and the host-wide nf_conntrack_max is "
                     f"lowered to {CT_LOWERED} for the scenario (restored afterwards; refused when any "
                     f"namespace tracks more than {CT_LOWERED // CT_SAFE_SHARE} connections); the client "
                     f"sends 3000 datagrams to port {CT_PORT}, each from a new source port: a new flow"),
        expected_finding="conntrack.table_full",
        setup=_fill_conntrack,
        servers=(Program(SERVER, "dropdoc.lab.udp_sink", ("--port", str(CT_PORT), "--name", "collector",
                                                          "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{CT_PORT}", "--packets", "3000", "--rate", "1000",
                        "--max-seconds", "4", "--fresh-source")),),
        window=5.0,
        fixable=True,  # nf_conntrack_max is global: the lab's --fix sets it host-wide (restored on teardown)
    ),
)
