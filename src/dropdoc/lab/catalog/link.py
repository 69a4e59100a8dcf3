"""Link-layer scenarios: what a veth pair can reproduce of the NIC findings.

- veth-peer-down (nic.tx_errors): the server end of the pair is down while the client keeps a
  permanent neighbour entry for it (as CNI plugins install for a pod's gateway). Every datagram
  the client sends is discarded on transmit - the device has no carrier, the kernel's noop qdisc
  drops and counts it as tx_dropped - and the sending application gets no error at all.
- link-flap (nic.errors): the server end goes down and up three times during the window; the
  client's veth loses its carrier each time (carrier_changes +6, 3 of them down).

Not reproducible here: nic.rx_missed (a veth has no RX ring and no hardware to miss),
damaged frames (no FCS on a veth), cloud.allowance_exceeded (needs a cloud hypervisor).

Run as a program, this module is the lab's link flapper:
    python -m dropdoc.lab.catalog.link flap [--times 3] [--down 0.2] [--up 0.3]
It only runs inside a network namespace other than the initial one, only touches the lab's
own veth (the one `dd*` interface of that namespace), is bounded in count and time, always
leaves the interface up, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import struct
import sys
import time

from ..model import CLIENT, SERVER, Program, Scenario
from ..topology import SERVER_ADDRESS

UDP_PORT = 9000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _pin_server_neighbour(lab) -> None:  # noqa: ANN001 - LabNet (import cycle otherwise)
    """A permanent neighbour entry on the client for the server, with the server's MAC."""
    shown = json.loads(lab.run(lab.server_ns, "ip", "-j", "link", "show", "dev", lab.server_if))
    lab.run(lab.client_ns, "ip", "neigh", "replace", SERVER_ADDRESS, "lladdr", shown[0]["address"],
            "dev", lab.client_if, "nud", "permanent")


def _peer_down(lab) -> None:  # noqa: ANN001
    _pin_server_neighbour(lab)
    lab.run(lab.server_ns, "ip", "link", "set", "dev", lab.server_if, "down")


SCENARIOS = (
    Scenario(
        name="veth-peer-down",
        description=("the server end of the veth pair is down while the client keeps a permanent "
                     "neighbour entry for it (as CNI plugins install for a pod's gateway); 12000 UDP "
                     "datagrams at 4000/s are discarded on transmit with no error to the sender"),
        expected_finding="nic.tx_errors",
        setup=_peer_down,
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{UDP_PORT}", "--packets", "12000", "--rate", "4000",
                        "--size", "200", "--max-seconds", "3.2")),),
        window=3.5,
        measure_side=CLIENT,
        fixable=False,  # the fix is bringing the link back, not a sysctl
    ),
    Scenario(
        name="link-flap",
        description=("the server end of the veth pair goes down and up 3 times during the window "
                     "(a flapping switch port, a container being re-plumbed): the client's link "
                     "loses its carrier each time"),
        expected_finding="nic.errors",
        loads=(Program(SERVER, "dropdoc.lab.catalog.link", ("flap", "--times", "3", "--down", "0.2", "--up", "0.3")),),
        window=2.5,
        measure_side=CLIENT,
        fixable=False,  # not tunable
    ),
)


# --- the flapper program ----------------------------------------------------------------------

def _lab_interface() -> str | None:
    """The lab's veth if this namespace is a lab namespace: nothing but lo and one dd* device.
    (The initial namespace always has other devices; /proc/1/ns/net is not always readable.)"""
    names = [name for _index, name in socket.if_nameindex() if name != "lo"]
    if len(names) != 1 or not names[0].startswith("dd"):
        return None
    try:
        if os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino:
            return None
    except OSError:
        pass  # pid 1's namespace unreadable (containers): the device check above decides
    return names[0]


def _set_up(sock: socket.socket, ifname: str, up: bool) -> None:
    request = struct.pack("16sH", ifname.encode(), 0).ljust(40, b"\0")
    flags = struct.unpack_from("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH", ifname.encode(), flags).ljust(40, b"\0"))


def flap(ifname: str, times: int, down: float, up: float) -> dict[str, object]:
    start = time.monotonic()
    done = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            for _ in range(times):
                _set_up(sock, ifname, False)
                time.sleep(down)
                _set_up(sock, ifname, True)
                done += 1
                time.sleep(up)
        finally:
            _set_up(sock, ifname, True)
    return {"interface": ifname, "flaps": done, "seconds": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropdoc.lab.catalog.link", description="lab link flapper")
    parser.add_argument("action", choices=["flap"])
    parser.add_argument("--times", type=int, default=3)
    parser.add_argument("--down", type=float, default=0.2, help="seconds down per flap")
    parser.add_argument("--up", type=float, default=0.3, help="seconds up after each flap")
    args = parser.parse_args(argv)
    ifname = _lab_interface()
    if ifname is None:
        print("refusing to flap links outside a lab network namespace (only lo and one dd* device)",
              file=sys.stderr)
        return 2
    times = max(0, min(args.times, 10))
    down, up = max(0.0, min(args.down, 2.0)), max(0.0, min(args.up, 2.0))
    print(json.dumps(flap(ifname, times, down, up)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
