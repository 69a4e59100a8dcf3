"""Queueing disciplines (qdiscs) of every interface, with their statistics and limits.

What `tc -s qdisc show` prints, read the way tc reads it: an rtnetlink RTM_GETQDISC dump
(one RTM_NEWQDISC message per qdisc: struct tcmsg, then TCA_KIND, TCA_OPTIONS, TCA_STATS2
with nested TCA_STATS_BASIC / TCA_STATS_QUEUE / TCA_STATS_APP), plus an RTM_GETLINK dump
for the interface names and txqueuelen (IFLA_TXQLEN; the limit of pfifo_fast).

- Statistics: gnet_stats_queue holds u32 counters (drops, overlimits, requeues: they
  wrap) and two gauges (qlen packets, backlog bytes). Kernels before TCA_STATS2 only sent
  the legacy struct tc_stats, which has no requeues: requeues is then None, not 0.
- Limits, decoded only where the layout is simple and stable: pfifo/bfifo/pfifo_head_drop
  (struct tc_fifo_qopt), tbf (TCA_TBF_PARMS: rate, limit in bytes, buffer; TCA_TBF_RATE64),
  fq_codel (TCA_FQ_CODEL_LIMIT), fq (TCA_FQ_PLIMIT), codel (TCA_CODEL_LIMIT), sfq and netem
  (their qopt structs). pfifo_fast has no limit of its own: it queues up to txqueuelen.
  Anything else: limit None.
- Counting: a classful qdisc counts its children's drops too (drop on enqueue is
  returned up the tree, qdisc_tree_reduce_backlog() adds dequeue drops to every
  ancestor, mq sums its per-queue children when dumped), so per device the root qdisc
  (parent "root") and the ingress/clsact qdisc hold every drop once.
- Counter names: qdisc.<dev>.<kind>.<handle>/<parent>.<counter>, e.g.
  qdisc.eth0.tbf.1:/root.drops. Kind, handle and parent are part of the name, so a qdisc
  replaced by another one (tc qdisc replace/del+add, a device re-created with an
  auto-numbered handle) is a different counter: its delta is None, not a wrong number;
  re-created with the same kind and handle its counters restart from 0, which the delta
  sees as a reset (None). Invisible qdiscs (the default child of tbf) are not dumped,
  exactly as `tc qdisc show` hides them.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass, field

from .. import netlink
from ..errors import ParseError
from .base import ReadContext, Source, register

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
IFLA_IFNAME, IFLA_TXQLEN, IFLA_EXT_MASK = 3, 13, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3

TCA_KIND, TCA_OPTIONS, TCA_STATS, TCA_XSTATS, TCA_STATS2 = 1, 2, 3, 4, 7
TCA_STATS_BASIC, TCA_STATS_QUEUE, TCA_STATS_APP, TCA_STATS_PKT64 = 1, 3, 4, 8

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1  # also the parent of clsact
TC_H_UNSPEC = 0

_IFINFOMSG = struct.Struct("=BxHiII")
_TCMSG = struct.Struct("=BxxxiIII")  # family, pad, ifindex, handle, parent, info
_KIND = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# Kinds whose drops are mostly the algorithm's own choice (AQM) rather than a full queue.
AQM_KINDS = frozenset({"fq_codel", "codel", "cake", "pie", "fq_pie", "red", "choke", "sfb", "dualpi2"})
# Kinds whose job is to cap the rate: overlimits there mean "held back by the shaper".
SHAPER_KINDS = frozenset({"tbf", "htb", "hfsc", "cbq", "cake"})


@dataclass(frozen=True)
class Link:
    name: str
    txqueuelen: int | None


@dataclass(frozen=True)
class Qdisc:
    ifindex: int
    dev: str  # interface name; "ifindex<N>" when the device vanished between the two dumps
    kind: str
    handle: int
    parent: int
    bytes: int | None = None
    packets: int | None = None
    qlen: int | None = None  # gauge: packets queued right now
    backlog: int | None = None  # gauge: bytes queued right now
    drops: int | None = None
    requeues: int | None = None
    overlimits: int | None = None
    limit: int | None = None
    limit_unit: str | None = None  # "packets" or "bytes"
    rate: int | None = None  # bytes per second (tbf)
    burst: int | None = None  # bytes (tbf)
    txqueuelen: int | None = None
    # kind-specific counters from TCA_STATS_APP (fq_codel: drop_overlimit, drop_overmemory, ecn_mark)
    xstats: dict[str, int] = field(default_factory=dict)

    @property
    def handle_str(self) -> str:
        return format_handle(self.handle)

    @property
    def parent_str(self) -> str:
        return format_handle(self.parent)

    @property
    def qid(self) -> str:
        """handle/parent: unique per device (mq children all have handle 0:)."""
        return f"{self.handle_str}/{self.parent_str}"

    @property
    def is_root(self) -> bool:
        return self.parent == TC_H_ROOT

    @property
    def is_ingress(self) -> bool:
        return self.parent == TC_H_INGRESS

    @property
    def counter_prefix(self) -> str:
        return f"qdisc.{self.dev}.{self.kind}.{self.qid}"


def format_handle(value: int) -> str:
    """tc's notation: root, ingress, 1:, 1:10, :1 (major 0), 0: for handle 0."""
    if value == TC_H_ROOT:
        return "root"
    if value == TC_H_INGRESS:
        return "ingress"
    major, minor = value >> 16, value & 0xFFFF
    if value == TC_H_UNSPEC:
        return "0:"
    if major == 0:
        return f":{minor:x}"
    if minor == 0:
        return f"{major:x}:"
    return f"{major:x}:{minor:x}"


def split_counter(name: str) -> tuple[str, str, str, str] | None:
    """'qdisc.eth0.100.tbf.1:/root.drops' -> ('eth0.100', 'tbf', '1:/root', 'drops')."""
    if not name.startswith("qdisc."):
        return None
    parts = name[len("qdisc."):].rsplit(".", 3)
    if len(parts) != 4 or "/" not in parts[2]:
        return None
    return parts[0], parts[1], parts[2], parts[3]


# --- parsing -----------------------------------------------------------------------------

def _u32(payload: bytes, what: str, offset: int = 0) -> int:
    if len(payload) < offset + 4:
        raise ParseError(f"{what}: {len(payload)} bytes, expected at least {offset + 4}")
    return struct.unpack_from("=I", payload, offset)[0]


def _u64(payload: bytes, what: str) -> int:
    if len(payload) < 8:
        raise ParseError(f"{what}: {len(payload)} bytes, expected 8")
    return struct.unpack_from("=Q", payload)[0]


def parse_links(reply: bytes) -> dict[int, Link]:
    """RTM_GETLINK dump -> {ifindex: Link(name, txqueuelen)}."""
    links: dict[int, Link] = {}
    for ifindex, attrs in netlink.links(reply):
        name = netlink.ifname(attrs)
        txqlen = _u32(attrs[IFLA_TXQLEN], "IFLA_TXQLEN") if IFLA_TXQLEN in attrs else None
        if name and "/" not in name and not any(ch.isspace() for ch in name):
            links[ifindex] = Link(name, txqlen)
    return links


def _nested(payload: bytes) -> dict[int, bytes]:
    return dict(netlink.attributes(payload))


def _options(kind: str, payload: bytes) -> dict[str, int | str | None]:
    """The queue limit (and tbf's rate) from TCA_OPTIONS, where the layout is simple."""
    what = f"{kind} TCA_OPTIONS"
    if kind in ("pfifo", "pfifo_head_drop"):
        return {"limit": _u32(payload, what), "limit_unit": "packets"}
    if kind == "bfifo":
        return {"limit": _u32(payload, what), "limit_unit": "bytes"}
    if kind == "tbf":
        attrs = _nested(payload)
        if 1 not in attrs:  # TCA_TBF_PARMS
            return {}
        parms = attrs[1]
        if len(parms) < 36:
            raise ParseError(f"TCA_TBF_PARMS: {len(parms)} bytes, expected 36")
        # struct tc_tbf_qopt: tc_ratespec rate (12 bytes, u32 rate at offset 8), peakrate (12),
        # limit, buffer (psched ticks of 64 ns), mtu
        rate = struct.unpack_from("=I", parms, 8)[0]
        limit, buffer_ticks = struct.unpack_from("=II", parms, 24)
        if 4 in attrs:  # TCA_TBF_RATE64: rates of 2**32 bytes/s and more
            rate = _u64(attrs[4], "TCA_TBF_RATE64")
        burst = round(rate * buffer_ticks * 64 / 1e9)
        return {"limit": limit, "limit_unit": "bytes", "rate": rate, "burst": burst}
    if kind in ("fq_codel", "codel", "fq"):
        attrs = _nested(payload)
        key = 1 if kind == "fq" else 2  # TCA_FQ_PLIMIT / TCA_FQ_CODEL_LIMIT / TCA_CODEL_LIMIT
        if key in attrs:
            return {"limit": _u32(attrs[key], f"{kind} limit"), "limit_unit": "packets"}
        return {}
    if kind == "sfq":  # struct tc_sfq_qopt: quantum, perturb_period, limit, divisor, flows
        return {"limit": _u32(payload, what, 8), "limit_unit": "packets"}
    if kind == "netem":  # struct tc_netem_qopt: latency, limit, ...
        return {"limit": _u32(payload, what, 4), "limit_unit": "packets"}
    return {}


def _fq_codel_xstats(payload: bytes) -> dict[str, int]:
    # struct tc_fq_codel_xstats: u32 type (0 = qdisc), then tc_fq_codel_qd_stats: maxpacket,
    # drop_overlimit, ecn_mark, new_flow_count, new_flows_len, old_flows_len, ce_mark,
    # memory_usage, drop_overmemory (the last two since 4.9: absent before).
    if len(payload) < 16 or _u32(payload, "fq_codel xstats") != 0:
        return {}
    out = {"drop_overlimit": _u32(payload, "fq_codel xstats", 8), "ecn_mark": _u32(payload, "fq_codel xstats", 12)}
    if len(payload) >= 40:
        out["drop_overmemory"] = _u32(payload, "fq_codel xstats", 36)
    return out


def _stats2(payload: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for attr_type, data in netlink.attributes(payload):
        if attr_type == TCA_STATS_BASIC:
            if len(data) < 12:
                raise ParseError(f"TCA_STATS_BASIC: {len(data)} bytes, expected 16")
            out["bytes"], packets = struct.unpack_from("=QI", data)
            out.setdefault("packets", packets)
        elif attr_type == TCA_STATS_PKT64:  # the u64 packet count when it exceeds u32
            out["packets"] = _u64(data, "TCA_STATS_PKT64")
        elif attr_type == TCA_STATS_QUEUE:
            if len(data) < 20:
                raise ParseError(f"TCA_STATS_QUEUE: {len(data)} bytes, expected 20")
            out.update(zip(("qlen", "backlog", "drops", "requeues", "overlimits"),
                           struct.unpack_from("=5I", data)))
    return out


def _legacy_stats(data: bytes) -> dict[str, int]:
    # struct tc_stats: u64 bytes; u32 packets, drops, overlimits, bps, pps, qlen, backlog
    if len(data) < 36:
        raise ParseError(f"TCA_STATS: {len(data)} bytes, expected 36")
    values = struct.unpack_from("=QIIIIIII", data)
    return {"bytes": values[0], "packets": values[1], "drops": values[2], "overlimits": values[3],
            "qlen": values[6], "backlog": values[7]}


def parse_qdiscs(reply: bytes, links: dict[int, Link] | None = None) -> list[Qdisc]:
    """RTM_GETQDISC dump (+ the interfaces) -> one Qdisc per RTM_NEWQDISC message."""
    links = links or {}
    qdiscs: list[Qdisc] = []
    for msg_type, body in netlink.messages(reply):
        if msg_type != RTM_NEWQDISC:
            continue
        if len(body) < _TCMSG.size:
            raise ParseError(f"RTM_NEWQDISC message of {len(body)} bytes, shorter than tcmsg")
        _family, ifindex, handle, parent, _info = _TCMSG.unpack_from(body)
        attrs: dict[int, bytes] = {}
        for attr_type, payload in netlink.attributes(body, _TCMSG.size):
            attrs.setdefault(attr_type, payload)
        if TCA_KIND not in attrs:
            raise ParseError(f"RTM_NEWQDISC for ifindex {ifindex} without TCA_KIND")
        kind = attrs[TCA_KIND].split(b"\0", 1)[0].decode("ascii", "replace")
        if not _KIND.match(kind):
            raise ParseError(f"qdisc kind {kind[:40]!r} is not a qdisc name")
        if TCA_STATS2 in attrs:
            stats = _stats2(attrs[TCA_STATS2])
        elif TCA_STATS in attrs:
            stats = _legacy_stats(attrs[TCA_STATS])
        else:
            stats = {}
        options = _options(kind, attrs[TCA_OPTIONS]) if TCA_OPTIONS in attrs else {}
        xstats: dict[str, int] = {}
        app = _nested(attrs[TCA_STATS2]).get(TCA_STATS_APP) if TCA_STATS2 in attrs else attrs.get(TCA_XSTATS)
        if kind == "fq_codel" and app is not None:
            xstats = _fq_codel_xstats(app)
        link = links.get(ifindex)
        txqlen = link.txqueuelen if link else None
        if kind == "pfifo_fast" and txqlen is not None:
            options = {"limit": txqlen, "limit_unit": "packets"}
        qdiscs.append(Qdisc(ifindex=ifindex, dev=link.name if link else f"ifindex{ifindex}", kind=kind,
                            handle=handle, parent=parent, txqueuelen=txqlen, xstats=xstats,
                            **stats, **options))
    return qdiscs


def parse(qdisc_reply: bytes, link_reply: bytes) -> list[Qdisc]:
    return parse_qdiscs(qdisc_reply, parse_links(link_reply))


# --- reading -------------------------------------------------------------------------------

def link_request() -> bytes:
    # IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS: names and txqueuelen only (a much smaller reply;
    # kernels without the flag ignore it). Also keeps this request's recording apart from
    # link_stats' full dump in bundles.
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + struct.pack("=HHI", 8, IFLA_EXT_MASK,
                                                                       RTEXT_FILTER_SKIP_STATS)


def qdisc_request() -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def read(ctx: ReadContext) -> list[Qdisc]:
    links = ctx.netlink_dump(netlink.NETLINK_ROUTE, RTM_GETLINK, link_request(), "rtnetlink link dump")
    qdiscs = ctx.netlink_dump(netlink.NETLINK_ROUTE, RTM_GETQDISC, qdisc_request(), "rtnetlink qdisc dump")
    return parse(qdiscs, links)


COUNTERS = ("drops", "overlimits", "requeues", "packets")
XSTATS_COUNTERS = ("drop_overlimit", "drop_overmemory", "ecn_mark")


def counters(qdiscs: list[Qdisc]) -> dict[str, int | None]:
    flat: dict[str, int | None] = {}
    for q in qdiscs:
        prefix = q.counter_prefix
        for name in COUNTERS:
            value = getattr(q, name)
            # packets may come from TCA_STATS_PKT64: keep the u32 the wrap logic expects
            flat[f"{prefix}.{name}"] = None if value is None else value & 0xFFFFFFFF
        for name in XSTATS_COUNTERS:
            if name in q.xstats:
                flat[f"{prefix}.{name}"] = q.xstats[name]
    return flat


register(Source("qdisc", read, counters, counter_bits=32,
                description="rtnetlink qdisc dump: drops, overlimits, backlog and limit per qdisc"))
