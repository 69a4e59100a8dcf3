"""A tiny BPF loader: the bpf(2) syscall through ctypes, nothing else.

Only what the drop tracer needs: create (per-CPU) maps, load a raw-tracepoint program
(with the verifier log kept when loading fails), attach it to a raw tracepoint, walk and
read maps, and ask the kernel about objects by id (to prove in tests that nothing of
ours survives). Every object is a file descriptor: closing it (or the process ending,
however it ends) releases the program, the attachment and the maps.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

from ..errors import ParseError
from .insn import Insn, encode_program

SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 2, 3, 4, 5
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 14, 15
RAW_TRACEPOINT_OPEN = 17
# enum bpf_map_type / bpf_prog_type
MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY = 1, 2, 5, 6
PROG_TYPE_RAW_TRACEPOINT = 17

ATTR_SIZE = 128  # we zero-fill a fixed-size bpf_attr; the kernel ignores zero tails
LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed; errno as usual, plus the verifier log for PROG_LOAD."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        # strerror stays the bare OS message, as on any OSError: callers that write
        # f"{exc.what}: {exc.strerror}" would otherwise name the command twice.
        super().__init__(err, os.strerror(err))
        self.what = what
        self.log = log

    def __str__(self) -> str:
        return f"{self.what}: {self.strerror}"

    def log_line(self) -> str:
        """The verifier's complaint in one line: the last line that is not statistics."""
        stats = ("processed ", "verification time", "stack depth", "max_states_per_insn")
        lines = [line.strip() for line in self.log.splitlines()
                 if line.strip() and not line.strip().startswith(stats)]
        return lines[-1] if lines else ""


def syscall_number(machine: str | None = None) -> int:
    machine = machine or platform.machine()
    try:
        return SYSCALL_BPF[machine]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown for {machine}") from None


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    ret = _libc.syscall(syscall_number(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(ctypes.get_errno(), what)
    return ret


def _attr(*fields: tuple[int, str, int]) -> ctypes.Array:
    """A zeroed bpf_attr with (offset, struct format, value) fields written in."""
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return buf


def _addr(buf) -> int:
    return ctypes.addressof(buf)


# --- objects -------------------------------------------------------------------------------

def parse_cpu_list(text: str) -> list[int]:
    """`0-3,5,7-8` (as in /sys/devices/system/cpu/possible) -> [0,1,2,3,5,7,8]."""
    cpus: list[int] = []
    body = text.strip()
    if not body:
        raise ParseError("empty cpu list")
    for part in body.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ParseError(f"bad cpu list entry {part!r}") from None
        if lo < 0 or hi < lo or hi > 1 << 16:
            raise ParseError(f"bad cpu range {part!r}")
        cpus.extend(range(lo, hi + 1))
    return cpus


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Per-CPU map values have one slot per *possible* CPU, not per online CPU."""
    with open(path, encoding="ascii", errors="replace") as handle:
        return max(parse_cpu_list(handle.read())) + 1


@dataclass
class Map:
    fd: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    ncpus: int = 1

    @property
    def percpu(self) -> bool:
        return self.map_type in (MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY)

    @property
    def slot_size(self) -> int:
        return (self.value_size + 7) // 8 * 8

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def keys(self) -> list[bytes]:
        """All keys now in the map (BPF_MAP_GET_NEXT_KEY from no key)."""
        out: list[bytes] = []
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        attr = _attr((0, "<I", self.fd), (8, "<Q", 0), (16, "<Q", _addr(nxt)))
        for _ in range(self.max_entries * 2 + 1):
            try:
                _bpf(MAP_GET_NEXT_KEY, attr, "BPF_MAP_GET_NEXT_KEY")
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    break
                raise
            out.append(nxt.raw)
            ctypes.memmove(key, nxt, self.key_size)
            struct.pack_into("<Q", attr, 8, _addr(key))
        return out

    def lookup(self, key: bytes) -> list[bytes] | None:
        """The value (per-CPU maps: one value per possible CPU); None if the key is gone."""
        slots = self.ncpus if self.percpu else 1
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        vbuf = ctypes.create_string_buffer(self.slot_size * slots)
        attr = _attr((0, "<I", self.fd), (8, "<Q", _addr(kbuf)), (16, "<Q", _addr(vbuf)))
        try:
            _bpf(MAP_LOOKUP_ELEM, attr, "BPF_MAP_LOOKUP_ELEM")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        raw = vbuf.raw
        return [raw[i * self.slot_size:i * self.slot_size + self.value_size] for i in range(slots)]

    def update(self, key: bytes, values: list[bytes], flags: int = 0) -> None:
        slots = self.ncpus if self.percpu else 1
        if len(values) != slots:
            raise ValueError(f"need {slots} values, got {len(values)}")
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        vbuf = ctypes.create_string_buffer(b"".join(v.ljust(self.slot_size, b"\0") for v in values))
        attr = _attr((0, "<I", self.fd), (8, "<Q", _addr(kbuf)), (16, "<Q", _addr(vbuf)),
                     (24, "<Q", flags))
        _bpf(MAP_UPDATE_ELEM, attr, "BPF_MAP_UPDATE_ELEM")

    def sum_u64(self, key: bytes) -> int | None:
        """Sum of a u64 counter over all CPUs."""
        values = self.lookup(key)
        if values is None:
            return None
        return sum(struct.unpack_from("<Q", v)[0] for v in values)


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> Map:
    ncpus = possible_cpus() if map_type in (MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY) else 1
    attr = _attr((0, "<I", map_type), (4, "<I", key_size), (8, "<I", value_size),
                 (12, "<I", max_entries))
    struct.pack_into("16s", attr, 28, name.encode()[:15])
    fd = _bpf(MAP_CREATE, attr, f"BPF_MAP_CREATE {name}")
    return Map(fd, map_type, key_size, value_size, max_entries, ncpus)


def load_program(insns: list[Insn], name: str, prog_type: int = PROG_TYPE_RAW_TRACEPOINT,
                 license: str = "GPL") -> int:
    """BPF_PROG_LOAD; on failure retry with the verifier log on and raise BpfError(log)."""
    code = encode_program(insns)
    code_buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log_level: int, log_buf) -> int:
        attr = _attr((0, "<I", prog_type), (4, "<I", len(insns)), (8, "<Q", _addr(code_buf)),
                     (16, "<Q", _addr(lic)), (24, "<I", log_level),
                     (28, "<I", LOG_SIZE if log_buf is not None else 0),
                     (32, "<Q", _addr(log_buf) if log_buf is not None else 0))
        struct.pack_into("16s", attr, 48, name.encode()[:15])
        return _bpf(PROG_LOAD, attr, f"BPF_PROG_LOAD {name}")

    try:
        return attempt(0, None)
    except BpfError as first:
        if first.errno in (errno.EPERM, errno.ENOSYS):
            raise
        log = ctypes.create_string_buffer(LOG_SIZE)
        try:
            return attempt(1, log)  # a retry that succeeds with logging on is fine too
        except BpfError as exc:
            text = log.value.decode("utf-8", errors="replace")
            raise BpfError(exc.errno or first.errno, f"BPF_PROG_LOAD {name}", text) from None


def raw_tracepoint_open(name: str, prog_fd: int) -> int:
    tp = ctypes.create_string_buffer(name.encode())
    attr = _attr((0, "<Q", _addr(tp)), (8, "<I", prog_fd))
    return _bpf(RAW_TRACEPOINT_OPEN, attr, f"BPF_RAW_TRACEPOINT_OPEN {name}")


def object_id(fd: int) -> int:
    """The kernel-wide id of a program or map fd (bpf_prog_info.id / bpf_map_info.id)."""
    info = ctypes.create_string_buffer(256)
    attr = _attr((0, "<I", fd), (4, "<I", len(info)), (8, "<Q", _addr(info)))
    _bpf(OBJ_GET_INFO_BY_FD, attr, "BPF_OBJ_GET_INFO_BY_FD")
    # bpf_prog_info: __u32 type, id; bpf_map_info: __u32 type, id
    return struct.unpack_from("<I", info, 4)[0]


def object_exists(kind: str, object_id_: int) -> bool:
    """Does a program ('prog') or map ('map') with this id still exist in the kernel?"""
    cmd = PROG_GET_FD_BY_ID if kind == "prog" else MAP_GET_FD_BY_ID
    attr = _attr((0, "<I", object_id_))
    try:
        fd = _bpf(cmd, attr, f"BPF_{kind.upper()}_GET_FD_BY_ID")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    os.close(fd)
    return True
