"""Network-layer faults: reverse-path filter, missing route, routing loop, packet too big,
fragments that never complete, an unresolved neighbour.

Only lab addresses (198.18.0.0/15) on lab veth pairs; every load is bounded in count and
time. Routed scenarios use the client - router - server topology (Scenario(router=True),
see lab/topology.py): client 198.18.1.2, router 198.18.1.1 / 198.18.0.2, server 198.18.0.1;
client and server reach the whole lab range through the router and nothing beyond it.
Sysctls are written inside the lab namespaces only (never on the host).
"""

from __future__ import annotations

import json

from ... import netns as netns_mod
from ..model import CLIENT, ROUTER, SERVER, Program, Scenario
from ..topology import ROUTER_CLIENT_ADDRESS, SERVER_ADDRESS, LabError, LabNet

UDP_PORT = 9000
TARGET = f"{SERVER_ADDRESS}:{UDP_PORT}"

# rp-filter: a source prefix the server routes out of a second interface.
SPOOFED_PREFIX, SPOOFED_SOURCE = "198.18.5.0/24", "198.18.5.2"
# no-route / ttl-exceeded: lab destinations beyond the server.
UNROUTED = "198.18.9.1"
LOOP_PREFIX, LOOPED = "198.18.8.0/24", "198.18.8.1"
SMALL_MTU = 1280
# neigh-unresolved: an on-link prefix next to the server's /30 where nobody answers ARP.
SILENT_PREFIX, SILENT_NEIGHBOUR = "198.18.0.4/30", "198.18.0.5"
TINY_UNRES_QLEN = 2048  # bytes: about one small packet


def _sysctl(ns: str, key: str, value: int) -> None:
    """Write a per-namespace sysctl inside lab namespace ns (keys may name lab interfaces)."""
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with netns_mod.entered(ns), open(path, "w", encoding="utf-8") as handle:
            handle.write(str(value))
    except OSError as exc:
        raise LabError(f"{key}={value} in {ns}: {exc.strerror}") from exc


def _burst(side: str, target: str, packets: int, rate: int, seconds: float, *extra: str) -> Program:
    return Program(side, "dropdoc.lab.udp_burst", ("--target", target, "--packets", str(packets),
                                                   "--rate", str(rate), "--max-seconds", str(seconds), *extra))

# --- rp-filter ----------------------------------------------------------------------------

def _rp_filter(lab: LabNet) -> None:
    """Server: strict rp_filter on its veth, and the route back to 198.18.5.0/24 through a
    second (lab-internal) interface. Client: sends from 198.18.5.2, a secondary address.
    The server's MAC is set statically on the client: the server would not answer ARP
    from a source its filter rejects."""
    side_a, side_b = f"dd{lab.tag}x", f"dd{lab.tag}y"
    lab.run(lab.server_ns, "ip", "link", "add", side_a, "type", "veth", "peer", "name", side_b)
    for ifname in (side_a, side_b):
        lab.run(lab.server_ns, "ip", "link", "set", ifname, "up")
    lab.run(lab.server_ns, "ip", "route", "add", SPOOFED_PREFIX, "dev", side_a)
    _sysctl(lab.server_ns, f"net.ipv4.conf.{lab.server_if}.rp_filter", 1)
    lab.run(lab.client_ns, "ip", "addr", "add", f"{SPOOFED_SOURCE}/32", "dev", lab.client_if)
    lab.run(lab.client_ns, "ip", "route", "replace", f"{SERVER_ADDRESS}/32", "dev", lab.client_if,
            "src", SPOOFED_SOURCE)
    links = json.loads(lab.run(lab.server_ns, "ip", "-j", "link", "show", "dev", lab.server_if))
    lab.run(lab.client_ns, "ip", "neigh", "replace", SERVER_ADDRESS, "lladdr", links[0]["address"],
            "dev", lab.client_if, "nud", "permanent")

# --- ttl-exceeded / frag-needed / reassembly-timeout / neigh-unresolved ---------------------

def _routing_loop(lab: LabNet) -> None:
    """The router sends 198.18.8.0/24 to the server, the server (forwarding on) sends the
    whole lab range back to the router: packets bounce until their TTL runs out."""
    lab.run(lab.router_ns, "ip", "route", "add", LOOP_PREFIX, "via", SERVER_ADDRESS)
    _sysctl(lab.server_ns, "net.ipv4.ip_forward", 1)


def _small_mtu_link(lab: LabNet) -> None:
    """The router - server link gets MTU 1280. The client's route locks the path MTU at 1500,
    so like a sender behind an ICMP-filtering firewall it never learns the smaller MTU and
    keeps sending 1428-byte don't-fragment packets."""
    for ns, ifname in ((lab.router_ns, lab.router_server_if), (lab.server_ns, lab.server_if)):
        lab.run(ns, "ip", "link", "set", "dev", ifname, "mtu", str(SMALL_MTU))
    lab.run(lab.client_ns, "ip", "route", "replace", "198.18.0.0/24", "via", ROUTER_CLIENT_ADDRESS,
            "mtu", "lock", "1500")


FRAGMENT_FILTER = """
table ip ddlab_frag {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip frag-off & 0x1fff != 0 drop comment "dropdoc lab: a firewall that drops non-first fragments"
  }
}
"""


def _lost_fragments(lab: LabNet) -> None:
    """The router drops every non-first fragment (as firewalls without reassembly do); the
    server waits ipfrag_time = 1 s for the rest of each datagram, then gives up."""
    lab.run(lab.router_ns, "nft", "-f", "-", stdin=FRAGMENT_FILTER)
    _sysctl(lab.server_ns, "net.ipv4.ipfrag_time", 1)


def _silent_neighbour(lab: LabNet) -> None:
    """198.18.0.4/30 is on-link on the server's veth, 198.18.0.5 does not exist: ARP for it
    goes unanswered on the lab veth, and with unres_qlen_bytes at 2048 the queue of packets
    waiting for the answer overflows at once."""
    lab.run(lab.server_ns, "ip", "route", "add", SILENT_PREFIX, "dev", lab.server_if)
    _sysctl(lab.server_ns, f"net.ipv4.neigh.{lab.server_if}.unres_qlen_bytes", TINY_UNRES_QLEN)


SCENARIOS = (
    Scenario(
        name="rp-filter",
        description=("the server filters its veth in strict reverse-path mode while its route back to "
                     f"{SPOOFED_PREFIX} leaves through another interface; the client sends 1500 datagrams "
                     f"from {SPOOFED_SOURCE}: asymmetric routing, every packet dropped by rp_filter"),
        expected_finding="ip.rp_filter",
        setup=_rp_filter,
        # a receiver, so that datagrams passing the filter after the fix are delivered
        servers=(Program(SERVER, "dropdoc.lab.udp_sink", ("--port", str(UDP_PORT), "--name", "collector",
                                                          "--max-seconds", "60"), wait_ready=True),),
        loads=(_burst(CLIENT, TARGET, 1500, 500, 3.0),),
        window=4.0,
        fixable=True,  # rp_filter 1 -> 2 (loose) on the server's veth: the route back exists
    ),
    Scenario(
        name="no-route",
        description=(f"client - router - server: the router has no route for {UNROUTED} (and no default "
                     "route); the client sends 1500 datagrams to it through the router"),
        expected_finding="ip.no_route",
        router=True,
        loads=(_burst(CLIENT, f"{UNROUTED}:{UDP_PORT}", 1500, 500, 3.0),),
        measure_side=ROUTER,
        window=4.0,
        fixable=False,
    ),
    Scenario(
        name="ttl-exceeded",
        description=(f"client - router - server: a routing loop for {LOOP_PREFIX} between router and server; "
                     f"600 datagrams to {LOOPED} bounce ~31 times each way until their TTL expires at the server"),
        expected_finding="ip.ttl_exceeded",
        router=True,
        setup=_routing_loop,
        loads=(_burst(CLIENT, f"{LOOPED}:{UDP_PORT}", 600, 200, 3.0),),
        measure_side=SERVER,
        window=4.0,
        fixable=False,
    ),
    Scenario(
        name="frag-needed",
        description=(f"client - router - server with a {SMALL_MTU}-byte MTU on the router - server link; the "
                     "client sends 1400-byte don't-fragment datagrams and never learns the smaller path MTU"),
        expected_finding="ip.frag_needed",
        router=True,
        setup=_small_mtu_link,
        loads=(_burst(CLIENT, TARGET, 1000, 300, 3.0, "--size", "1400", "--df"),),
        measure_side=ROUTER,
        window=4.0,
        fixable=False,
    ),
    Scenario(
        name="reassembly-timeout",
        description=("client - router - server: the client sends 300 datagrams of 3000 bytes (3 fragments "
                     "each), a firewall on the router drops every non-first fragment, the server (ipfrag_time "
                     "1 s) times out waiting for the rest"),
        expected_finding="ip.reassembly_timeout",
        router=True,
        setup=_lost_fragments,
        loads=(_burst(CLIENT, TARGET, 300, 100, 3.0, "--size", "3000"),),
        measure_side=SERVER,
        window=5.0,
        fixable=False,
    ),
    Scenario(
        name="neigh-unresolved",
        description=(f"the server sends 2000 datagrams to {SILENT_NEIGHBOUR}, an on-link lab address nobody "
                     f"answers ARP for, with unres_qlen_bytes {TINY_UNRES_QLEN}: the queue of packets waiting "
                     "for the neighbour overflows (counted host-wide; attributed by the namespace's INCOMPLETE "
                     "neighbour entry)"),
        expected_finding="neigh.unresolved",
        setup=_silent_neighbour,
        loads=(_burst(SERVER, f"{SILENT_NEIGHBOUR}:{UDP_PORT}", 2000, 1000, 3.0),),
        window=4.0,
        fixable=False,
    ),
)
