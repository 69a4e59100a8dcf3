"""A time-stepped fluid model of the Linux receive and transmit paths.

    RX  NIC ring (per queue) -> NAPI poll -> [RPS] per-CPU backlog -> IP -> UDP socket buffer -> app reads
                                                                         -> TCP SYN queue -> accept queue -> app accepts
        veth/loopback: netif_rx -> per-CPU backlog (RPS CPU) -> ...
    TX  socket -> qdisc (limit) -> link / shaper rate

Why a fluid model: the cost of a step does not depend on the packet rate, so 10 s of 1 Mpps
or 10 Mpps costs the same (about 10,000 steps of a few microseconds each), which keeps
`dropdoc sim` interactive in plain Python (no numpy needed). Each queue holds an amount of
packets; in a step of dt seconds it receives arrivals, its consumer serves up to
capacity x dt, and whatever exceeds its limit is dropped (tail drop, as the kernel does).
Random (Poisson) arrivals add the loss that small queues see even below saturation: the
M/M/1/K blocking probability in excess of the fluid loss (it tends to 0 for big queues and
to the fluid loss in overload, so the two never count the same drops twice).

TCP connection set-up is modelled with its retransmissions, because they decide how many
drops the counters show: a dropped SYN comes back 1 s, 2 s, 4 s ... later (tcp_syn_retries),
a final ACK the full accept queue refused leaves the request in the SYN queue and the
SYN-ACK is retransmitted (tcp_synack_retries) - each refusal counts again in ListenOverflows.

Everything is deterministic for a given seed. Units: seconds, packets, connections, bytes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .listener import Listener
from .params import SimParams, SimParamsError

RING = "nic.rx_missed"
BACKLOG = "cpu.backlog_drop"
SYNQ = "tcp.syn_queue_full"
ACCEPTQ = "tcp.listen_overflow"
UDPSOCK = "udp.rcvbuf_full"
QDISC = "qdisc.drop"
STAGE_ORDER = (RING, BACKLOG, SYNQ, ACCEPTQ, UDPSOCK, QDISC)
STAGE_NAMES = {RING: "NIC RX ring", BACKLOG: "CPU input backlog", SYNQ: "TCP SYN queue",
               ACCEPTQ: "TCP accept queue", UDPSOCK: "UDP socket buffer", QDISC: "qdisc (TX)"}

MAX_POINTS = 500          # occupancy points kept per stage
MAX_STEPS = 2_000_000     # refuse runs that would take minutes
# Packet classes on the shared receive stages (ring, backlog).
UDP, SYN, ACK, OTHER = 0, 1, 2, 3


@dataclass
class StageResult:
    finding: str            # catalogue finding id the stage's drops appear as
    name: str               # human name of the queue
    unit: str               # what the queue holds
    instances: int          # how many such queues share the load (rings, CPUs); 1 = one socket
    limit: float            # capacity of one instance, in `unit`
    limit_note: str         # where the limit comes from
    capacity_per_s: float | None   # service rate of all instances together (None = unlimited)
    offered: float = 0.0    # arrivals (retransmissions count again)
    new_offered: float = 0.0  # first attempts only (new connections/SYNs; packets: = offered)
    delivered: float = 0.0  # passed to the stage's consumer
    dropped: float = 0.0
    expired: float = 0.0    # SYN queue: requests that gave up (not a drop counter)
    queued_end: float = 0.0 # left in the queue(s) at the end, all instances
    peak: float = 0.0       # highest occupancy of one instance
    needed: float = 0.0     # peak of the same queue without a limit (fluid): the size that
                            # would have absorbed the load; grows without end under overload
    needed_end: float = 0.0 # that unlimited queue at the end (> 0: still not drained)
    first_arrival_s: float | None = None
    last_arrival_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class SimResult:
    params: SimParams
    seconds: float
    dt: float
    stages: dict[str, StageResult]
    occupancy: dict[str, list[tuple[float, float]]]   # queue length of one instance over time
    drops_over_time: dict[str, list[tuple[float, float]]]  # drops/s over time
    squeezes_per_s: float
    notes: list[str] = field(default_factory=list)
    bottleneck: str | None = None
    explain: str = ""
    lost_after_handshake: float = 0.0   # SYN-cookie connections whose final ACK was refused

    @property
    def drops(self) -> dict[str, float]:
        return {k: s.dropped for k, s in self.stages.items()}

    @property
    def drops_per_s(self) -> dict[str, float]:
        return {k: s.dropped / self.seconds for k, s in self.stages.items()}

    @property
    def delivered_per_s(self) -> dict[str, float]:
        return {k: s.delivered / self.seconds for k, s in self.stages.items()}

    @property
    def offered_per_s(self) -> dict[str, float]:
        return {k: s.offered / self.seconds for k, s in self.stages.items()}

    @property
    def total_drops_per_s(self) -> float:
        return sum(self.drops_per_s.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "dropdoc.sim/1",
            "seconds": self.seconds, "dt": self.dt,
            "params": self.params.to_dict(),
            "drops": _rounded(self.drops), "drops_per_s": _rounded(self.drops_per_s),
            "offered_per_s": _rounded(self.offered_per_s),
            "delivered_per_s": _rounded(self.delivered_per_s),
            "squeezes_per_s": round(self.squeezes_per_s, 3),
            "stages": {k: s.to_dict() for k, s in self.stages.items()},
            "bottleneck": self.bottleneck, "explain": self.explain, "notes": list(self.notes),
            "lost_after_handshake": round(self.lost_after_handshake, 3),
            "occupancy": {k: [[round(t, 6), round(v, 3)] for t, v in pts] for k, pts in self.occupancy.items()},
            "drops_over_time": {k: [[round(t, 6), round(v, 3)] for t, v in pts]
                                for k, pts in self.drops_over_time.items()},
        }


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


# ---- small pure helpers (unit-tested) -------------------------------------------------------

def mm1k_excess_loss(rho: float, k: float) -> float:
    """Loss probability of an M/M/1/K queue beyond the fluid loss max(0, 1 - 1/rho).

    Random arrivals overflow a queue of K even when the mean rate is below the service rate;
    the fluid part of the model already drops 1 - 1/rho in overload, so only the excess is
    added. Continuous at rho = 1 (1/(K+1)) and -> 0 for large K."""
    if rho <= 0.0 or k < 1:
        return 0.0
    if k > 100_000:
        return 0.0
    if abs(rho - 1.0) < 1e-9:
        return 1.0 / (k + 1.0)
    if rho < 1.0:
        rk = rho ** k
        return (1.0 - rho) * rk / (1.0 - rk * rho)
    r = 1.0 / rho
    rk1 = r ** (k + 1.0)
    return (1.0 - r) * rk1 / (1.0 - rk1)


def poisson_draw(rng: random.Random, mean: float) -> float:
    """A Poisson count around `mean` (normal approximation above 30: same mean and variance)."""
    if mean <= 0.0:
        return 0.0
    if mean > 30.0:
        return max(0.0, rng.gauss(mean, math.sqrt(mean)))
    limit = math.exp(-mean)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return float(count)


def default_dt(params: SimParams, seconds: float) -> float:
    """1 ms, finer for short runs or short bursts, coarser only for very long runs: at most
    ~20,000 steps keeps a run well under a second."""
    dt = 0.001
    if params.burst_length_s > 0:
        dt = min(dt, params.burst_length_s / 5.0)
    if params.rtt_s > 0 and (params.conn_rate > 0 or params.half_open_rate > 0):
        dt = min(dt, max(params.rtt_s, 1e-4))
    dt = max(dt, 5e-5, seconds / 20_000)
    return dt


def _burst_on(t: float, p: SimParams) -> bool:
    # a nanosecond of slack: 0.5 + 0.1 must end a 0.1 s burst after exactly 100 steps of 1 ms
    eps = 1e-9
    if p.burst_length_s <= 0 or p.burst_peak <= 1.0 or t < p.burst_start_s - eps:
        return False
    return ((t - p.burst_start_s + eps) % p.burst_interval_s) < p.burst_length_s


class _ClassQueue:
    """A FIFO queue shared by packet classes (tail drop); one instance stands for `instances`
    identical queues that share the load equally (RSS/RPS spread by flow hash)."""

    __slots__ = ("q", "total", "limit", "peak", "virtual", "virtual_peak")

    def __init__(self, limit: float) -> None:
        self.q = [0.0, 0.0, 0.0, 0.0]
        self.total = 0.0
        self.limit = limit
        self.peak = 0.0
        self.virtual = 0.0
        self.virtual_peak = 0.0

    def step(self, arrivals: list[float], cap: float, excess: float,
             delivered: list[float], dropped: list[float]) -> float:
        """Arrivals (per class, one instance) for one step; service up to `cap`; fills
        `delivered`/`dropped` per class; returns what was served."""
        a_total = arrivals[0] + arrivals[1] + arrivals[2] + arrivals[3]
        old = self.total
        keep = 1.0 - excess
        admitted = a_total * keep
        served = old + admitted
        if served > cap:
            served = cap
        from_old = served if served < old else old
        from_new = served - from_old
        left_new = admitted - from_new
        overflow = old - from_old + left_new - self.limit
        if overflow < 0.0:
            overflow = 0.0
        left_new -= overflow
        old_keep = (old - from_old) / old if old > 0.0 else 0.0
        old_out = 1.0 - old_keep
        new_out = from_new / admitted if admitted > 0.0 else 0.0
        new_drop = overflow / admitted if admitted > 0.0 else 0.0
        new_keep = left_new / admitted if admitted > 0.0 else 0.0
        q = self.q
        total = 0.0
        for c in (0, 1, 2, 3):
            qc = q[c]
            ac = arrivals[c]
            acd = ac * keep
            delivered[c] = qc * old_out + acd * new_out
            dropped[c] = ac - acd + acd * new_drop
            qc = qc * old_keep + acd * new_keep
            q[c] = qc
            total += qc
        self.total = total
        if total > self.peak:
            self.peak = total
        v = self.virtual + a_total - cap
        self.virtual = v if v > 0.0 else 0.0
        if self.virtual > self.virtual_peak:
            self.virtual_peak = self.virtual
        return served


class _Recorder:
    """Peak-preserving downsampling: the highest occupancy of each bucket of steps, and the
    drop rate over the bucket."""

    def __init__(self, steps: int, dt: float, keys: list[str]) -> None:
        self.every = max(1, math.ceil(steps / MAX_POINTS))
        self.dt = dt
        self.current = {k: 0.0 for k in keys}
        self.points: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
        self.drop_points: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
        self.last_drops = {k: 0.0 for k in keys}
        self.last_t = 0.0

    def note(self, key: str, value: float) -> None:
        if value > self.current[key]:
            self.current[key] = value

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def flush(self, step: int, drops: dict[str, float]) -> None:
        t = (step + 1) * self.dt
        span = t - self.last_t
        for key, value in self.current.items():
            self.points[key].append((t, value))
            self.current[key] = 0.0
            total = drops.get(key, 0.0)
            rate = (total - self.last_drops[key]) / span if span > 0 else 0.0
            self.drop_points[key].append((t, max(rate, 0.0)))
            self.last_drops[key] = total
        self.last_t = t


def simulate(params: SimParams, seconds: float = 10.0, dt: float | None = None) -> SimResult:
    """Run the model for `seconds` of simulated time with steps of `dt` (default: see
    default_dt). Deterministic for a given params.seed."""
    p = params
    if not isinstance(p, SimParams):
        raise SimParamsError("simulate() needs a SimParams")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise SimParamsError(f"seconds: expected a positive number, got {seconds!r}")
    if dt is None:
        dt = default_dt(p, seconds)
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise SimParamsError(f"dt: expected a positive number of seconds, got {dt!r}")
    steps = max(1, math.ceil(seconds / dt - 1e-9))
    if steps > MAX_STEPS:
        raise SimParamsError(f"{steps} steps of {dt:g} s: use a larger dt or a shorter run (at most {MAX_STEPS})")
    seconds = steps * dt
    rng = random.Random(p.seed)
    notes: list[str] = []

    # ---- the receive chain for this configuration -------------------------------------------
    cpu_rate = 1e6 * p.softirq_share            # CPU-microseconds per second available
    stages: dict[str, StageResult] = {}
    rx_chain: list[tuple[str, _ClassQueue, int, float]] = []   # (id, queue, instances, cost_us)
    rps = p.rps_cpus > 0
    if p.rx_path == "nic":
        rings = min(p.rx_queues, p.flows)
        ring_cpus = min(rings, p.cpus)
        cost = min(p.driver_cost_us, p.rx_cost_us) if rps else p.rx_cost_us
        # rings sharing one IRQ CPU share its time
        per_ring_cost = cost * rings / ring_cpus
        rx_chain.append((RING, _ClassQueue(float(p.ring_size)), rings, per_ring_cost))
        stages[RING] = StageResult(RING, STAGE_NAMES[RING], "packets", rings, float(p.ring_size),
                                   f"ring_size {p.ring_size} per queue, {rings} queue(s) in use",
                                   rings * _backlogged_rate(p, per_ring_cost))
        if rings < p.rx_queues:
            notes.append(f"{p.flows} flow(s) use only {rings} of {p.rx_queues} RX queues (RSS hashes flows)")
    if rps:
        cpus = min(p.rps_cpus, p.flows, p.cpus)
        cost = p.rx_cost_us - (min(p.driver_cost_us, p.rx_cost_us) if p.rx_path == "nic" else 0.0)
        cost = max(cost, 1e-3)
        rx_chain.append((BACKLOG, _ClassQueue(float(p.backlog_limit)), cpus, cost))
        stages[BACKLOG] = StageResult(BACKLOG, STAGE_NAMES[BACKLOG], "packets", cpus, float(p.backlog_limit),
                                      f"netdev_max_backlog {p.netdev_max_backlog} + 1 per CPU, {cpus} RPS CPU(s)",
                                      cpus * _backlogged_rate(p, cost))
    elif p.rx_path == "veth":
        notes.append("veth/loopback without RPS: the sending CPU drains its own backlog inline, "
                     "so the backlog does not overflow (set rps_cpus to model RPS steering)")
    syn_limit = p.syn_queue_limit
    acc_limit = float(p.accept_queue_limit)
    udp_limit = float(p.udp_queue_limit)
    stages[SYNQ] = StageResult(SYNQ, STAGE_NAMES[SYNQ], "requests", 1, syn_limit,
                               _syn_limit_note(p), None)
    stages[ACCEPTQ] = StageResult(ACCEPTQ, STAGE_NAMES[ACCEPTQ], "connections", 1, acc_limit,
                                  _accept_limit_note(p), p.accept_rate)
    stages[UDPSOCK] = StageResult(UDPSOCK, STAGE_NAMES[UDPSOCK], "datagrams", 1, udp_limit,
                                  f"sk_rcvbuf {p.rcvbuf_bytes} B / truesize {p.truesize} B per datagram",
                                  p.read_rate)
    tx_bytes_s = p.link_rate_bps / 8.0
    qdisc_limit = math.inf
    if p.qdisc_limit is not None:
        qdisc_limit = float(p.qdisc_limit)
    if p.qdisc_limit_bytes is not None:
        qdisc_limit = min(qdisc_limit, float(p.qdisc_limit_bytes // p.tx_packet_bytes))
    stages[QDISC] = StageResult(QDISC, STAGE_NAMES[QDISC], "packets", 1, qdisc_limit,
                                _qdisc_limit_note(p), tx_bytes_s / p.tx_packet_bytes)

    recorder = _Recorder(steps, dt, list(stages))
    rx_round = p.round_packets
    poisson = p.poisson
    listener = Listener(p, dt, steps)
    read_cap = math.inf if p.read_rate is None else p.read_rate * dt

    remaining = {"udp": p.udp_total, "conn": p.conn_total, "half": p.half_open_total, "tx": p.tx_total}
    udpq = qd = 0.0
    udp_virtual = qd_virtual = 0.0
    udp_vpeak = qd_vpeak = 0.0
    bucket = float(p.shaper_burst_bytes)
    squeezes = 0.0
    st_udp, st_qd = stages[UDPSOCK], stages[QDISC]
    deliv = [0.0, 0.0, 0.0, 0.0]
    drop = [0.0, 0.0, 0.0, 0.0]
    arrivals = [0.0, 0.0, 0.0, 0.0]

    def take(key: str, amount: float) -> float:
        left = remaining[key]
        if left is None:
            return amount
        if amount > left:
            amount = left
        remaining[key] = left - amount
        return amount

    def draw(mean: float) -> float:
        return poisson_draw(rng, mean) if poisson else mean

    for k in range(steps):
        t = k * dt
        mult = p.burst_peak if _burst_on(t, p) else 1.0

        # ---- new arrivals --------------------------------------------------------------------
        a_udp = take("udp", draw(p.udp_rate * mult * dt)) if p.udp_rate > 0 else 0.0
        a_conn = take("conn", draw(p.conn_rate * mult * dt)) if p.conn_rate > 0 else 0.0
        a_half = take("half", draw(p.half_open_rate * mult * dt)) if p.half_open_rate > 0 else 0.0
        a_other = draw(p.other_rate * mult * dt) if p.other_rate > 0 else 0.0
        a_tx = take("tx", draw(p.tx_rate * mult * dt)) if p.tx_rate > 0 else 0.0
        a_syn, a_ack = listener.inject(k, a_conn, a_half)

        # ---- receive chain: ring -> backlog ------------------------------------------------
        arrivals[UDP], arrivals[SYN], arrivals[ACK], arrivals[OTHER] = a_udp, a_syn, a_ack, a_other
        rx_dropped_syn = 0.0
        for finding, queue, instances, cost in rx_chain:
            st = stages[finding]
            a_total = arrivals[0] + arrivals[1] + arrivals[2] + arrivals[3]
            if a_total > 0.0:
                if st.first_arrival_s is None:
                    st.first_arrival_s = t
                st.last_arrival_s = t
            inv = 1.0 / instances
            per = [arrivals[0] * inv, arrivals[1] * inv, arrivals[2] * inv, arrivals[3] * inv]
            cap_full = dt * cpu_rate / cost
            demand = queue.total + a_total * inv
            squeezed = demand > cap_full
            cap = dt * cpu_rate * rx_round / (rx_round * cost + p.squeeze_overhead_us) if squeezed else cap_full
            excess = mm1k_excess_loss(a_total * inv / cap, queue.limit) if poisson and a_total > 0.0 else 0.0
            served = queue.step(per, cap, excess, deliv, drop)
            if squeezed:
                squeezes += instances * served / rx_round
            elif poisson and served > 0.0:
                # random arrivals: a round ends with packets waiting when a run of
                # round_packets arrivals comes faster than they are served (~rho^B)
                rho = a_total * inv / cap_full
                if rho < 1.0:
                    squeezes += instances * served / rx_round * rho ** rx_round
            st.offered += a_total
            st.new_offered += a_total
            st.dropped += (drop[0] + drop[1] + drop[2] + drop[3]) * instances
            st.delivered += served * instances
            rx_dropped_syn += drop[SYN] * instances
            for c in (0, 1, 2, 3):
                arrivals[c] = deliv[c] * instances
            recorder.note(finding, queue.total)
        d_udp = arrivals[UDP]

        # ---- TCP listener ------------------------------------------------------------------
        listener.rx_dropped(k, rx_dropped_syn, 0.0)
        listener.step(k, arrivals[SYN], arrivals[ACK])
        recorder.note(SYNQ, listener.synq)
        recorder.note(ACCEPTQ, listener.aq)

        # ---- UDP socket --------------------------------------------------------------------
        if d_udp > 0.0 or udpq > 0.0:
            if d_udp > 0.0:
                if st_udp.first_arrival_s is None:
                    st_udp.first_arrival_s = t
                st_udp.last_arrival_s = t
            excess = mm1k_excess_loss(d_udp / read_cap, udp_limit) \
                if poisson and d_udp > 0.0 and 0.0 < read_cap < math.inf else 0.0
            lost = d_udp * excess
            admitted = d_udp - lost
            read = udpq + admitted
            if read > read_cap:
                read = read_cap
            left = udpq + admitted - read
            over = left - udp_limit if left > udp_limit else 0.0
            udpq = left - over
            st_udp.offered += d_udp
            st_udp.new_offered += d_udp
            st_udp.dropped += lost + over
            st_udp.delivered += read
            if udpq > st_udp.peak:
                st_udp.peak = udpq
            udp_virtual = max(0.0, udp_virtual + d_udp - read_cap)
            if udp_virtual > udp_vpeak:
                udp_vpeak = udp_virtual
        recorder.note(UDPSOCK, udpq)

        # ---- transmit: qdisc drained by the link / shaper ----------------------------------
        if a_tx > 0.0 or qd > 0.0 or bucket < p.shaper_burst_bytes:
            if a_tx > 0.0:
                if st_qd.first_arrival_s is None:
                    st_qd.first_arrival_s = t
                st_qd.last_arrival_s = t
            budget_bytes = bucket + tx_bytes_s * dt
            cap = budget_bytes / p.tx_packet_bytes
            excess = mm1k_excess_loss(a_tx / (tx_bytes_s * dt / p.tx_packet_bytes), qdisc_limit) \
                if poisson and a_tx > 0.0 else 0.0
            lost = a_tx * excess
            admitted = a_tx - lost
            sent = qd + admitted
            if sent > cap:
                sent = cap
            left = qd + admitted - sent
            over = left - qdisc_limit if left > qdisc_limit else 0.0
            qd = left - over
            bucket = budget_bytes - sent * p.tx_packet_bytes
            if bucket > p.shaper_burst_bytes:
                bucket = float(p.shaper_burst_bytes)
            st_qd.offered += a_tx
            st_qd.new_offered += a_tx
            st_qd.dropped += lost + over
            st_qd.delivered += sent
            if qd > st_qd.peak:
                st_qd.peak = qd
            qd_virtual = max(0.0, qd_virtual + a_tx - tx_bytes_s * dt / p.tx_packet_bytes)
            if qd_virtual > qd_vpeak:
                qd_vpeak = qd_virtual
        recorder.note(QDISC, qd)
        if recorder.due(k) or k == steps - 1:
            recorder.flush(k, _cumulative_drops(stages, listener))

    # ---- end of run: what is still queued ----------------------------------------------------
    for finding, queue, instances, _cost in rx_chain:
        st = stages[finding]
        st.queued_end = queue.total * instances
        st.peak = queue.peak
        st.needed = queue.virtual_peak
        st.needed_end = queue.virtual
    _listener_results(listener, stages[SYNQ], stages[ACCEPTQ])
    st_udp.queued_end, st_qd.queued_end = udpq, qd
    st_udp.needed, st_udp.needed_end = udp_vpeak, udp_virtual
    st_qd.needed, st_qd.needed_end = qd_vpeak, qd_virtual

    result = SimResult(params=p, seconds=seconds, dt=dt, stages=stages, occupancy=recorder.points,
                       drops_over_time=recorder.drop_points,
                       squeezes_per_s=squeezes / seconds, notes=notes,
                       lost_after_handshake=listener.lost_after_handshake())
    from .explain import explain
    result.bottleneck, result.explain = explain(result)
    return result


def _steps(seconds: float, dt: float) -> int:
    return max(1, round(seconds / dt))


def _backlogged_rate(p: SimParams, cost_us: float) -> float:
    """Packets/s one CPU drains while packets wait: rounds of round_packets, each followed
    by the squeeze overhead (the softirq yields and comes back)."""
    rnd = p.round_packets
    return 1e6 * p.softirq_share * rnd / (rnd * cost_us + p.squeeze_overhead_us)


def _cumulative_drops(stages: dict[str, StageResult], listener: Listener) -> dict[str, float]:
    drops = {k: st.dropped for k, st in stages.items()}
    drops[SYNQ] = listener.c.syn_dropped
    drops[ACCEPTQ] = listener.c.acc_dropped
    return drops


def _listener_results(listener: Listener, syn: StageResult, acc: StageResult) -> None:
    c = listener.c
    syn.offered, syn.new_offered, syn.dropped = c.syn_offered, c.syn_new, c.syn_dropped
    syn.delivered, syn.expired, syn.queued_end, syn.peak = c.syn_completed, c.syn_expired, listener.synq, c.syn_peak
    # the SYN queue would also have needed a slot for every distinct SYN it refused
    syn.needed, syn.needed_end = c.syn_peak + c.syn_first_drops, listener.synq + c.syn_first_drops
    acc.offered, acc.new_offered, acc.dropped = c.acc_offered, c.acc_new, c.acc_dropped
    acc.delivered, acc.queued_end, acc.peak = c.acc_accepted, listener.aq, c.acc_peak
    acc.needed, acc.needed_end = c.acc_virtual_peak, c.acc_virtual
    for st in (syn, acc):
        st.first_arrival_s, st.last_arrival_s = c.first_s, c.last_s


def _syn_limit_note(p: SimParams) -> str:
    note = f"backlog {p.listen_backlog} + 1"
    if p.syncookies == 0:
        m = p.tcp_max_syn_backlog
        if m - (m >> 2) + 1 < p.listen_backlog + 1:
            note = f"tcp_max_syn_backlog {m} - {m >> 2} (syncookies off) + 1"
        return note + ", syncookies off: SYNs beyond it are dropped"
    if p.syncookies == 2:
        return "syncookies=2: every SYN gets a cookie, the queue is not used"
    return note + ", then SYN cookies"


def _accept_limit_note(p: SimParams) -> str:
    if p.somaxconn < p.app_backlog:
        capped = "capped by somaxconn"
    elif p.app_backlog < p.somaxconn:
        capped = "capped by the app's listen() backlog"
    else:
        capped = "equal: somaxconn is probably the cap, the app may ask for more"
    return f"min(listen backlog {p.app_backlog}, somaxconn {p.somaxconn}) + 1 ({capped})"


def _qdisc_limit_note(p: SimParams) -> str:
    parts = []
    if p.qdisc_limit is not None:
        parts.append(f"limit {p.qdisc_limit} packets")
    if p.qdisc_limit_bytes is not None:
        parts.append(f"limit {p.qdisc_limit_bytes} bytes")
    rate = f"drained at {p.link_rate_bps / 1e6:g} Mbit/s"
    if p.shaper_burst_bytes:
        rate += f", burst {p.shaper_burst_bytes} bytes"
    return ", ".join(parts + [rate]) if parts else "no limit, " + rate
