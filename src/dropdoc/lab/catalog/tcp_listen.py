"""The reference case and its healthy control."""

from ..model import CLIENT, PORT, SERVER, Program, Scenario
from ..topology import SERVER_ADDRESS

TARGET = f"{SERVER_ADDRESS}:{PORT}"
ORDER = 0  # the reference case comes first in `dropdoc lab list`

SCENARIOS = (
    Scenario(
        name="listen-overflow",
        description=("the reference case: somaxconn lowered to 16 silently caps a server that "
                     "asks listen() for 1024 and accepts 100 connections/s; a burst of 400 "
                     "connections overflows its accept queue"),
        expected_finding="tcp.listen_overflow",
        server_sysctls={"net.core.somaxconn": 16},
        servers=(Program(SERVER, "dropdoc.lab.server",
                         ("--port", str(PORT), "--backlog", "1024", "--accept-rate", "100",
                          "--name", "payments"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.client",
                       ("--target", TARGET, "--connections", "400", "--rate", "400", "--max-seconds", "4")),),
        window=5.0,
    ),
    Scenario(
        name="healthy",
        description=("control: a server with default limits that accepts as fast as it can "
                     "receives the same kind of load; nothing may be reported as a problem"),
        expected_finding=None,
        servers=(Program(SERVER, "dropdoc.lab.server",
                         ("--port", str(PORT), "--backlog", "1024", "--accept-rate", "0",
                          "--name", "payments"), wait_ready=True),),
        loads=(Program(CLIENT, "dropdoc.lab.client",
                       ("--target", TARGET, "--connections", "200", "--rate", "200", "--max-seconds", "3")),),
        window=3.0,
        fixable=False,
    ),
)
