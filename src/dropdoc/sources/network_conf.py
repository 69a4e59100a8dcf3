"""Network-layer state of one namespace: interfaces (MTU, rp_filter, unresolved-queue
limit), the main routing tables and the neighbour entries. Not counters: read once per
window (final snapshot), so the network-layer rules can name the interface, route or
neighbour behind a drop counter.

Inputs, all per network namespace:
  /proc/sys/net/ipv4/conf/<if>/rp_filter     (plus all/ and default/)
  /proc/sys/net/ipv4/neigh/<if>/unres_qlen_bytes
  /proc/net/route, /proc/net/ipv6_route       (IPv4 main table; IPv6 all tables)
  rtnetlink RTM_GETLINK (ifindex, name, MTU) and RTM_GETNEIGH (neighbour states)
Each part that cannot be read is None and listed in `gaps`; one missing part (no IPv6, no
netlink in a copied --root tree) does not hide the others.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from .. import netlink
from ..errors import NeedsPrivilege, ParseError, SourceUnavailable
from . import sysctls
from .base import ReadContext, Source, parse_int, register

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
IFLA_IFNAME, IFLA_MTU = 3, 4
NDA_DST, NDA_LLADDR = 1, 2
_IFINFOMSG = struct.Struct("=BxHiII")
_NDMSG = struct.Struct("=BxxxiHBB")

# include/uapi/linux/neighbour.h
NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
              0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT", 0x00: "NONE"}
UNRESOLVED_STATES = ("INCOMPLETE", "FAILED")

# route flags (include/uapi/linux/route.h, ipv6_route.h)
RTF_UP, RTF_GATEWAY, RTF_REJECT = 0x0001, 0x0002, 0x0200
RTF_LOCAL = 0x80000000

MAX_INTERFACES = 2048  # bound the per-interface reads on hosts with many veths

# The per-namespace keys the network-layer rules and fixes refer to.
sysctls.want((
    "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
    "net.ipv4.ipfrag_time", "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh",
    "net.ipv6.ip6frag_time", "net.ipv6.ip6frag_high_thresh", "net.ipv6.ip6frag_low_thresh",
    "net.ipv4.ip_no_pmtu_disc", "net.ipv4.ip_default_ttl",
))


@dataclass(frozen=True)
class Interface:
    name: str
    index: int | None = None
    mtu: int | None = None
    rp_filter: int | None = None          # this interface's own value; effective = max(all, own)
    unres_qlen_bytes: int | None = None   # per-device IPv4 neighbour queue limit


@dataclass(frozen=True)
class Route:
    family: int          # 4 or 6
    destination: str     # "198.18.0.0/15", "default" for /0
    gateway: str | None  # None: on-link
    interface: str
    metric: int
    flags: int
    mtu: int | None = None

    @property
    def reject(self) -> bool:
        return bool(self.flags & RTF_REJECT)

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        kind = "unreachable " if self.reject else ""
        return f"{kind}{self.destination}{via} dev {self.interface}"


@dataclass(frozen=True)
class Neighbour:
    family: int
    address: str
    interface: str          # name if known, else "ifindex N"
    state: str
    lladdr: str | None = None


@dataclass
class NetworkConf:
    interfaces: dict[str, Interface] = field(default_factory=dict)
    rp_filter_all: int | None = None
    rp_filter_default: int | None = None
    routes: list[Route] | None = None      # IPv4 main table + IPv6; None: not readable
    neighbours: list[Neighbour] | None = None
    gaps: dict[str, str] = field(default_factory=dict)

    def effective_rp_filter(self, name: str) -> int | None:
        """The kernel uses max(conf/all/rp_filter, conf/<if>/rp_filter)."""
        own = self.interfaces[name].rp_filter if name in self.interfaces else None
        values = [v for v in (self.rp_filter_all, own) if v is not None]
        return max(values) if values else None

    def has_default_route(self, family: int = 4) -> bool | None:
        if self.routes is None:
            return None
        return any(r.family == family and r.destination == "default" and not r.reject for r in self.routes)


# --- /proc/net/route ---------------------------------------------------------------------

def _hex_ipv4(token: str, what: str) -> str:
    if len(token) != 8:
        raise ParseError(f"{what}: {token[:20]!r} is not an 8-digit hex address")
    value = parse_int(token, what, 16)
    return str(ipaddress.IPv4Address(struct.pack("<I", value)))


def _prefix_of(mask: str, what: str) -> int:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise ParseError(f"{what}: {mask} is not a contiguous netmask") from None


def parse_route(text: str) -> list[Route]:
    """/proc/net/route (IPv4 main table), parsed by header name."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("/proc/net/route is empty (not even a header)")
    header = lines[0].split()
    wanted = ("Iface", "Destination", "Gateway", "Flags", "Metric", "Mask")
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ParseError(f"/proc/net/route: header lacks {missing}")
    column = {name: header.index(name) for name in header}
    routes: list[Route] = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split()
        if len(fields) != len(header):
            raise ParseError(f"/proc/net/route line {number}: {len(fields)} fields for {len(header)} columns")
        what = f"/proc/net/route line {number}"
        destination = _hex_ipv4(fields[column["Destination"]], what)
        gateway = _hex_ipv4(fields[column["Gateway"]], what)
        mask = _hex_ipv4(fields[column["Mask"]], what)
        flags = parse_int(fields[column["Flags"]], what, 16)
        prefix = _prefix_of(mask, what)
        mtu = parse_int(fields[column["MTU"]], what) if "MTU" in column else 0
        routes.append(Route(
            family=4, destination="default" if prefix == 0 else f"{destination}/{prefix}",
            gateway=gateway if flags & RTF_GATEWAY else None, interface=fields[column["Iface"]],
            metric=parse_int(fields[column["Metric"]], what), flags=flags, mtu=mtu or None))
    return routes


# --- /proc/net/ipv6_route ----------------------------------------------------------------

def _hex_ipv6(token: str, what: str) -> str:
    if len(token) != 32:
        raise ParseError(f"{what}: {token[:40]!r} is not a 32-digit hex address")
    try:
        return str(ipaddress.IPv6Address(bytes.fromhex(token)))
    except ValueError:
        raise ParseError(f"{what}: {token[:40]!r} is not hex") from None


def parse_ipv6_route(text: str) -> list[Route]:
    """/proc/net/ipv6_route: dest plen src splen nexthop metric refcnt use flags dev (no header).

    Local-table entries (RTF_LOCAL) and the kernel's placeholder null entry are left out."""
    routes: list[Route] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        what = f"/proc/net/ipv6_route line {number}"
        if len(fields) != 10:
            raise ParseError(f"{what}: {len(fields)} fields, expected 10")
        destination = _hex_ipv6(fields[0], what)
        prefix = parse_int(fields[1], what, 16)
        gateway = _hex_ipv6(fields[4], what)
        metric = parse_int(fields[5], what, 16)
        flags = parse_int(fields[8], what, 16)
        if not 0 <= prefix <= 128:
            raise ParseError(f"{what}: prefix length {prefix}")
        if flags & RTF_LOCAL:
            continue
        if prefix == 0 and flags & RTF_REJECT and fields[9] == "lo" and metric == 0xFFFFFFFF:
            continue  # ip6_null_entry, printed by every kernel
        routes.append(Route(
            family=6, destination="default" if prefix == 0 else f"{destination}/{prefix}",
            gateway=gateway if flags & RTF_GATEWAY else None, interface=fields[9],
            metric=metric, flags=flags))
    return routes


# --- rtnetlink ---------------------------------------------------------------------------

def parse_links(reply: bytes) -> dict[int, tuple[str, int | None]]:
    """RTM_GETLINK dump -> {ifindex: (name, mtu)}."""
    links: dict[int, tuple[str, int | None]] = {}
    for index, attrs in netlink.links(reply):
        mtu = None
        if IFLA_MTU in attrs:
            if len(attrs[IFLA_MTU]) != 4:
                raise ParseError(f"IFLA_MTU of {len(attrs[IFLA_MTU])} bytes")
            (mtu,) = struct.unpack("=I", attrs[IFLA_MTU])
        name = netlink.ifname(attrs)
        if name is not None:
            links[index] = (name, mtu)
    return links


def _format_lladdr(payload: bytes) -> str:
    return ":".join(f"{b:02x}" for b in payload)


def parse_neighbours(reply: bytes, names: dict[int, str] | None = None) -> list[Neighbour]:
    """RTM_GETNEIGH dump -> neighbour entries (IPv4 and IPv6 only)."""
    names = names or {}
    entries: list[Neighbour] = []
    for msg_type, body in netlink.messages(reply):
        if msg_type != RTM_NEWNEIGH:
            continue
        if len(body) < _NDMSG.size:
            raise ParseError("RTM_NEWNEIGH message shorter than ndmsg")
        family, index, state, _flags, _type = _NDMSG.unpack_from(body)
        address, lladdr = None, None
        for attr_type, payload in netlink.attributes(body, _NDMSG.size):
            if attr_type == NDA_DST:
                if family == socket.AF_INET and len(payload) == 4:
                    address = str(ipaddress.IPv4Address(payload))
                elif family == socket.AF_INET6 and len(payload) == 16:
                    address = str(ipaddress.IPv6Address(payload))
                else:
                    raise ParseError(f"NDA_DST of {len(payload)} bytes for family {family}")
            elif attr_type == NDA_LLADDR:
                lladdr = _format_lladdr(payload)
        if family not in (socket.AF_INET, socket.AF_INET6) or address is None:
            continue
        entries.append(Neighbour(family=4 if family == socket.AF_INET else 6, address=address,
                                 interface=names.get(index, f"ifindex {index}"),
                                 state=NUD_STATES.get(state, f"0x{state:x}"), lladdr=lladdr))
    return entries


# --- read --------------------------------------------------------------------------------

def _value(ctx: ReadContext, *parts: str) -> int | None:
    try:
        value = sysctls.parse_value(ctx.read(*parts))
    except (SourceUnavailable, ParseError):
        return None
    return value if isinstance(value, int) else None


def _links(ctx: ReadContext, conf: NetworkConf, names: list[str]) -> dict[int, str]:
    """MTUs by rtnetlink (works inside a netns); sysfs where it shows this namespace."""
    request = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    try:
        links = parse_links(ctx.netlink_dump(netlink.NETLINK_ROUTE, RTM_GETLINK, request, "rtnetlink link dump"))
    except (SourceUnavailable, NeedsPrivilege, ParseError, OSError) as exc:
        links = {}
        if ctx.sysfs_is_local:
            for name in names:
                mtu = _value(ctx, "sys", "class", "net", name, "mtu")
                if mtu is not None:
                    conf.interfaces[name] = Interface(name, mtu=mtu)
        if not any(i.mtu for i in conf.interfaces.values()):
            conf.gaps["mtu"] = str(exc)
    for index, (name, mtu) in links.items():
        conf.interfaces[name] = Interface(name, index=index, mtu=mtu)
    return {index: name for index, (name, _mtu) in links.items()}


def read(ctx: ReadContext) -> NetworkConf:
    conf = NetworkConf()
    try:
        names = [n for n in ctx.listdir("proc", "sys", "net", "ipv4", "conf") if n not in ("all", "default")]
    except SourceUnavailable as exc:
        names = []
        conf.gaps["conf"] = str(exc)
    names = names[:MAX_INTERFACES]
    by_index = _links(ctx, conf, names)
    conf.rp_filter_all = _value(ctx, "proc", "sys", "net", "ipv4", "conf", "all", "rp_filter")
    conf.rp_filter_default = _value(ctx, "proc", "sys", "net", "ipv4", "conf", "default", "rp_filter")
    for name in names:
        known = conf.interfaces.get(name, Interface(name))
        conf.interfaces[name] = Interface(
            name, index=known.index, mtu=known.mtu,
            rp_filter=_value(ctx, "proc", "sys", "net", "ipv4", "conf", name, "rp_filter"),
            unres_qlen_bytes=_value(ctx, "proc", "sys", "net", "ipv4", "neigh", name, "unres_qlen_bytes"))
    routes: list[Route] = []
    broken: list[str] = []
    for filename, parser in (("route", parse_route), ("ipv6_route", parse_ipv6_route)):
        try:
            routes += parser(ctx.read("proc", "net", filename))
        except SourceUnavailable as exc:
            conf.gaps[filename] = str(exc)
        except ParseError as exc:
            conf.gaps[filename] = str(exc)
            broken.append(filename)
    conf.routes = routes if "route" not in conf.gaps else None
    request = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    try:
        reply = ctx.netlink_dump(netlink.NETLINK_ROUTE, RTM_GETNEIGH, request, "rtnetlink neighbour dump")
        conf.neighbours = parse_neighbours(reply, by_index)
    except (SourceUnavailable, NeedsPrivilege, ParseError, OSError) as exc:
        conf.gaps["neighbours"] = str(exc)
    if not conf.interfaces and conf.routes is None:
        message = "no interface configuration or routes readable: " + "; ".join(conf.gaps.values())
        if "route" in broken:
            raise ParseError(message)  # the file is there but broken: a failure, not a gap
        raise SourceUnavailable(message)
    return conf


register(Source("network_conf", read, final_only=True,
                description="interfaces (MTU, rp_filter), routes, neighbour entries of the namespace"))
