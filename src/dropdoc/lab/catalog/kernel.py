"""Kernel-layer faults: a qdisc that drops on transmit, the per-CPU softirq backlog, and a
softirq that runs out of budget.

The two softirq scenarios change a GLOBAL sysctl for the few seconds they run (through
lab.set_host_sysctl, restored on teardown) and steer the server veth's receive processing
to one CPU with RPS (a setting of the lab's own device, gone with its namespace).
/proc/net/softnet_stat is host-wide: what they measure includes the rest of the host.
"""

import os

from ..model import CLIENT, SERVER, Program, Scenario
from ..topology import CLIENT_ADDRESS, SERVER_ADDRESS

UDP_PORT = 9000
UDP_TARGET = f"{SERVER_ADDRESS}:{UDP_PORT}"

# qdisc-drop: the client's veth egress gets a token-bucket shaper at 100 Mbit/s whose queue
# holds 20 kB. One bounded burst of 2000 datagrams of 1000 bytes leaves Python at ~2 Gbit/s
# (measured 250k datagrams/s): the bucket drains 12.5 MB/s, so most of the burst finds the
# queue full. Averaged over the window the traffic is far below the rate: a burst case,
# the limit is what to raise (and the rate is named as the cap).
TBF = ("rate", "100mbit", "burst", "16kb", "limit", "20kb")
# cpu-backlog: net.core.netdev_max_backlog lowered to 1 (a CPU's backlog holds 2 packets).
BACKLOG = 1
# cpu-backlog: a linear nftables input chain of this many rules in the server namespace, none
# of which matches, walked by every datagram on the RPS CPU (~40 ns a rule here): receiving
# costs that CPU 30-55 us a datagram (/proc/stat softirq time / softnet processed), so it
# drains ~20-30k/s while the two senders offer 200-400k/s. The drops are then set by
# throughput (arrivals - what the CPU drains - the backlog), which counters measure, and not
# by how fast an idle CPU wakes up for a 2-packet queue, which none does: without the rules
# the same lab lost 2-49 % of the burst from run to run (docs/sim.md).
FIREWALL_RULES = 1000
# time-squeeze: net.core.netdev_budget lowered to 4 packets per softirq round.
BUDGET = 4
# Enough receive buffer for the whole burst (SO_RCVBUFFORCE: rmem_max is read-only in a
# child netns), so the socket is not where packets die.
BIG_RCVBUF = 1 << 26


def _qdisc_setup(lab) -> None:
    lab.run(lab.client_ns, "tc", "qdisc", "add", "dev", lab.client_if, "root", "handle", "1:", "tbf", *TBF)


def _rps_to_one_cpu(lab) -> None:
    # veth without XDP/GRO hands every packet to a CPU's input backlog (netif_rx ->
    # enqueue_to_backlog); RPS picks that CPU: all of them land on the last one.
    cpu = max((os.cpu_count() or 1) - 1, 0)
    lab.run(lab.server_ns, "sh", "-c",
            f"echo {1 << cpu:x} > /sys/class/net/{lab.server_if}/queues/rx-0/rps_cpus")


def _costly_firewall(lab) -> None:
    # a rule with no statement does nothing even if it matches, and none does (the lab sends
    # to port 9000): every datagram walks all of them on the RPS CPU and is accepted
    rules = "".join(f"  ip saddr {CLIENT_ADDRESS} ip daddr {SERVER_ADDRESS} udp dport {10000 + i}\n"
                    for i in range(FIREWALL_RULES))
    lab.run(lab.server_ns, "nft", "-f", "-", stdin=(
        "table inet ddlab_cost {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        f"{rules} }}\n}}\n"))


def _backlog_setup(lab) -> None:
    lab.set_host_sysctl("net.core.netdev_max_backlog", BACKLOG)
    _rps_to_one_cpu(lab)
    _costly_firewall(lab)


def _squeeze_setup(lab) -> None:
    lab.set_host_sysctl("net.core.netdev_budget", BUDGET)
    _rps_to_one_cpu(lab)


def _sink(*extra: str) -> Program:
    return Program(SERVER, "dropdoc.lab.udp_sink",
                   ("--host", "0.0.0.0", "--port", str(UDP_PORT), "--read-rate", "0",
                    "--name", "udp-sink", "--max-seconds", "60", *extra), wait_ready=True)


def _burst(packets: int, size: int, seconds: float, pin: bool = False) -> Program:
    # pin: the sender on CPU 0, away from the RPS CPU (the last one). A sender that runs on
    # the RPS CPU itself has its packets processed inline at each send (local_bh_enable),
    # one at a time: the backlog never grows and no round runs out of budget - measured
    # here, 2 of 5 unpinned runs showed no squeeze at all.
    cpu = ("--cpu", "0") if pin and (os.cpu_count() or 1) > 1 else ()
    return Program(CLIENT, "dropdoc.lab.udp_burst",
                   ("--target", UDP_TARGET, "--packets", str(packets), "--size", str(size), "--rate", "0",
                    "--max-seconds", str(seconds), *cpu))


SCENARIOS = (
    Scenario(
        name="qdisc-drop",
        description=("a token-bucket shaper (tbf 100mbit, limit 20kb) on the client's veth egress; a "
                     "bounded burst of 2000 UDP datagrams overflows its queue on the sending side"),
        expected_finding="qdisc.drop",
        setup=_qdisc_setup,
        servers=(_sink(),),
        loads=(_burst(2000, 1000, 3),),
        window=3.0,
        measure_side=CLIENT,
        fixable=False,  # the tbf limit is a tc command for the administrator (`change` rewrites rate/burst)
    ),
    Scenario(
        name="cpu-backlog",
        description=(f"net.core.netdev_max_backlog lowered host-wide to {BACKLOG} (restored afterwards), "
                     f"RPS steering the server veth to one CPU and a {FIREWALL_RULES}-rule nftables input chain "
                     "that makes each datagram cost it tens of microseconds; two bounded UDP bursts arrive "
                     "faster than that CPU drains and overflow its input backlog"),
        expected_finding="cpu.backlog_drop",
        setup=_backlog_setup,
        servers=(_sink("--rcvbuf", str(BIG_RCVBUF), "--rcvbuf-force"),),
        loads=(_burst(20000, 64, 2, pin=True), _burst(20000, 64, 2, pin=True)),
        window=3.0,
        measure_side=SERVER,
        fixable=True,  # netdev_max_backlog is global: the lab's --fix sets it host-wide (restored on teardown)
    ),
    Scenario(
        name="time-squeeze",
        description=(f"net.core.netdev_budget lowered host-wide to {BUDGET} packets per softirq round "
                     "(restored afterwards) and RPS steering the server veth to one CPU; two bounded UDP "
                     "bursts make that CPU's softirq yield with packets still waiting"),
        expected_finding="cpu.time_squeeze",
        setup=_squeeze_setup,
        servers=(_sink("--rcvbuf", str(BIG_RCVBUF), "--rcvbuf-force"),),
        loads=(_burst(40000, 64, 2, pin=True), _burst(40000, 64, 2, pin=True)),
        window=3.0,
        measure_side=SERVER,
        fixable=True,  # netdev_budget is global: the lab's --fix sets it host-wide (restored on teardown)
    ),
)
