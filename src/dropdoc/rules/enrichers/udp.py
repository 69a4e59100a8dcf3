"""UDP sockets whose receive buffer overflowed."""

from __future__ import annotations


from ...model import Finding
from ...window import Window
from . import enricher
from .common import next_power_of_two, owner_fields, sysctl, sysctl_fix, who

# --- udp.rcvbuf_full ----------------------------------------------------------------------

@enricher("udp_sockets")
def udp_sockets(finding: Finding, window: Window) -> None:
    sockets = {s.inode: s for s in (window.after.data("udp_sockets") or [])}
    per_socket = []
    for name, value in window.deltas.values.items():
        if name.startswith("udpsock.") and value:
            inode = int(name.split(".")[1])
            if inode in sockets:
                per_socket.append((value, sockets[inode]))
    for drops, sock in sorted(per_socket, key=lambda item: -item[0])[:5]:
        finding.subjects.append({"socket": sock.endpoint, **owner_fields(window, sock.inode),
                                 "drops": drops, "rx_queue": sock.rx_queue})
    default = sysctl(window, "net.core.rmem_default")
    maximum = sysctl(window, "net.core.rmem_max")
    if isinstance(default, int):
        proposed = next_power_of_two(2 * default)
        finding.fixes.append(sysctl_fix(window, "net.core.rmem_default", default, proposed,
                                        "applies to sockets created afterwards: restart the receiving application"))
        if isinstance(maximum, int) and maximum < proposed:
            finding.fixes.append(sysctl_fix(window, "net.core.rmem_max", maximum, proposed,
                                            "caps what an application may ask for with SO_RCVBUF"))
    names = ", ".join(who(s) for s in finding.subjects) or "the receiving application"
    finding.fixes.append({"kind": "app", "text": (
        f"{names} reads datagrams more slowly than they arrive: set SO_RCVBUF, read in batches "
        "(recvmmsg), or spread the load over more sockets (SO_REUSEPORT)")})

