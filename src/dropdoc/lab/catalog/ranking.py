"""Ranking: two simultaneous causes of loss in one window, in the same server namespace.

The reference case's accept-queue overflow (somaxconn 16 under a server asking for 1024
and accepting 100/s, a burst of 400 connections) runs next to a UDP receiver that never
reads (SO_RCVBUF 4 KiB) getting a bounded burst of 8000 datagrams. Both are critical;
the report must list both and rank them by severity, then drop rate. The UDP burst is
sized to drop several times faster (~1500/s) than the accept queue (~250/s), so the
top finding is udp.rcvbuf_full; the functional test derives the order from the
measured rates rather than trusting this estimate.
"""

from ..model import CLIENT, PORT, SERVER, Program, Scenario
from ..topology import SERVER_ADDRESS

UDP_PORT = 9100

SCENARIOS = (
    Scenario(
        name="two-causes",
        description=("two causes at once in the server namespace: the listen-overflow reference "
                     "case (somaxconn 16, 400-connection burst) and a UDP receiver that never reads "
                     "(4 KiB buffer) hit by 8000 datagrams; both must be reported, ranked by "
                     "severity then drop rate"),
        expected_finding="udp.rcvbuf_full",
        server_sysctls={"net.core.somaxconn": 16},
        servers=(
            Program(SERVER, "dropdoc.lab.server",
                    ("--port", str(PORT), "--backlog", "1024", "--accept-rate", "100",
                     "--name", "payments", "--max-seconds", "60"), wait_ready=True),
            Program(SERVER, "dropdoc.lab.udp_sink",
                    ("--port", str(UDP_PORT), "--rcvbuf", "4096", "--read-rate", "-1",
                     "--name", "collector", "--max-seconds", "60"), wait_ready=True),
        ),
        loads=(
            Program(CLIENT, "dropdoc.lab.client",
                    ("--target", f"{SERVER_ADDRESS}:{PORT}", "--connections", "400", "--rate", "400",
                     "--max-seconds", "4")),
            Program(CLIENT, "dropdoc.lab.udp_burst",
                    ("--target", f"{SERVER_ADDRESS}:{UDP_PORT}", "--packets", "8000", "--size", "256",
                     "--rate", "2000", "--max-seconds", "4")),
        ),
        window=5.0,
        fixable=False,  # a receiver that never reads is not fixed by any buffer size
    ),
)
