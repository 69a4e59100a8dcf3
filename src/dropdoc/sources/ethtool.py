"""NIC/driver statistics and ring sizes through the SIOCETHTOOL ioctl (what `ethtool -S/-g/-l/-i`
shows), read in-process - never by running the `ethtool` program and parsing its text.

Per interface of this network namespace (the socket is created while the thread is inside it):
  ETHTOOL_GDRVINFO              driver name (and n_stats, the fallback count)
  ETHTOOL_GSSET_INFO(STATS)     number of driver statistics
  ETHTOOL_GSTRINGS(ETH_SS_STATS) their names, 32 bytes each
  ETHTOOL_GSTATS                their values, u64 each, in the same order
  ETHTOOL_GRINGPARAM            RX/TX ring: current and pre-set maximum
  ETHTOOL_GCHANNELS             queues (channels): current and maximum
  ETHTOOL_GLINK                 link detected (running and carrier)
Interfaces without ethtool support (lo: EOPNOTSUPP on GDRVINFO) are skipped, not failures;
an optional call a driver lacks (veth has no ring parameters) leaves that part None.

Every reply buffer is kept as bytes and parsed by the pure functions below; `read` hands the
buffers (hex) to `ctx.record_json`, so bundles replay them through the same parsers.

The kernel fills GSTRINGS/GSTATS with as many entries as the driver has *now*, whatever the
caller announced; the buffers are sized with slack and a names/values count mismatch (the
driver changed its set between two calls, e.g. queues added) is retried once, then reported.

Counters are `ethtool.<dev>.<stat>`; '.' and whitespace in a driver's stat name become '_'
(i40e's `port.rx_dropped` -> `port_rx_dropped`) so the device is always what sits between
the first dot and the last one. A few driver "statistics" are gauges, not counters
(veth `peer_ifindex`, ENA `conntrack_allowance_available`): they stay in the data but are
not turned into counters.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import NeedsPrivilege, ParseError, SourceUnavailable
from .base import ReadContext, Source, register

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GLINK = 0x0A
ETHTOOL_GRINGPARAM = 0x10
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSTATS = 0x1D
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GCHANNELS = 0x3C
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16

# struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
# erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len, regdump_len
_DRVINFO = struct.Struct("=I32s32s32s32s32s12sIIIII")
_RING = struct.Struct("=9I")       # struct ethtool_ringparam (cmd + 8 u32)
_CHANNELS = struct.Struct("=9I")   # struct ethtool_channels (cmd + 8 u32)
_VALUE = struct.Struct("=II")      # struct ethtool_value (cmd, data)
_SSET_HEAD = struct.Struct("=IIQ")  # struct ethtool_sset_info: cmd, reserved, sset_mask, data[]
_GSTRINGS_HEAD = struct.Struct("=III")  # struct ethtool_gstrings: cmd, string_set, len, data[]
_GSTATS_HEAD = struct.Struct("=II")  # struct ethtool_stats: cmd, n_stats, data[] (u64)

# Driver "statistics" that are gauges or identifiers, not monotonic counters.
GAUGES = frozenset({"peer_ifindex", "conntrack_allowance_available"})
_UNSAFE_IN_NAME = re.compile(r"[.\s]")
# Errors that mean "this interface/driver does not do that": skip, do not fail.
_NOT_SUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENODEV, errno.ENXIO, errno.ENOTTY}
# Hard limit on what a reply may announce (mlx5 with 256 queues has ~20k statistics).
MAX_ENTRIES = 1 << 20


@dataclass(frozen=True)
class Ring:
    """ETHTOOL_GRINGPARAM: `ethtool -g` (pre-set maximums and current settings)."""
    rx_max: int
    rx_mini_max: int
    rx_jumbo_max: int
    tx_max: int
    rx: int
    rx_mini: int
    rx_jumbo: int
    tx: int


@dataclass(frozen=True)
class Channels:
    """ETHTOOL_GCHANNELS: `ethtool -l` (queues: maximums and current)."""
    max_rx: int
    max_tx: int
    max_other: int
    max_combined: int
    rx: int
    tx: int
    other: int
    combined: int


@dataclass(frozen=True)
class DrvInfo:
    driver: str
    version: str
    fw_version: str
    bus_info: str
    n_stats: int


@dataclass(frozen=True)
class Nic:
    driver: str
    bus_info: str
    stats: dict[str, int]          # name (as the driver spells it) -> value
    ring: Ring | None = None       # None: the driver has no ring parameters (veth, ifb)
    channels: Channels | None = None
    link: bool | None = None       # link detected (interface running and carrier on)


@dataclass
class EthtoolData:
    interfaces: dict[str, Nic] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # ifname -> why (no ethtool support, ...)


# --- pure parsers over the raw ioctl buffers ------------------------------------------------

def _check_cmd(buf: bytes, cmd: int, size: int, what: str) -> None:
    if len(buf) < size:
        raise ParseError(f"{what}: reply of {len(buf)} bytes, expected at least {size}")
    (echoed,) = struct.unpack_from("=I", buf)
    if echoed != cmd:
        raise ParseError(f"{what}: reply is for command {echoed:#x}, not {cmd:#x}")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def parse_drvinfo(buf: bytes) -> DrvInfo:
    _check_cmd(buf, ETHTOOL_GDRVINFO, _DRVINFO.size, "ETHTOOL_GDRVINFO")
    (_cmd, driver, version, fw_version, bus_info, _erom, _reserved, _n_priv_flags, n_stats,
     _testinfo, _eedump, _regdump) = _DRVINFO.unpack_from(buf)
    return DrvInfo(_cstr(driver), _cstr(version), _cstr(fw_version), _cstr(bus_info), n_stats)


def parse_sset_count(buf: bytes, string_set: int = ETH_SS_STATS) -> int | None:
    """Entries of `string_set` from an ETHTOOL_GSSET_INFO reply asking for that set alone;
    None when the driver does not have the set (its bit cleared in the returned mask)."""
    _check_cmd(buf, ETHTOOL_GSSET_INFO, _SSET_HEAD.size, "ETHTOOL_GSSET_INFO")
    _cmd, _reserved, mask = _SSET_HEAD.unpack_from(buf)
    if not mask & (1 << string_set):
        return None
    if mask & ~(1 << string_set):
        raise ParseError(f"ETHTOOL_GSSET_INFO: mask {mask:#x} has sets that were not asked for")
    if len(buf) < _SSET_HEAD.size + 4:
        raise ParseError("ETHTOOL_GSSET_INFO: set announced but its count is missing")
    (count,) = struct.unpack_from("=I", buf, _SSET_HEAD.size)
    return count


def parse_strings(buf: bytes, string_set: int = ETH_SS_STATS) -> list[str]:
    _check_cmd(buf, ETHTOOL_GSTRINGS, _GSTRINGS_HEAD.size, "ETHTOOL_GSTRINGS")
    _cmd, got_set, count = _GSTRINGS_HEAD.unpack_from(buf)
    if got_set != string_set:
        raise ParseError(f"ETHTOOL_GSTRINGS: string set {got_set}, asked for {string_set}")
    end = _GSTRINGS_HEAD.size + count * ETH_GSTRING_LEN
    if count > MAX_ENTRIES or end > len(buf):
        raise ParseError(f"ETHTOOL_GSTRINGS: {count} names announced, {len(buf)} bytes received")
    return [_cstr(buf[offset:offset + ETH_GSTRING_LEN])
            for offset in range(_GSTRINGS_HEAD.size, end, ETH_GSTRING_LEN)]


def parse_stats(buf: bytes) -> list[int]:
    _check_cmd(buf, ETHTOOL_GSTATS, _GSTATS_HEAD.size, "ETHTOOL_GSTATS")
    _cmd, count = _GSTATS_HEAD.unpack_from(buf)
    end = _GSTATS_HEAD.size + count * 8
    if count > MAX_ENTRIES or end > len(buf):
        raise ParseError(f"ETHTOOL_GSTATS: {count} values announced, {len(buf)} bytes received")
    return list(struct.unpack_from(f"={count}Q", buf, _GSTATS_HEAD.size))


def parse_ring(buf: bytes) -> Ring:
    _check_cmd(buf, ETHTOOL_GRINGPARAM, _RING.size, "ETHTOOL_GRINGPARAM")
    return Ring(*_RING.unpack_from(buf)[1:])


def parse_channels(buf: bytes) -> Channels:
    _check_cmd(buf, ETHTOOL_GCHANNELS, _CHANNELS.size, "ETHTOOL_GCHANNELS")
    return Channels(*_CHANNELS.unpack_from(buf)[1:])


def parse_link(buf: bytes) -> bool:
    _check_cmd(buf, ETHTOOL_GLINK, _VALUE.size, "ETHTOOL_GLINK")
    return bool(_VALUE.unpack_from(buf)[1])


def named_stats(names: list[str], values: list[int]) -> dict[str, int]:
    """Zip names and values; a driver naming two statistics alike gets `name#2`, ... ."""
    if len(names) != len(values):
        raise ParseError(f"{len(names)} statistic names but {len(values)} values "
                         "(the driver changed its statistics between two calls)")
    stats: dict[str, int] = {}
    for name, value in zip(names, values):
        if not name:
            continue  # unnamed padding entry: nothing a rule could match
        key, n = name, 1
        while key in stats:
            n += 1
            key = f"{name}#{n}"
        stats[key] = value
    return stats


def _unhex(record: dict[str, Any], key: str) -> bytes | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"ethtool record: {key} is not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ParseError(f"ethtool record: {key} is not valid hex") from None


def parse_record(record: dict[str, Any]) -> Nic:
    """One interface's recorded reply buffers (hex strings, as `read` records them) -> Nic."""
    if not isinstance(record, dict):
        raise ParseError("ethtool record is not an object")
    drvinfo_buf = _unhex(record, "drvinfo")
    if drvinfo_buf is None:
        raise ParseError("ethtool record without ETHTOOL_GDRVINFO reply")
    drvinfo = parse_drvinfo(drvinfo_buf)
    stats: dict[str, int] = {}
    strings_buf, stats_buf = _unhex(record, "strings"), _unhex(record, "stats")
    if (strings_buf is None) != (stats_buf is None):
        raise ParseError("ethtool record has statistic names without values, or values without names")
    if strings_buf is not None and stats_buf is not None:
        stats = named_stats(parse_strings(strings_buf), parse_stats(stats_buf))
    ring_buf, channels_buf, link_buf = _unhex(record, "ring"), _unhex(record, "channels"), _unhex(record, "link")
    return Nic(driver=drvinfo.driver, bus_info=drvinfo.bus_info, stats=stats,
               ring=parse_ring(ring_buf) if ring_buf is not None else None,
               channels=parse_channels(channels_buf) if channels_buf is not None else None,
               link=parse_link(link_buf) if link_buf is not None else None)


def parse(recorded: dict[str, Any]) -> EthtoolData:
    """The recorded answers of one namespace: {"interfaces": {ifname: record}, "skipped": {...}}.

    A record that does not parse skips its interface (named with the reason) rather than
    failing the whole source; a malformed top level raises ParseError."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("interfaces"), dict):
        raise ParseError("ethtool recording has no interfaces object")
    skipped_in = recorded.get("skipped", {})
    if not isinstance(skipped_in, dict):
        raise ParseError("ethtool recording: skipped is not an object")
    data = EthtoolData(skipped={str(k): str(v) for k, v in skipped_in.items()})
    for ifname, record in recorded["interfaces"].items():
        try:
            data.interfaces[str(ifname)] = parse_record(record)
        except ParseError as exc:
            data.skipped[str(ifname)] = f"unreadable reply: {exc}"
    return data


def counter_name(stat: str) -> str:
    return _UNSAFE_IN_NAME.sub("_", stat)


def counters(data: EthtoolData) -> dict[str, int | None]:
    return {f"ethtool.{ifname}.{counter_name(name)}": value
            for ifname, nic in data.interfaces.items()
            for name, value in nic.stats.items() if name not in GAUGES}


# --- the live ioctls -------------------------------------------------------------------------

class _Ioctl:
    """SIOCETHTOOL on one AF_INET datagram socket (it resolves names in its own netns)."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(f"ethtool: no AF_INET socket: {exc.strerror}") from exc

    def close(self) -> None:
        self.sock.close()

    def call(self, ifname: str, request: bytes, capacity: int | None = None) -> bytes:
        """Send one ethtool command; return the buffer as the kernel left it."""
        size = max(capacity or 0, len(request))
        buf = ctypes.create_string_buffer(request, size)
        name = ifname.encode()
        if len(name) >= IFNAMSIZ:
            raise OSError(errno.ENODEV, f"interface name {ifname!r} too long")
        # struct ifreq: ifr_name[16], then a union whose ifr_data is a pointer (40 bytes total)
        ifreq = bytearray(struct.pack("16sP", name, ctypes.addressof(buf)).ljust(40, b"\0"))
        fcntl.ioctl(self.sock.fileno(), SIOCETHTOOL, ifreq)
        return buf.raw


def _errname(exc: OSError) -> str:
    if exc.errno == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"  # Python names 95 ENOTSUP, the kernel and ethtool say EOPNOTSUPP
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _optional(io: _Ioctl, ifname: str, request: bytes, errors: dict[str, str], what: str) -> str | None:
    """A call the driver may lack (or fail): its reply as hex, or None with the errno kept."""
    try:
        return io.call(ifname, request).hex()
    except OSError as exc:
        errors[what] = _errname(exc)
        return None


def _fixed(cmd: int, size: int) -> bytes:
    return struct.pack("=I", cmd).ljust(size, b"\0")


def _stat_buffers(io: _Ioctl, ifname: str, count: int) -> tuple[bytes, bytes]:
    """GSTRINGS and GSTATS replies for `count` statistics, trimmed to what the kernel wrote."""
    # The kernel writes as many entries as the driver has at that moment, whatever we announce
    # (ethtool(8) has the same exposure): room for twice as many keeps a set that grows between
    # two calls (queues added) inside the buffer; the check below only reports it.
    slack = 2 * count + 64
    strings = io.call(ifname, _GSTRINGS_HEAD.pack(ETHTOOL_GSTRINGS, ETH_SS_STATS, count),
                      _GSTRINGS_HEAD.size + slack * ETH_GSTRING_LEN)
    n_names = _GSTRINGS_HEAD.unpack_from(strings)[2]
    stats = io.call(ifname, _GSTATS_HEAD.pack(ETHTOOL_GSTATS, count), _GSTATS_HEAD.size + slack * 8)
    n_values = _GSTATS_HEAD.unpack_from(stats)[1]
    if max(n_names, n_values) > slack:
        raise OSError(errno.EOVERFLOW, f"driver announced {max(n_names, n_values)} statistics, room for {slack}")
    return (strings[:_GSTRINGS_HEAD.size + n_names * ETH_GSTRING_LEN],
            stats[:_GSTATS_HEAD.size + n_values * 8])


def _interface_record(io: _Ioctl, ifname: str) -> dict[str, Any]:
    """Raw (hex) replies of one interface; OSError if it has no ethtool at all (GDRVINFO fails)."""
    drvinfo = io.call(ifname, _fixed(ETHTOOL_GDRVINFO, _DRVINFO.size))
    record: dict[str, Any] = {"drvinfo": drvinfo.hex()}
    errors: dict[str, str] = {}
    sset_request = _SSET_HEAD.pack(ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS).ljust(_SSET_HEAD.size + 4, b"\0")
    record["sset_info"] = sset = _optional(io, ifname, sset_request, errors, "sset_info")
    try:
        count = parse_sset_count(bytes.fromhex(sset)) if sset is not None else parse_drvinfo(drvinfo).n_stats
    except ParseError as exc:
        errors["sset_info"] = str(exc)
        count = None
    if count is not None and count > MAX_ENTRIES:
        errors["stats"] = f"{count} statistics announced: not read"
        count = None
    for _attempt in range(2 if count else 0):
        try:
            strings, stats = _stat_buffers(io, ifname, count)
        except OSError as exc:
            errors["stats"] = _errname(exc)
            record.pop("strings", None)
            record.pop("stats", None)
            break
        record["strings"], record["stats"] = strings.hex(), stats.hex()
        n_names = _GSTRINGS_HEAD.unpack_from(strings)[2]
        n_values = _GSTATS_HEAD.unpack_from(stats)[1]
        if n_names == n_values:
            break
        count = max(n_names, n_values)  # the set changed between the two calls: once more
    record["ring"] = _optional(io, ifname, _fixed(ETHTOOL_GRINGPARAM, _RING.size), errors, "ring")
    record["channels"] = _optional(io, ifname, _fixed(ETHTOOL_GCHANNELS, _CHANNELS.size), errors, "channels")
    record["link"] = _optional(io, ifname, _fixed(ETHTOOL_GLINK, _VALUE.size), errors, "link")
    if errors:
        record["errors"] = errors
    return record


def collect() -> dict[str, Any]:
    """Ask every interface of the calling thread's network namespace (live system only)."""
    io = _Ioctl()
    recorded: dict[str, Any] = {"interfaces": {}, "skipped": {}}
    refused = 0
    try:
        try:
            names = [name for _index, name in socket.if_nameindex()]
        except OSError as exc:
            raise SourceUnavailable(f"ethtool: cannot list interfaces: {exc.strerror or exc}") from exc
        for ifname in names:
            try:
                recorded["interfaces"][ifname] = _interface_record(io, ifname)
            except OSError as exc:
                code = _errname(exc)
                if exc.errno in _NOT_SUPPORTED:
                    reason = "gone" if exc.errno in (errno.ENODEV, errno.ENXIO) else "no ethtool support"
                    recorded["skipped"][ifname] = f"{reason} ({code})"
                else:
                    refused += exc.errno in (errno.EPERM, errno.EACCES)
                    recorded["skipped"][ifname] = f"{os.strerror(exc.errno or 0)} ({code})"
    finally:
        io.close()
    if refused and not recorded["interfaces"]:
        raise NeedsPrivilege("ethtool: the kernel refused SIOCETHTOOL (run as root)")
    return recorded


def read(ctx: ReadContext) -> EthtoolData:
    if not ctx.live and ctx.replay is None:
        raise SourceUnavailable("ethtool: driver statistics need the live system (not in a copied tree)")
    return parse(ctx.record_json("ethtool", collect))


SOURCE = register(Source("ethtool", read, counters,
                         description="NIC driver statistics, ring sizes, queues (SIOCETHTOOL ioctl)"))
