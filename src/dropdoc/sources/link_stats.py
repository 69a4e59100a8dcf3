"""Per-interface link statistics, with the counters /proc/net/dev folds together.

rx_missed_errors (NIC ring full), rx_fifo_errors and rx_over_errors are what
nic.rx_missed needs; /proc/net/dev adds missed into "drop". Two ways in:
 - /sys/class/net/<dev>/statistics/<counter> (one file each) when /sys shows this
   namespace (the host, or a copied --root tree);
 - rtnetlink RTM_GETLINK with IFLA_STATS64 otherwise (inside a named netns sysfs still
   shows the host's devices, netlink sockets are per netns).
Both give the same {ifname: {counter: value}} shape.

Next to the statistics, each device's link flaps: carrier_changes (up and down transitions),
carrier_up_count and carrier_down_count (kernel 4.16+) - sysfs files of the same names, or
IFLA_CARRIER_CHANGES / IFLA_CARRIER_UP_COUNT / IFLA_CARRIER_DOWN_COUNT. They are what
nic.errors counts as link flaps; a kernel without them leaves them absent.
"""

from __future__ import annotations

import socket
import struct

from ..errors import ParseError, SourceUnavailable
from .. import netlink
from .base import ReadContext, Source, parse_int, register

RTM_NEWLINK = 16
RTM_GETLINK = 18
IFLA_IFNAME = 3
IFLA_STATS64 = 23
IFLA_CARRIER_CHANGES = 35
IFLA_CARRIER_UP_COUNT = 47
IFLA_CARRIER_DOWN_COUNT = 48
# u32 attributes / sysfs files next to statistics/ counting link state transitions.
CARRIER_ATTRS = {IFLA_CARRIER_CHANGES: "carrier_changes", IFLA_CARRIER_UP_COUNT: "carrier_up_count",
                 IFLA_CARRIER_DOWN_COUNT: "carrier_down_count"}
CARRIER_FILES = tuple(CARRIER_ATTRS.values())

# struct rtnl_link_stats64, in kernel order; newer kernels append fields, older lack the tail.
STATS64_FIELDS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_length_errors",
    "rx_over_errors", "rx_crc_errors", "rx_frame_errors", "rx_fifo_errors",
    "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors",
    "tx_heartbeat_errors", "tx_window_errors", "rx_compressed", "tx_compressed",
    "rx_nohandler", "rx_otherhost_dropped",
)
_IFINFOMSG = struct.Struct("=BxHiII")


def parse_statistics_files(files: dict[str, str], ifname: str = "?") -> dict[str, int]:
    """Parse the contents of one statistics/ directory ({file name: text})."""
    return {name: parse_int(text.strip(), f"{ifname}/statistics/{name}") for name, text in sorted(files.items())}


def parse_rtnl_links(reply: bytes) -> dict[str, dict[str, int]]:
    """Parse an RTM_GETLINK dump reply into {ifname: stats64 counters}."""
    links: dict[str, dict[str, int]] = {}
    for _index, attrs in netlink.links(reply):
        name, payload = netlink.ifname(attrs), attrs.get(IFLA_STATS64)
        if name is not None and payload is not None:
            count = min(len(payload) // 8, len(STATS64_FIELDS))
            links[name] = dict(zip(STATS64_FIELDS, struct.unpack_from(f"={count}Q", payload)))
    return links


def parse_rtnl_carrier(reply: bytes) -> dict[str, dict[str, int]]:
    """Parse an RTM_GETLINK dump reply into {ifname: {carrier_changes, carrier_up_count, ...}}
    (only the attributes the kernel sent)."""
    links: dict[str, dict[str, int]] = {}
    for _index, attrs in netlink.links(reply):
        flaps = {}
        for attr_type, label in CARRIER_ATTRS.items():
            payload = attrs.get(attr_type)
            if payload is None:
                continue
            if len(payload) < 4:
                raise ParseError(f"{label} attribute of {len(payload)} bytes")
            flaps[label] = struct.unpack_from("=I", payload)[0]
        name = netlink.ifname(attrs)
        if name is not None and flaps:
            links[name] = flaps
    return links


def _read_carrier_files(ctx: ReadContext, ifname: str) -> dict[str, int]:
    values = {}
    for name in CARRIER_FILES:
        try:
            text = ctx.read("sys", "class", "net", ifname, name)
        except SourceUnavailable:
            continue  # kernel before 3.15 (carrier_changes) / 4.16 (up/down counts)
        values[name] = parse_int(text.strip(), f"{ifname}/{name}")
    return values


def _read_sysfs(ctx: ReadContext) -> dict[str, dict[str, int]]:
    links: dict[str, dict[str, int]] = {}
    for ifname in ctx.listdir("sys", "class", "net"):
        try:
            counters = ctx.listdir("sys", "class", "net", ifname, "statistics")
        except SourceUnavailable:
            continue  # bonding_masters and other non-device entries
        files = {}
        for counter in counters:
            try:
                files[counter] = ctx.read("sys", "class", "net", ifname, "statistics", counter)
            except SourceUnavailable:
                continue  # some drivers refuse single counters (EOPNOTSUPP): that counter is None
        links[ifname] = parse_statistics_files(files, ifname)
        links[ifname].update(_read_carrier_files(ctx, ifname))
    return links


def _read_netlink(ctx: ReadContext) -> dict[str, dict[str, int]]:
    request = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    reply = ctx.netlink_dump(netlink.NETLINK_ROUTE, RTM_GETLINK, request, "rtnetlink link dump")
    links = parse_rtnl_links(reply)
    for ifname, flaps in parse_rtnl_carrier(reply).items():
        if ifname in links:
            links[ifname].update(flaps)
    return links


def read(ctx: ReadContext) -> dict[str, dict[str, int]]:
    if ctx.sysfs_is_local:
        return _read_sysfs(ctx)
    return _read_netlink(ctx)


def counters(links: dict[str, dict[str, int]]) -> dict[str, int | None]:
    return {f"link.{ifname}.{name}": value for ifname, table in links.items() for name, value in table.items()}


register(Source("link_stats", read, counters,
                description="link statistics (sysfs or rtnetlink): rx_missed, fifo, over errors"))
