"""The TCP listener of the model: SYN queue, accept queue and the retransmissions that decide
how often the kernel counts a drop.

What the kernel does (tcp_conn_request, tcp_check_req; measured on 6.x in the lab):
- a SYN first meets the SYN queue: full when qlen > backlog (syncookies off: also when less
  than a quarter of tcp_max_syn_backlog is left). Full -> dropped (TCPReqQFullDrop) with
  syncookies=0, answered with a cookie (no queue entry) with syncookies=1, always with 2;
- then the accept queue: full when its length > backlog -> the SYN is dropped and counted
  in ListenOverflows; the client retransmits it after 1 s, 2 s, 4 s ... (tcp_syn_retries);
- a final ACK that finds the accept queue full is dropped and counted in ListenOverflows
  again. A queued request stays in the SYN queue marked "acked": the server does not
  retransmit its SYN-ACK (syn_ack_recalc) and drops it after its timeouts (tcp_synack_retries;
  2 when the queue is more than half full). The client believes it is connected: its first
  data (or its FIN when it closes) and their retransmissions (RTO from 200 ms, doubling)
  try again each time - for a cookie connection that is the only way to complete. Each
  refusal counts again (measured in the lab: SyncookiesRecv 4-5x SyncookiesSent).

Connections whose handshake was admitted together form a cohort that shares its future
attempt times; an attempt offers what is left of the cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .params import SimParams

TCP_RETRIES2 = 15          # retransmissions of an established connection's segment


@dataclass
class Cohort:
    queued: bool             # True: a request in the SYN queue; False: a SYN-cookie connection
    remaining: float
    attempts: list[int]      # steps at which (what is left of) the cohort tries to complete
    expire_step: int | None  # queued requests leave the SYN queue then
    next_index: int = 0
    first_pending: bool = True


@dataclass
class ListenerCounters:
    syn_offered: float = 0.0
    syn_new: float = 0.0
    syn_dropped: float = 0.0
    syn_completed: float = 0.0
    syn_expired: float = 0.0
    syn_first_drops: float = 0.0
    acc_offered: float = 0.0
    acc_new: float = 0.0
    acc_dropped: float = 0.0
    acc_accepted: float = 0.0
    syn_peak: float = 0.0
    acc_peak: float = 0.0
    acc_virtual: float = 0.0
    acc_virtual_peak: float = 0.0
    first_s: float | None = None
    last_s: float | None = None


@dataclass
class Listener:
    p: SimParams
    dt: float
    steps: int
    synq: float = 0.0
    aq: float = 0.0
    pending_first: float = 0.0
    c: ListenerCounters = field(default_factory=ListenerCounters)
    cohorts: list[Cohort] = field(default_factory=list)
    # step -> {(kind, level): amount}; kinds 'c' SYN that will complete, 'h' half-open SYN,
    # 'x' half-open requests expiring; ('a', cohort index) an attempt of a cohort
    events: dict[int, dict[tuple[str, int], float]] = field(default_factory=dict)
    syn_mix: dict[tuple[str, int], float] = field(default_factory=dict)
    ack_mix: dict[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.p
        self.syn_limit = p.syn_queue_limit
        self.acc_limit = float(p.accept_queue_limit)
        self.rtt_steps = max(1, round(p.rtt_s / self.dt))
        self.fast_handshake = p.rtt_s < self.dt
        self.accept_cap = math.inf if p.accept_rate is None else p.accept_rate * self.dt
        self.half_backlog = max(8.0, float(p.listen_backlog))

    # ---- scheduling helpers ------------------------------------------------------------------
    def _at(self, seconds_from_now: float, k: int) -> int:
        return k + max(1, round(seconds_from_now / self.dt))

    def _add(self, step: int, key: tuple[str, int], amount: float) -> None:
        if amount <= 0.0 or step >= self.steps:
            return
        slot = self.events.setdefault(step, {})
        slot[key] = slot.get(key, 0.0) + amount

    def _client_may_retry(self, level: int, retry_step: int) -> bool:
        p = self.p
        if level >= p.syn_retries:
            return False
        if p.client_give_up_s is not None and (2 ** (level + 1) - 1) > p.client_give_up_s:
            return False
        if p.client_close_at_s is not None and retry_step * self.dt >= p.client_close_at_s:
            return False
        return True

    def _synack_retries(self) -> int:
        # reqsk_timer_handler: with the queue more than half full, old requests get 2 retries
        retries = self.p.synack_retries
        if self.synq * 2.0 > self.half_backlog:
            retries = min(retries, 2)
        return retries

    def _cohort_attempts(self, k: int, queued: bool, immediate: bool) -> tuple[list[int], int | None]:
        p, dt = self.p, self.dt
        rtt = p.rtt_s
        first = k + self.rtt_steps
        times = set() if immediate else {first}
        expire = None
        if queued:
            # A request whose ACK arrived but was refused is marked acked: the server does
            # not retransmit its SYN-ACK (syn_ack_recalc), it waits for the client's next
            # segment until the request times out (fewer timeouts when the queue is half full).
            expire = self._at(2 ** (self._synack_retries() + 1) - 1, k)
        handshake = k * dt + rtt
        give_up = math.inf if p.client_give_up_s is None else k * dt + p.client_give_up_s
        close = math.inf if p.client_close_at_s is None else max(p.client_close_at_s, handshake)
        streams = []
        if p.client_sends_after_s is not None:
            streams.append((handshake + p.client_sends_after_s, close))     # data, until it closes
        if p.client_close_at_s is not None:
            streams.append((close, math.inf))                             # its FIN
        for start, stop in streams:
            rto = p.client_rto_s
            t = start
            for _ in range(TCP_RETRIES2 + 1):
                if t >= stop or t >= give_up:
                    break
                times.add(max(k + 1, round(t / dt)))
                t += rto
                rto *= 2
        end = self.steps if expire is None else min(expire, self.steps)
        return sorted(s for s in times if s < end), expire

    def _new_cohort(self, k: int, queued: bool, amount: float) -> None:
        """Admitted handshakes. With an RTT shorter than a step the final ACK is handled at
        once (nothing can be accepted in between); otherwise it arrives rtt later."""
        if amount <= 0.0:
            return
        immediate = self.fast_handshake
        attempts, expire = self._cohort_attempts(k, queued, immediate)
        index = len(self.cohorts)
        cohort = Cohort(queued, amount, attempts, expire, first_pending=not immediate)
        self.cohorts.append(cohort)
        if immediate:
            self._complete(cohort, amount)
        else:
            self.pending_first += amount
        if attempts and cohort.remaining > 1e-9:
            self._add(attempts[0], ("a", index), 1.0)
            cohort.next_index = 1
        if expire is not None:
            self._add(expire, ("e", index), 1.0)

    # ---- one step ---------------------------------------------------------------------------
    def inject(self, k: int, new_completing: float, new_half: float) -> tuple[float, float]:
        """SYNs and final ACKs (packets) that reach the host in step k: (syn, ack)."""
        syn_mix: dict[tuple[str, int], float] = {}
        ack_mix: dict[tuple[str, int], float] = {}
        if new_completing > 0.0:
            syn_mix[("c", 0)] = new_completing
        if new_half > 0.0:
            syn_mix[("h", 0)] = new_half
        due = self.events.pop(k, None)
        if due:
            for key, amount in due.items():
                kind = key[0]
                if kind in ("c", "h"):
                    syn_mix[key] = syn_mix.get(key, 0.0) + amount
                elif kind == "x":
                    self._leave_synq(amount)
                elif kind == "e":
                    cohort = self.cohorts[key[1]]
                    self._leave_synq(cohort.remaining)
                    if cohort.first_pending:
                        self.pending_first -= cohort.remaining
                    cohort.remaining = 0.0
                else:  # an attempt of a cohort: what is left of it tries again
                    index = key[1]
                    cohort = self.cohorts[index]
                    if cohort.first_pending:
                        cohort.first_pending = False
                        self.pending_first = max(0.0, self.pending_first - cohort.remaining)
                    if cohort.remaining > 1e-9:
                        ack_mix[key] = cohort.remaining
                    if cohort.next_index < len(cohort.attempts):
                        self._add(cohort.attempts[cohort.next_index], key, 1.0)
                        cohort.next_index += 1
        a_syn = sum(syn_mix.values()) if syn_mix else 0.0
        a_ack = sum(ack_mix.values()) if ack_mix else 0.0
        if a_syn > 0.0:
            self.syn_mix = syn_mix
        if a_ack > 0.0:
            self.ack_mix = ack_mix
        t = k * self.dt
        new = new_completing + new_half
        self.c.syn_new += new
        self.c.acc_new += new_completing
        if new > 0.0:
            if self.c.first_s is None:
                self.c.first_s = t
            self.c.last_s = t
        if new_completing > 0.0 or self.c.acc_virtual > 0.0:
            v = self.c.acc_virtual + new_completing - self.accept_cap
            self.c.acc_virtual = v if v > 0.0 else 0.0
            if self.c.acc_virtual > self.c.acc_virtual_peak:
                self.c.acc_virtual_peak = self.c.acc_virtual
        return a_syn, a_ack

    def _leave_synq(self, amount: float) -> None:
        self.synq = max(0.0, self.synq - amount)
        self.c.syn_expired += amount

    def rx_dropped(self, k: int, syn: float, ack: float) -> None:
        """Packets the receive chain dropped before the listener saw them: SYNs come back as
        client retransmissions; a lost ACK is one failed attempt (its cohort tries again)."""
        if syn > 0.0 and self.syn_mix:
            self._retry_syns(k, syn)

    def _retry_syns(self, k: int, dropped: float) -> None:
        total = sum(self.syn_mix.values())
        for (kind, level), share in self.syn_mix.items():
            retry = self._at(2 ** level, k)
            if self._client_may_retry(level, retry):
                self._add(retry, (kind, level + 1), dropped * share / total)

    def step(self, k: int, d_syn: float, d_ack: float) -> None:
        c = self.c
        # the application accepts first: what it takes frees room for this step's arrivals
        if self.aq > 0.0:
            accepted = self.aq if self.aq < self.accept_cap else self.accept_cap
            self.aq -= accepted
            c.acc_accepted += accepted
        if d_ack > 0.0 and self.ack_mix:
            self._acks(d_ack)
        if d_syn > 0.0 and self.syn_mix:
            self._syns(k, d_syn)
        if self.aq > c.acc_peak:
            c.acc_peak = self.aq
        if self.synq > c.syn_peak:
            c.syn_peak = self.synq

    def _acks(self, d_ack: float) -> None:
        total = sum(self.ack_mix.values())
        for (_, index), share in self.ack_mix.items():
            self._complete(self.cohorts[index], d_ack * share / total)

    def _complete(self, cohort: Cohort, amount: float) -> None:
        """Final ACKs (or data/FIN) of `amount` of the cohort meet the accept queue."""
        c = self.c
        if amount > cohort.remaining:
            amount = cohort.remaining
        c.acc_offered += amount
        space = self.acc_limit - self.aq
        moved = amount if amount < space else (space if space > 0.0 else 0.0)
        self.aq += moved
        cohort.remaining -= moved
        if cohort.queued:
            self.synq = max(0.0, self.synq - moved)
            c.syn_completed += moved
        c.acc_dropped += amount - moved

    def _syns(self, k: int, d_syn: float) -> None:
        p, c = self.p, self.c
        total = sum(self.syn_mix.values())
        completing = sum(v for (kind, _), v in self.syn_mix.items() if kind == "c") * d_syn / total
        c.syn_offered += d_syn
        # 1. the SYN queue
        if p.syncookies == 2:
            queued_frac, cookie_frac = 0.0, 1.0
        else:
            room = self.syn_limit - self.synq
            queued_frac = 1.0 if room >= d_syn else (room / d_syn if room > 0.0 else 0.0)
            cookie_frac = (1.0 - queued_frac) if p.syncookies == 1 else 0.0
        syn_drop = d_syn * (1.0 - queued_frac - cookie_frac)
        # 2. the accept queue full (length > backlog): a listen overflow
        occupied = self.aq + (self.pending_first if self.fast_handshake else 0.0)
        free = self.acc_limit - occupied
        candidates = d_syn * (queued_frac + cookie_frac)
        cand_completing = completing * (queued_frac + cookie_frac)
        if free <= 0.0:
            admit = 0.0
        elif self.fast_handshake:
            # each admitted SYN's ACK takes a slot before the next batch of SYNs arrives;
            # the SYNs of one batch all see the same free slot
            room = free * p.arrival_batch
            admit = 1.0 if cand_completing <= room else room / cand_completing
        else:
            # the queue is open for a fraction of the step that grows with the free room
            admit = free if free < 1.0 else 1.0
        overflow = candidates * (1.0 - admit)
        c.syn_dropped += syn_drop
        level0 = sum(v for (_, level), v in self.syn_mix.items() if level == 0) / total
        c.syn_first_drops += syn_drop * level0
        c.acc_offered += overflow
        c.acc_dropped += overflow
        if syn_drop + overflow > 0.0:
            self._retry_syns(k, syn_drop + overflow)
        # 3. admitted: requests wait in the SYN queue for their ACK; cookies keep no state
        scale = d_syn / total * admit
        new_queued = new_cookie = 0.0
        for (kind, _), share in self.syn_mix.items():
            amount = share * scale
            if kind == "c":
                new_queued += amount * queued_frac
                new_cookie += amount * cookie_frac
            else:
                queued = amount * queued_frac
                self.synq += queued
                retries = self._synack_retries()
                self._add(self._at(2 ** (retries + 1) - 1, k), ("x", 0), queued)
        self.synq += new_queued
        self._new_cohort(k, True, new_queued)
        self._new_cohort(k, False, new_cookie)

    def lost_after_handshake(self) -> float:
        """Cookie connections still refused at the end: the client thinks it is connected."""
        return sum(c.remaining for c in self.cohorts if not c.queued)
