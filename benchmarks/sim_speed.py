"""How long `dropdoc sim` takes: 10 s of simulated time at 1 Mpps and 10 Mpps.

The model is a fluid: a step costs the same whatever the packet rate, so both should take
the same time. Target (issue 8): 10 s of 1 Mpps in under 2 s. Prints the best of a few runs
(wall clock, this machine) for several configurations.

    .venv/bin/python benchmarks/sim_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from dropdoc.sim import SimParams, simulate

CASES = {
    "udp 1 Mpps (nic, 8 queues)": SimParams(udp_rate=1e6, read_rate=9e5),
    "udp 10 Mpps (nic, 8 queues)": SimParams(udp_rate=1e7, read_rate=9e5),
    "udp 1 Mpps + RPS backlog + bursts": SimParams(udp_rate=1e6, rps_cpus=2, burst_peak=4, burst_length_s=0.05,
                                                   burst_interval_s=0.5),
    "10 Mpps everything (rx, 5k conn/s, tx 1 Mpps)": SimParams(
        udp_rate=1e7, other_rate=1e6, conn_rate=5000, accept_rate=3000, somaxconn=128, tx_rate=1e6,
        rps_cpus=4, burst_peak=3, burst_length_s=0.05, burst_interval_s=1.0),
    "reference case (400 conn/s, somaxconn 16)": SimParams(
        rx_path="veth", conn_rate=400, conn_total=400, somaxconn=16, app_backlog=1024, accept_rate=100, rtt_s=1e-4),
}


def best_of(params: SimParams, seconds: float, repeat: int) -> tuple[float, float, int]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = simulate(params, seconds=seconds)
        best = min(best, time.perf_counter() - start)
    steps = round(result.seconds / result.dt)
    return best, result.dt, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds")
    args = parser.parse_args()
    print(f"{'case':48} {'sim s':>6} {'dt ms':>6} {'steps':>7} {'wall s':>7} {'x real time':>11}")
    for name, params in CASES.items():
        wall, dt, steps = best_of(params, args.seconds, args.repeat)
        print(f"{name:48} {args.seconds:6g} {dt * 1e3:6.3g} {steps:7d} {wall:7.3f} {args.seconds / wall:11.0f}")


if __name__ == "__main__":
    main()
