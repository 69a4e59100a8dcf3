"""The parameters of the packet-path model: load, host settings and application speed.

One flat dataclass so that a scenario file, command-line flags, `--what-if key=value` and
calibration from a snapshot all address a parameter by the same name. Every field carries
its unit and meaning in `metadata["help"]`; `describe()` lists them for `dropdoc sim --help-params`.
Defaults describe a typical server (8 CPUs, NIC with 8 RX queues, stock sysctls of a current
kernel, an nginx-like listen backlog of 511) under no load.

Kernel constants here were measured on this machine's kernel (6.x): see docs/sim.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import DropdocError


class SimParamsError(DropdocError):
    """A scenario value is missing, unknown, of the wrong type or out of range."""


def _p(default: Any, unit: str, help_text: str, *, minimum: float | None = 0.0,
       maximum: float | None = None, choices: tuple[str, ...] | None = None,
       group: str = "load") -> Any:
    meta = {"unit": unit, "help": help_text, "min": minimum, "max": maximum,
            "choices": choices, "group": group}
    return field(default=default, metadata=meta)


RX_PATHS = ("nic", "veth")
# Beyond any real host (a 400 Gbit/s NIC carries ~600M minimum-size packets/s): a bigger
# value is a typo, and would only fill the tables with 300-digit numbers.
MAX_RATE = 1e9
MAX_TOTAL = 1e15


@dataclass
class SimParams:
    # ---- offered load (received) -------------------------------------------------------
    udp_rate: float = _p(0.0, "datagrams/s", "UDP datagrams per second sent to the receiving socket "
                         "(the base rate; bursts multiply it)", maximum=MAX_RATE)
    udp_total: float | None = _p(None, "datagrams", "stop after this many datagrams (a finite burst); "
                                 "none = for the whole run", maximum=MAX_TOTAL)
    udp_size: int = _p(512, "bytes", "UDP payload per datagram", maximum=65507)
    conn_rate: float = _p(0.0, "connections/s", "new TCP connections per second that complete the "
                          "handshake (SYN, then the final ACK one RTT later)", maximum=MAX_RATE)
    conn_total: float | None = _p(None, "connections", "stop after this many new connections",
                                   maximum=MAX_TOTAL)
    half_open_rate: float = _p(0.0, "SYNs/s", "SYNs per second whose handshake never completes "
                               "(SYN flood, final ACKs lost): they sit in the SYN queue",
                               maximum=MAX_RATE)
    half_open_total: float | None = _p(None, "SYNs", "stop after this many half-open SYNs",
                                        maximum=MAX_TOTAL)
    other_rate: float = _p(0.0, "packets/s", "other received packets per second (established-TCP "
                           "data, ACKs ...): they load the ring and backlog only", maximum=MAX_RATE)
    burst_peak: float = _p(1.0, "x", "rate multiplier during a burst (1 = no bursts)", minimum=1.0,
                            maximum=1e4)
    burst_length_s: float = _p(0.0, "s", "length of each burst (0 = no bursts)")
    burst_interval_s: float = _p(1.0, "s", "time from the start of one burst to the next", minimum=1e-6)
    burst_start_s: float = _p(0.0, "s", "time of the first burst")
    arrival_batch: float = _p(1.0, "packets", "arrivals come in back-to-back batches of this size "
                              "(senders that write several packets or open several connections per "
                              "wake-up); a whole batch passes a queue check before any of it is "
                              "served", minimum=1.0)
    poisson: bool = _p(True, "bool", "random (Poisson) arrivals around the rate, and the extra loss "
                       "random arrivals cause in small queues (M/M/1/K); false = a smooth fluid")
    seed: int = _p(1, "", "random seed: the same seed gives the same result")

    # ---- receive path: NIC, softirq, per-CPU backlog ----------------------------------
    rx_path: str = _p("nic", "", "nic: NIC ring -> NAPI poll (-> RPS backlog); veth: veth/loopback, "
                      "which hand every packet to a CPU's input backlog (netif_rx)",
                      choices=RX_PATHS, minimum=None, group="host")
    cpus: int = _p(8, "CPUs", "CPUs of the host", minimum=1, group="host")
    rx_queues: int = _p(8, "queues", "NIC receive queues (RSS); each has its ring and IRQ CPU",
                        minimum=1, group="host")
    flows: int = _p(1000, "flows", "distinct flows (5-tuples): RSS/RPS spread by flow hash, so "
                    "one flow uses one queue and one CPU", minimum=1, group="host")
    ring_size: int = _p(1024, "descriptors", "RX ring size per queue (ethtool -g)", minimum=1, group="host")
    rps_cpus: int = _p(0, "CPUs", "CPUs in the RPS mask (rps_cpus): packets are queued to those CPUs' "
                       "backlogs; 0 = RPS off", group="host")
    netdev_budget: int = _p(300, "packets", "net.core.netdev_budget: packets per softirq round",
                            minimum=1, group="host")
    netdev_budget_usecs: int = _p(8000, "us", "net.core.netdev_budget_usecs: time limit of a round",
                                  minimum=1, group="host")
    netdev_max_backlog: int = _p(1000, "packets", "net.core.netdev_max_backlog: per-CPU input backlog "
                                 "(the kernel queues while length <= it, so it holds one more)", group="host")
    rx_cost_us: float = _p(1.0, "us/packet", "softirq CPU time per received packet (driver, IP, "
                           "transport, socket enqueue)", minimum=1e-3, group="host")
    driver_cost_us: float = _p(0.3, "us/packet", "the part of rx_cost_us spent in the NIC driver poll "
                               "(before RPS hands the packet to another CPU)", group="host")
    softirq_share: float = _p(1.0, "fraction", "share of a CPU the softirq gets while it has work "
                              "(less when ksoftirqd competes with busy applications)",
                              minimum=1e-3, maximum=1.0, group="host")
    squeeze_overhead_us: float = _p(2.0, "us", "extra time per softirq round that ends with packets "
                                    "left (time_squeeze: re-raise, ksoftirqd hand-off)", group="host")

    # ---- TCP listener --------------------------------------------------------------------
    somaxconn: int = _p(4096, "connections", "net.core.somaxconn when the app called listen()",
                        group="tcp")
    app_backlog: int = _p(511, "connections", "backlog the app passed to listen()", group="tcp")
    tcp_max_syn_backlog: int = _p(1024, "requests", "net.ipv4.tcp_max_syn_backlog (only matters with "
                                  "syncookies off)", minimum=1, group="tcp")
    syncookies: int = _p(1, "", "net.ipv4.tcp_syncookies: 0 off, 1 when the SYN queue is full, 2 always",
                         maximum=2, group="tcp")
    accept_rate: float | None = _p(None, "connections/s", "connections the app accepts per second; "
                                   "none = as fast as they come", maximum=MAX_RATE, group="tcp")
    rtt_s: float = _p(0.001, "s", "round-trip time client<->server (SYN-ACK to final ACK)", group="tcp")
    syn_retries: int = _p(6, "", "client SYN retransmissions (net.ipv4.tcp_syn_retries; 1 s, 2 s, 4 s ...)",
                          maximum=20, group="tcp")
    synack_retries: int = _p(5, "", "server SYN-ACK retransmissions (net.ipv4.tcp_synack_retries)",
                             maximum=20, group="tcp")
    client_give_up_s: float | None = _p(None, "s", "clients stop retrying after this long; none = "
                                        "only the retry count limits them", group="tcp")
    client_sends_after_s: float | None = _p(0.0, "s", "a client sends its first data this long after "
                                            "its handshake (0: at once, like an HTTP request; none: it "
                                            "waits for the server). A segment to a connection whose "
                                            "final ACK was refused tries to complete it again", group="tcp")
    client_close_at_s: float | None = _p(None, "s", "time at which every client closes (FIN), like a "
                                         "test client that ends; none = they stay open", group="tcp")
    client_rto_s: float = _p(0.2, "s", "clients' retransmission timeout for data/FIN (TCP_RTO_MIN "
                             "200 ms on a LAN), doubling", minimum=1e-3, group="tcp")

    # ---- UDP socket --------------------------------------------------------------------
    udp_rcvbuf: int | None = _p(None, "bytes", "SO_RCVBUF the app requested (the kernel doubles it, "
                                "capped by rmem_max); none = net.core.rmem_default", group="udp")
    rcvbuf_force: bool = _p(False, "bool", "SO_RCVBUFFORCE: rmem_max does not cap the request", group="udp")
    rmem_default: int = _p(212992, "bytes", "net.core.rmem_default", minimum=1, group="udp")
    rmem_max: int = _p(212992, "bytes", "net.core.rmem_max", minimum=1, group="udp")
    udp_truesize: int | None = _p(None, "bytes", "memory charged per queued datagram (skb truesize); "
                                  "none = measured table for this kernel", minimum=1, group="udp")
    read_rate: float | None = _p(None, "datagrams/s", "datagrams the app reads per second; none = "
                                 "as fast as they come", maximum=MAX_RATE, group="udp")

    # ---- transmit: qdisc and link ------------------------------------------------------
    tx_rate: float = _p(0.0, "packets/s", "packets per second the host sends (bursts multiply it)",
                           maximum=MAX_RATE, group="tx")
    tx_total: float | None = _p(None, "packets", "stop after this many sent packets", maximum=MAX_TOTAL,
                                  group="tx")
    tx_packet_bytes: int = _p(1042, "bytes", "bytes per sent packet as the qdisc counts them "
                              "(IP packet + 14 bytes Ethernet)", minimum=1, group="tx")
    qdisc_limit: int | None = _p(1000, "packets", "qdisc limit in packets (txqueuelen, pfifo/fq_codel "
                                 "limit); none = no packet limit", group="tx")
    qdisc_limit_bytes: int | None = _p(None, "bytes", "qdisc limit in bytes (tbf/bfifo limit)", group="tx")
    link_rate_bps: float = _p(1e9, "bit/s", "rate that drains the qdisc (link speed or shaper rate)",
                              minimum=1.0, group="tx")
    shaper_burst_bytes: int = _p(0, "bytes", "token-bucket burst of a shaper (tbf burst); 0 = a plain link",
                                 group="tx")

    # ------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None:
                if "None" not in str(f.type):
                    raise SimParamsError(f"{f.name}: a value is required ({meta['unit'] or 'no unit'})")
                continue
            if meta["choices"]:
                if value not in meta["choices"]:
                    raise SimParamsError(f"{f.name}: {value!r} is not one of {', '.join(meta['choices'])}")
                continue
            if "bool" in str(f.type):
                if not isinstance(value, bool):
                    raise SimParamsError(f"{f.name}: expected true or false, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SimParamsError(f"{f.name}: expected a number, got {value!r}")
            if "int" in str(f.type) and "float" not in str(f.type):
                if isinstance(value, float):
                    if not value.is_integer():
                        raise SimParamsError(f"{f.name}: expected a whole number, got {value!r}")
                    setattr(self, f.name, int(value))
                    value = int(value)
            if not math.isfinite(value):
                raise SimParamsError(f"{f.name}: expected a finite number, got {value!r}")
            if meta["min"] is not None and value < meta["min"]:
                raise SimParamsError(f"{f.name}: {value!r} is below the minimum {meta['min']:g}")
            if meta["max"] is not None and value > meta["max"]:
                raise SimParamsError(f"{f.name}: {value!r} is above the maximum {meta['max']:g}")

    # ---- conversions -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "SimParams | None" = None) -> "SimParams":
        """Build from a mapping (scenario file, JSON); unknown keys are an error, missing
        keys keep the defaults (or `base`'s values). Strings are parsed (flag values)."""
        if not isinstance(data, dict):
            raise SimParamsError(f"parameters must be a table of key = value, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        values = (base or cls()).to_dict()
        for key, raw in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise SimParamsError(unknown_parameter(key))
            values[name] = _coerce(known[name], raw)
        return cls(**values)

    def replace(self, **changes: Any) -> "SimParams":
        return self.from_dict(changes, base=self)

    # ---- derived values (one place that encodes the kernel's rules) ---------------------
    @property
    def listen_backlog(self) -> int:
        """The backlog in force: the kernel keeps min(requested, somaxconn at listen time)."""
        return max(min(self.app_backlog, self.somaxconn), 0)

    @property
    def accept_queue_limit(self) -> int:
        """Connections the accept queue holds: full means length > backlog, so backlog + 1."""
        return self.listen_backlog + 1

    @property
    def syn_queue_limit(self) -> float:
        """Requests the SYN queue holds before new SYNs are dropped (syncookies off) or
        answered with a cookie (syncookies 1). Current kernels: full when qlen > backlog;
        with syncookies off also when fewer than a quarter of tcp_max_syn_backlog is left."""
        limit = float(self.listen_backlog + 1)
        if self.syncookies == 0:
            m = self.tcp_max_syn_backlog
            limit = min(limit, float(m - (m >> 2) + 1))
        return max(limit, 1.0)

    @property
    def rcvbuf_bytes(self) -> int:
        """sk_rcvbuf: rmem_default as is, or 2 x SO_RCVBUF (capped by rmem_max unless forced)."""
        if self.udp_rcvbuf is None:
            return self.rmem_default
        requested = self.udp_rcvbuf if self.rcvbuf_force else min(self.udp_rcvbuf, self.rmem_max)
        return max(2 * requested, SOCK_MIN_RCVBUF)

    @property
    def truesize(self) -> int:
        return self.udp_truesize if self.udp_truesize is not None else udp_truesize(self.udp_size)

    @property
    def udp_queue_limit(self) -> int:
        """Datagrams the socket holds: queued while rmem + truesize <= rcvbuf, one if empty."""
        return max(self.rcvbuf_bytes // self.truesize, 1)

    @property
    def backlog_limit(self) -> int:
        """Packets a CPU's input backlog holds: enqueued while length <= netdev_max_backlog."""
        return self.netdev_max_backlog + 1

    @property
    def round_packets(self) -> float:
        """Packets one softirq round may process: netdev_budget, or fewer when the time
        limit netdev_budget_usecs is reached first."""
        return max(min(float(self.netdev_budget), self.netdev_budget_usecs / self.rx_cost_us), 1.0)


# Smallest sk_rcvbuf the kernel sets (SOCK_MIN_RCVBUF = 2 * (2048 + sizeof(sk_buff)) / 2 ...):
# a request of 1 byte gave 2304 here; SO_RCVBUF 2048 gives 4096 (doubled).
SOCK_MIN_RCVBUF = 2304

# skb truesize of a received UDP datagram, measured on this kernel (6.x, x86_64) with
# /proc/net/udp rx_queue over datagrams queued, payload sizes 0..9000 in steps of 4:
# 832 bytes up to 196 bytes of payload, then 256 + the next power of two >= payload + 380
# (1280 up to 644, 2304 up to 1668, 4352 up to 3716, 8448 up to 7812, 16640 beyond).
_SMALL_TRUESIZE = 832
_SMALL_PAYLOAD = 196


def udp_truesize(payload: int) -> int:
    if payload <= _SMALL_PAYLOAD:
        return _SMALL_TRUESIZE
    return 256 + (1 << math.ceil(math.log2(payload + 380)))


def _coerce(f: dataclasses.Field, raw: Any) -> Any:
    """A scenario/flag value to the field's type; errors are one line naming the field."""
    type_text = str(f.type)
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")):
        if "None" not in type_text:
            raise SimParamsError(f"{f.name}: a value is required")
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if "bool" in type_text:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise SimParamsError(f"{f.name}: expected true or false, got {raw!r}")
        if f.metadata["choices"]:
            return text
        try:
            number = _parse_number(text)
        except ValueError:
            raise SimParamsError(f"{f.name}: expected a number ({f.metadata['unit']}), got {raw!r}") from None
        return number
    return raw


_SUFFIXES = (("ki", 1024), ("mi", 1024 ** 2), ("gi", 1024 ** 3), ("k", 1e3), ("m", 1e6), ("g", 1e9))


def _parse_number(text: str) -> float | int:
    """'1000', '1e6', '250k', '1M', '64Ki', '100mbit' (a rate in bit/s) -> a number."""
    lowered = text.lower().replace("_", "")
    for unit in ("bit", "bps"):
        if lowered.endswith(unit):
            lowered = lowered[:-len(unit)]
            break
    scale = 1.0
    for suffix, factor in _SUFFIXES:
        if lowered.endswith(suffix) and lowered[:-len(suffix)]:
            lowered, scale = lowered[:-len(suffix)], factor
            break
    value = float(lowered) * scale
    # a whole number as an int (a count), unless it is beyond any count: 1e300 stays 1e+300
    return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < 2 ** 63 else value


def unknown_parameter(key: Any) -> str:
    """The error for a name that is no parameter, with the closest names if there are."""
    name = str(key).replace("-", "_")
    scored = sorted(((difflib.SequenceMatcher(None, name, f.name).ratio(), f.name) for f in fields(SimParams)),
                    reverse=True)
    # the names about as close as the closest one (a typo has one answer, "rate" several)
    close = [n for score, n in scored[:3] if score >= 0.6 and score >= scored[0][0] - 0.08]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown parameter {str(key)!r} ({hint}see `dropdoc sim --list-params`)"


def describe() -> list[dict[str, Any]]:
    """Every parameter with its default, unit and meaning (for --list-params and docs)."""
    default = SimParams()
    return [{"name": f.name, "group": f.metadata["group"], "default": getattr(default, f.name),
             "unit": f.metadata["unit"], "help": f.metadata["help"]} for f in fields(SimParams)]
