"""Transport and socket layer scenarios: UDP receive buffer, closed UDP ports, SYN queue,
TCP flow control (a control), socket filters.

Not reproduced here, on purpose: tcp.memory_pressure and udp.memory need the host-wide
net.ipv4.tcp_mem / udp_mem lowered below what the whole host uses, which would hit every
other TCP/UDP user of the machine (and every test running beside the lab) - they are
covered by fixture-based rule tests. tcp.backlog_drop, tcp.rcvq_drop and tcp.paws_drop
need a receiver holding its socket lock under a flood, memory pressure, or forged
timestamps: fixture-based as well. udp.sndbuf is fixture-based too.
"""

from ..model import CLIENT, SERVER, Program, Scenario
from ..topology import SERVER_ADDRESS

UDP_PORT = 9000
CLOSED_PORT = 9999
SYN_PORT = 8080
STREAM_PORT = 8081
FILTER_PORT = 9001
SYN_BACKLOG = 8


def _drop_client_acks(lab) -> None:
    """In the client namespace only: drop every segment to the server port except SYNs, so
    the client's final ACK never arrives and each handshake stays half-open on the server."""
    lab.run(lab.client_ns, "nft", "-f", "-", stdin=(
        "table inet ddlab_syn {\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {SERVER_ADDRESS} tcp dport {SYN_PORT} tcp flags & syn == 0 counter drop\n"
        "  }\n"
        "}\n"))


SCENARIOS = (
    Scenario(
        name="udp-rcvbuf",
        description=("a metrics receiver with a 4 KiB SO_RCVBUF that reads 50 datagrams/s gets a "
                     "bounded burst of 3000 datagrams at 1000/s: its receive buffer overflows"),
        expected_finding="udp.rcvbuf_full",
        servers=(Program(SERVER, "dropdoc.lab.udp_sink",
                         ("--port", str(UDP_PORT), "--rcvbuf", "4096", "--read-rate", "50",
                          "--name", "metrics", "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{UDP_PORT}", "--packets", "3000", "--size", "512",
                        "--rate", "1000", "--max-seconds", "3")),),
        window=3.5,
        fixable=False,  # the cap is the application's own SO_RCVBUF: the fix is in the app
    ),
    Scenario(
        name="udp-no-port",
        description=("a client sends 1000 datagrams at 400/s to a UDP port nothing listens on: "
                     "far above the benign rate of scans and late DNS answers"),
        expected_finding="udp.no_port",
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{CLOSED_PORT}", "--packets", "1000", "--size", "64",
                        "--rate", "400", "--max-seconds", "3")),),
        window=3.0,
        fixable=False,
    ),
    Scenario(
        name="udp-no-port-low",
        description=("control: 20 datagrams at 8/s to a closed UDP port, like a port scan or "
                     "traceroute (every ICMP port unreachable fails the sender's next send, so about "
                     "half arrive): reported as benign, the host is healthy"),
        expected_finding=None,
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{CLOSED_PORT}", "--packets", "20", "--size", "64",
                        "--rate", "8", "--max-seconds", "2.5")),),
        window=3.0,
        fixable=False,
        benign_expected=("udp.no_port",),
    ),
    Scenario(
        name="syn-queue-full",
        description=(f"SYN cookies off and a server listening with a backlog of {SYN_BACKLOG}; the "
                     "client's final ACKs are dropped (nft in the client namespace), so every "
                     "handshake stays half-open and fills the SYN queue: further SYNs are dropped"),
        expected_finding="tcp.syn_queue_full",
        server_sysctls={"net.ipv4.tcp_syncookies": 0},
        setup=_drop_client_acks,
        servers=(Program(SERVER, "dropdoc.lab.server",
                         ("--port", str(SYN_PORT), "--backlog", str(SYN_BACKLOG), "--accept-rate", "0",
                          "--name", "gateway", "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.client",
                       ("--target", f"{SERVER_ADDRESS}:{SYN_PORT}", "--connections", "150", "--rate", "100",
                        "--max-seconds", "3")),),
        window=3.5,
    ),
    Scenario(
        name="tcp-zero-window",
        description=("control: a receiver that stops reading while a sender pushes 8 MB: TCP "
                     "closes the window and the sender waits (flow control); nothing is lost"),
        expected_finding=None,
        servers=(Program(SERVER, "dropdoc.lab.tcp_stream",
                         ("recv", "--port", str(STREAM_PORT), "--read-after", "-1", "--name", "slowreader",
                          "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.tcp_stream",
                       ("send", "--target", f"{SERVER_ADDRESS}:{STREAM_PORT}", "--bytes", "8000000",
                        "--max-seconds", "2.5")),),
        window=3.0,
        fixable=False,
        benign_expected=("tcp.rcvq_drop",),
    ),
    Scenario(
        name="socket-filter-drop",
        description=("a UDP receiver with a classic BPF socket filter `ret #0` (SO_ATTACH_FILTER) "
                     "that rejects every datagram gets 2000 datagrams at 1000/s"),
        expected_finding="socket.filter_drop",
        servers=(Program(SERVER, "dropdoc.lab.udp_sink",
                         ("--port", str(FILTER_PORT), "--filter", "drop-all", "--name", "filtered",
                          "--max-seconds", "60"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.udp_burst",
                       ("--target", f"{SERVER_ADDRESS}:{FILTER_PORT}", "--packets", "2000", "--size", "128",
                        "--rate", "1000", "--max-seconds", "3")),),
        window=3.0,
        fixable=False,
    ),
)
