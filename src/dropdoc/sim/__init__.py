"""Packet-path simulator: "what if" for the receive and transmit paths before changing a server.

    from dropdoc.sim import SimParams, simulate
    result = simulate(SimParams(conn_rate=400, accept_rate=100, somaxconn=16), seconds=5)
    result.drops_per_s["tcp.listen_overflow"], result.bottleneck, result.explain

See docs/sim.md for the model, its assumptions and how it is calibrated.
"""

from .model import STAGE_ORDER, SimResult, StageResult, simulate
from .params import SimParams, SimParamsError, describe, udp_truesize

__all__ = ["SimParams", "SimParamsError", "SimResult", "StageResult", "STAGE_ORDER", "simulate",
           "describe", "udp_truesize"]
